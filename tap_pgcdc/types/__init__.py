"""Support modules for `tap_pgcdc.typemap`: the built-in type table and the literal parsers."""
