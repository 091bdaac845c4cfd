"""The metadata fields change capture adds to every table's records, and their schema."""

from __future__ import annotations

import typing as t

SDC_LSN = "_sdc_lsn"
"""The LSN (integer) of the commit of the change's transaction; a snapshot's consistent point."""

SDC_DELETED_AT = "_sdc_deleted_at"
"""The commit time of a delete (ISO 8601), null otherwise."""

SDC_COLUMNS_SCHEMA: dict[str, dict[str, t.Any]] = {
    SDC_LSN: {"type": ["integer", "null"]},
    SDC_DELETED_AT: {"type": ["string", "null"], "format": "date-time"},
}
