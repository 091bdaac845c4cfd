"""`python -m tap_pgcdc` runs the tap's command line."""

from tap_pgcdc.tap import TapPgCdc

TapPgCdc.cli()
