"""The stream class: snapshot reads, and the record and state shape shared with the log reader.

A table stream is snapshotted first (read in primary-key order, in bounded chunks, resumable), then
follows the replication slot; the log reader (replication/reader.py) hands it decoded changes.
Views and materialized views can only be re-read in full (FULL_TABLE).

State of one stream, under `bookmarks[<stream>]`:
    lsn       "X/Y": every change of this stream whose transaction committed before this WAL
              position is already in the output (from the snapshot or the log).
    snapshot  present while a snapshot is unfinished: {"lsn": consistent point it started at,
              "after": primary key (text values) of the last row emitted, or null}.
    version   table version for ACTIVATE_VERSION (bumped by TRUNCATE).
"""

from __future__ import annotations

import typing as t
from functools import cached_property

import psycopg2.extensions
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.sql import SQLStream

from tap_pgcdc import emit, sdk, typemap
from tap_pgcdc.connector import (
    SDC_DELETED_AT,
    SDC_LSN,
    ColumnInfo,
    PgCdcConnector,
    TableInfo,
    table_schema,
)
from tap_pgcdc.errors import ConfigError
from tap_pgcdc.pg.casters import raw_text_casters
from tap_pgcdc.pg.lsn import format_lsn, parse_lsn
from tap_pgcdc.pg.quoting import quote_ident
from tap_pgcdc.snapshot_json import JsonSnapshot

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from singer_sdk.helpers.types import Context, Record

LOG_BASED = "LOG_BASED"
FULL_TABLE = "FULL_TABLE"

DEFAULT_CHUNK_SIZE = 10_000


class PgCdcStream(SQLStream):
    """One table, partitioned parent, view or materialized view."""

    connector_class = PgCdcConnector
    # typemap.py already produces JSON-ready values; the SDK's conformance pass would only cost
    # time and turn NaN and Infinity into null.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    # Set by the tap before sync: the live table description and the snapshot context.
    table: TableInfo
    snapshot_conn: psycopg2.extensions.connection | None = None
    snapshot_lsn: int | None = None

    @property
    def connector(self) -> PgCdcConnector:
        return t.cast("PgCdcConnector", self._connector)

    # --- catalog and method -------------------------------------------------------------

    @cached_property
    def _root_metadata(self) -> dict[str, t.Any]:
        for item in self.catalog_entry.get("metadata", []):
            if not item.get("breadcrumb"):
                return t.cast("dict[str, t.Any]", item.get("metadata", {}))
        return {}

    @property
    def is_view(self) -> bool:
        return bool(self.catalog_entry.get("is_view") or self._root_metadata.get("is-view"))

    @property
    def replication_method(self) -> str:
        """LOG_BASED for tables unless the catalog asks for FULL_TABLE; views are FULL_TABLE."""
        if self.is_view:
            return FULL_TABLE
        chosen = (
            self._root_metadata.get("replication-method")
            or self._root_metadata.get("forced-replication-method")
            or self.catalog_entry.get("replication_method")
            or LOG_BASED
        )
        chosen = str(chosen).upper()
        if chosen not in (LOG_BASED, FULL_TABLE):
            msg = (
                f"Stream {self.name}: replication method {chosen!r} is not supported. "
                "Fix: use LOG_BASED (tables) or FULL_TABLE in the catalog metadata."
            )
            raise ConfigError(msg)
        return chosen

    @property
    def is_log_based(self) -> bool:
        return self.replication_method == LOG_BASED

    @property
    def schema_name(self) -> str:
        return str(self._root_metadata.get("schema-name") or self.name.split("-", 1)[0])

    @property
    def table_name(self) -> str:
        return str(self.catalog_entry.get("table_name") or self.name.split("-", 1)[1])

    def bind_table(self, table: TableInfo) -> None:
        """Attach the live table description (types for conversion, key, columns).

        A catalog can predate ALTER TABLE (Meltano caches catalogs of installed plugins). The
        log carries the table's current columns, so a table stream whose columns changed since
        discovery adopts the live column set now, keeping the catalog's schema for columns it
        knows (a user may have edited them). Its SCHEMA then matches every record it sends.
        """
        self._bind_converters(table)
        if table.is_view:
            return
        known = self.schema.get("properties", {})
        live = table_schema(table, use_singer_decimal=self.connector.use_singer_decimal)
        if set(live["properties"]) != set(known):
            merged = {name: known.get(name, prop) for name, prop in live["properties"].items()}
            self._adopt_schema({**self.schema, "properties": merged})

    def _bind_converters(self, table: TableInfo) -> None:
        self.table = table
        self._converters = {
            col.name: typemap.converter(
                col.type, use_singer_decimal=self.connector.use_singer_decimal
            )
            for col in table.columns
        }

    def _adopt_schema(self, schema: dict[str, t.Any]) -> None:
        """Make `schema` the stream's schema for records, maps and SCHEMA messages."""
        # New columns inherit the stream's selection (see sdk.replace_schema).
        sdk.replace_schema(self, schema)

    def converter_for(self, column: str) -> typemap.Converter:
        return self._converters[column]

    def replace_schema(self, table: TableInfo) -> None:
        """Adopt a changed table shape (ADD/DROP/ALTER COLUMN seen in the log).

        The new schema goes through the SDK's mapper so stream maps and selection apply to it,
        and a SCHEMA message is written before the next record.
        """
        self._bind_converters(table)
        self._adopt_schema(
            table_schema(table, use_singer_decimal=self.connector.use_singer_decimal)
        )
        self.write_schema()

    # --- messages written outside the SDK's sync loop (see sdk.py) ---------------------------

    def write_schema(self) -> None:
        """Write this stream's SCHEMA message now."""
        sdk.write_schema(self)

    def write_record(self, record: dict[str, t.Any]) -> None:
        """Write one record through the SDK's full record path (maps, selection)."""
        sdk.write_record(self, record)

    def write_state(self) -> None:
        """Write the tap's STATE now."""
        sdk.write_state(self)

    @property
    def table_version(self) -> int | None:
        """The version records carry: the last TRUNCATE's or re-snapshot's LSN, or None."""
        return sdk.table_version(self)

    @table_version.setter
    def table_version(self, version: int | None) -> None:
        sdk.set_table_version(self, version)

    # --- state ----------------------------------------------------------------------------

    @property
    def bookmark(self) -> dict[str, t.Any]:
        """This stream's writable state dict."""
        return self.stream_state

    @property
    def log_position(self) -> int | None:
        """The stream's log bookmark as an int, or None before its first snapshot starts."""
        text = self.bookmark.get("lsn")
        return None if text is None else parse_lsn(text)

    def set_log_position(self, lsn: int) -> None:
        self.bookmark["lsn"] = format_lsn(lsn)

    @property
    def needs_snapshot(self) -> bool:
        return self.bookmark.get("lsn") is None or "snapshot" in self.bookmark

    def begin_snapshot(self, consistent_point: int) -> None:
        """Record where this stream's log replay starts, before its first row is read.

        Kept across interrupted runs: a resumed snapshot reads later data, and replaying the log
        from the first consistent point covers every change since then (targets upsert by key).
        """
        if "snapshot" not in self.bookmark:
            self.bookmark["snapshot"] = {"lsn": format_lsn(consistent_point), "after": None}
            self.set_log_position(consistent_point)
        self.snapshot_lsn = parse_lsn(self.bookmark["snapshot"]["lsn"])

    # --- snapshot -------------------------------------------------------------------------

    @property
    def chunk_size(self) -> int:
        return int(self.config.get("snapshot_chunk_size") or DEFAULT_CHUNK_SIZE)

    def _select_list(self, columns: Sequence[ColumnInfo]) -> str:
        return ", ".join(quote_ident(col.name) for col in columns)

    def _snapshot_columns(self) -> list[ColumnInfo]:
        selected = set(self.get_selected_schema().get("properties", {}))
        # Key columns are always read: chunking and resume depend on them.
        return [
            col for col in self.table.columns if col.name in selected or col.name in self.table.key
        ]

    def get_records(self, context: Context | None) -> Iterable[Record]:
        """Read the table in primary-key order, in chunks; resume after the last chunk emitted."""
        if context:  # pragma: no cover - the tap has no partitions
            msg = f"Stream '{self.name}' does not support partitioning."
            raise NotImplementedError(msg)
        conn = self.snapshot_conn
        if conn is None:  # pragma: no cover - the tap always provides one
            msg = "snapshot connection not set"
            raise RuntimeError(msg)
        columns = self._snapshot_columns()
        raw_text_casters(conn, (col.type.oid for col in columns))
        progress = self.bookmark.setdefault("snapshot", {"after": None})
        lines = emit.snapshot_lines(self)
        if lines is not None:
            # Nothing the SDK does per record applies: the server renders the records' JSON
            # and they are written here, so nothing is yielded to the SDK's loop.
            snapshot = JsonSnapshot(self, columns, lines)
            with self.get_record_counter() as counter:
                if self.table.key:
                    snapshot.read_by_key(conn, progress, self.chunk_size, counter)
                else:
                    snapshot.read_all(conn, self.chunk_size, counter)
        elif self.table.key:
            yield from self._read_by_key(conn, columns, progress)
        else:
            yield from self._read_all(conn, columns)
        # The snapshot is complete: from now on the log alone feeds this stream.
        self.bookmark.pop("snapshot", None)

    def _make_record(self, columns: Sequence[ColumnInfo], row: Sequence[str | None]) -> dict:
        convert = self._converters
        record = {
            col.name: None if value is None else convert[col.name](value)
            for col, value in zip(columns, row, strict=True)
        }
        if not self.table.is_view:
            record[SDC_LSN] = self.snapshot_lsn
            record[SDC_DELETED_AT] = None
        return record

    def _read_by_key(
        self,
        conn: psycopg2.extensions.connection,
        columns: Sequence[ColumnInfo],
        progress: dict[str, t.Any],
    ) -> Iterator[dict]:
        key_cols = [self.table.column(name) for name in self.table.key]
        # Identifiers may hold '%', which the driver would take for a placeholder.
        key_list = ", ".join(quote_ident(col.name) for col in key_cols).replace("%", "%%")
        key_pos = [columns.index(col) for col in key_cols]
        base = f"SELECT {self._select_list(columns)} FROM {self.table.quoted_name}".replace(
            "%", "%%"
        )
        after_clause = (
            f" WHERE ({key_list}) > (" + ", ".join(f"%s::{col.sql_type}" for col in key_cols) + ")"
        )
        tail = f" ORDER BY {key_list} LIMIT {self.chunk_size}"
        while True:
            after = progress.get("after")
            with conn.cursor() as cur:
                if after is None:
                    cur.execute(base + tail, [])
                else:
                    cur.execute(base + after_clause + tail, after)
                rows = cur.fetchall()
            for row in rows:
                yield self._make_record(columns, row)
            if rows:
                last = rows[-1]
                # Every row of this chunk has been written: resume after its last key.
                progress["after"] = [last[pos] for pos in key_pos]
                self.write_state()
            if len(rows) < self.chunk_size:
                return

    def _read_all(
        self, conn: psycopg2.extensions.connection, columns: Sequence[ColumnInfo]
    ) -> Iterator[dict]:
        # Without a key there is no order to resume from: a server-side cursor streams the whole
        # table in one pass, a chunk at a time; an interrupted run starts this table over.
        with conn.cursor(name=f"tap_pgcdc_{self.table.oid}") as cur:
            cur.itersize = self.chunk_size
            cur.execute(f"SELECT {self._select_list(columns)} FROM {self.table.quoted_name}")
            while True:
                rows = cur.fetchmany(self.chunk_size)
                for row in rows:
                    yield self._make_record(columns, row)
                if len(rows) < self.chunk_size:
                    return

    # --- log-side events --------------------------------------------------------------------

    def truncate(self, lsn: int) -> None:
        """TRUNCATE seen in the log: tell the target to drop every row it holds for this table.

        Singer has one message for "the table now holds only what follows": ACTIVATE_VERSION.
        The new version is the truncating transaction's commit LSN, so a replay from an older
        bookmark produces the same versions and converges.
        """
        self.table_version = lsn
        self.bookmark["version"] = lsn
        sdk.write_activate_version(self, lsn)
