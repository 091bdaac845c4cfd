"""Moved to `tap_pgcdc.output.records`."""

# --- transitional (wave 1): remove after the integrator switches callers ---
from tap_pgcdc.output.records import (
    FAST_OUTPUT_ENV,
    TIME_REFRESH_RECORDS,
    RecordLines,
    record_lines,
    snapshot_lines,
)

__all__ = [
    "FAST_OUTPUT_ENV",
    "TIME_REFRESH_RECORDS",
    "RecordLines",
    "record_lines",
    "snapshot_lines",
]
