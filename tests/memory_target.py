"""A minimal Singer target in memory: what a well-behaved upserting target would hold.

It applies messages the way the Singer targets we document do (upsert by key_properties, hard
delete when `_sdc_deleted_at` is set, ACTIVATE_VERSION drops rows of older versions), so tests can
compare the resulting table with Postgres instead of eyeballing messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

META = ("_sdc_lsn", "_sdc_deleted_at")


@dataclass
class StreamTable:
    key: list[str]
    schema: dict[str, Any]
    rows: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    appended: list[dict[str, Any]] = field(default_factory=list)  # keyless streams
    versions: dict[tuple, int | None] = field(default_factory=dict)


@dataclass
class MemoryTarget:
    tables: dict[str, StreamTable] = field(default_factory=dict)
    state: dict[str, Any] | None = None
    schema_messages: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, messages: list[dict[str, Any]]) -> MemoryTarget:
        for message in messages:
            kind = message.get("type")
            if kind == "SCHEMA":
                self.schema_messages.append(message)
                stream = message["stream"]
                table = self.tables.get(stream)
                if table is None:
                    self.tables[stream] = StreamTable(message["key_properties"], message["schema"])
                else:
                    table.schema = message["schema"]
                    table.key = message["key_properties"]
            elif kind == "RECORD":
                self._record(message)
            elif kind == "ACTIVATE_VERSION":
                table = self.tables[message["stream"]]
                version = message["version"]
                table.rows = {
                    k: r for k, r in table.rows.items() if (table.versions.get(k) or 0) >= version
                }
                table.versions = {k: v for k, v in table.versions.items() if k in table.rows}
                table.appended = [r for r in table.appended if (r.get("_version") or 0) >= version]
            elif kind == "STATE":
                self.state = message["value"]
        return self

    def _record(self, message: dict[str, Any]) -> None:
        table = self.tables[message["stream"]]
        record = message["record"]
        if not table.key:
            if record.get("_sdc_deleted_at"):
                # A keyless stream's deletion names the row by all its values: drop one such row.
                values = _values(record)
                for i, row in enumerate(table.appended):
                    if _values(row) == values:
                        del table.appended[i]
                        break
                return
            table.appended.append({**record, "_version": message.get("version")})
            return
        key = tuple(record[k] for k in table.key)
        if record.get("_sdc_deleted_at"):
            table.rows.pop(key, None)
            table.versions.pop(key, None)
            return
        # Replace, never merge: a column missing from a record must show up as missing, the way
        # a real target turns it into NULL.
        table.rows[key] = dict(record)
        table.versions[key] = message.get("version")

    def rows(self, stream: str) -> list[dict[str, Any]]:
        """Rows sorted by key (a keyless stream's: by value), without the _sdc metadata columns."""
        table = self.tables[stream]
        if not table.key:
            return sorted((_values(row) for row in table.appended), key=repr)
        out = [
            {k: v for k, v in row.items() if k not in META} for _, row in sorted(table.rows.items())
        ]
        return out


def _values(record: dict[str, Any]) -> dict[str, Any]:
    """A record's column values, without the _sdc metadata and the version."""
    return {k: v for k, v in record.items() if k not in META and k != "_version"}
