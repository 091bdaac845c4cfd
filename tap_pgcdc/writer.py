"""Moved to `tap_pgcdc.output.writer`."""

# --- transitional (wave 1): remove after the integrator switches callers ---
from tap_pgcdc.output.writer import PgCdcWriter, buffer_stdout, serialize

__all__ = ["PgCdcWriter", "buffer_stdout", "serialize"]
