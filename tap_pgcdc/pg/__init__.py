"""Plain PostgreSQL plumbing shared by every layer: quoting, connecting, catalog queries, LSNs.

Nothing in this package imports singer_sdk or the Singer-side modules of the tap.
"""
