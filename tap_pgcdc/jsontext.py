"""Moved to `tap_pgcdc.output.jsontext`."""

# --- transitional (wave 1): remove after the integrator switches callers ---
from tap_pgcdc.output.jsontext import Fragment, ascii_json, fragment, json_string, serialize

__all__ = ["Fragment", "ascii_json", "fragment", "json_string", "serialize"]
