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

A FULL_TABLE stream reads its table (or view) in full every run, as a new table version:
    snapshot  present while a sync is unfinished: {"version": the version its records carry,
              "after": key of the last row emitted (keyed tables), or null}.
    full_table_version  the version of the last sync that started (a WAL position); its absence
              marks a first sync. A stream switched to LOG_BASED drops it and is snapshotted as
              a new version (ACTIVATE_VERSION first), which replaces the rows read in full.
"""

from __future__ import annotations

import contextlib
import typing as t
from functools import cached_property

import psycopg2.extensions
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.sql import SQLStream

from tap_pgcdc import sdk, typemap
from tap_pgcdc.catalog_fit import CatalogFit, catalog_sql_types, fit_catalog, followed_key
from tap_pgcdc.connector import PgCdcConnector, table_schema
from tap_pgcdc.errors import ConfigError
from tap_pgcdc.output import records
from tap_pgcdc.output.batch_files import batch_files, stream_batch_config
from tap_pgcdc.output.fields import SDC_DELETED_AT, SDC_LSN
from tap_pgcdc.pg.casters import raw_text_casters
from tap_pgcdc.pg.catalog import ColumnInfo, TableInfo, split_stream_id
from tap_pgcdc.pg.lsn import format_lsn, parse_lsn
from tap_pgcdc.pg.quoting import quote_ident
from tap_pgcdc.snapshot.chunks import JsonSnapshot
from tap_pgcdc.snapshot.query import ChunkQuery, all_chunks, key_chunks

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from singer_sdk.helpers._batch import BatchConfig
    from singer_sdk.helpers.types import Context, Record

    from tap_pgcdc.snapshot.query import Row

LOG_BASED = "LOG_BASED"
FULL_TABLE = "FULL_TABLE"

DEFAULT_CHUNK_SIZE = 10_000

# The bookmark of the version of a FULL_TABLE stream's last sync (see the module docstring).
FULL_TABLE_VERSION = "full_table_version"


class PgCdcStream(SQLStream):
    """One table, partitioned parent, view or materialized view."""

    connector_class = PgCdcConnector
    # typemap.py already produces JSON-ready values; the SDK's conformance pass would only cost
    # time and turn NaN and Infinity into null.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    # Set by the tap before sync: the live table description and the snapshot context.
    table: TableInfo
    snapshot_conn: psycopg2.extensions.connection | None = None
    # More connections in the same exported snapshot (snapshot_workers - 1): parallel readers.
    snapshot_readers: Sequence[psycopg2.extensions.connection] = ()
    snapshot_lsn: int | None = None
    # Records of snapshots and reads in full written in this process (the run report's count).
    snapshot_rows: int = 0
    # The last record of this stream's latest snapshot (a line, or a record on the SDK's path),
    # which `repeat_last_snapshot_record` writes again.
    _last_snapshot_line: str = ""
    _last_snapshot_record: dict[str, t.Any] | None = None
    # The row filter its snapshots apply (the publication's, see `filters`); None: every row.
    row_filter: str | None = None

    # Set by bind_table: the converter of each column, by name; how the catalog fits the table.
    _converters: dict[str, typemap.Converter]
    catalog_fit: CatalogFit | None = None

    # The key_properties that binding or the log set in place of the catalog's (see
    # `primary_keys`); None: the catalog's.
    _bound_key: list[str] | None = None

    @property
    def primary_keys(self) -> t.Sequence[str]:
        """The stream's key_properties: the catalog's, unless they name a column that is gone.

        The SDK's setter writes to a catalog entry it parses anew at each read (a no-op), so
        the replacement is kept here.
        """
        if self._bound_key is not None:
            return self._bound_key
        return super().primary_keys

    @primary_keys.setter
    def primary_keys(self, new_value: t.Sequence[str]) -> None:
        self._bound_key = list(new_value)

    @property
    def catalog_key(self) -> tuple[str, ...]:
        """The key_properties the input catalog gives (or discovery, without one)."""
        return tuple(super().primary_keys)

    @property
    def connector(self) -> PgCdcConnector:
        """The stream's connector (the SDK's, typed as this tap's)."""
        return t.cast("PgCdcConnector", super().connector)

    # --- catalog and method -------------------------------------------------------------

    @cached_property
    def _root_metadata(self) -> dict[str, t.Any]:
        for item in self.catalog_entry.get("metadata", []):
            if not item.get("breadcrumb"):
                return t.cast("dict[str, t.Any]", item.get("metadata", {}))
        return {}

    @property
    def is_view(self) -> bool:
        """Whether the catalog entry is a view or materialized view (read in full each run)."""
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
    def emit_activate_version_messages(self) -> bool:
        """Never the SDK's: `begin_full_table` and `end_full_table` write ACTIVATE_VERSION."""
        return False

    @property
    def is_log_based(self) -> bool:
        """Whether the stream follows the replication slot after its snapshot."""
        return self.replication_method == LOG_BASED

    @property
    def schema_name(self) -> str:
        """The table's schema, as the catalog names it."""
        return str(self._root_metadata.get("schema-name") or split_stream_id(self.name)[0])

    @property
    def table_name(self) -> str:
        """The table's name, as the catalog names it."""
        return str(self.catalog_entry.get("table_name") or split_stream_id(self.name)[1])

    def bind_table(self, table: TableInfo) -> None:
        """Attach the live table description (types for conversion, key, columns).

        A catalog can predate ALTER TABLE (Meltano caches catalogs of installed plugins). The
        records carry the table's current columns and types, so a stream adopts the live columns
        now (a view's too): a column keeps the catalog's property (a user may have edited it) only
        while the catalog's type for it is the live type, and a key naming a column the table
        no longer has gives way to the live key (`catalog_fit.fit_catalog`; `catalog_fit`
        keeps the verdict for the warnings). Its SCHEMA then matches every record it sends.
        """
        self._bind_converters(table)
        fit = fit_catalog(
            self.name,
            self.schema.get("properties", {}),
            catalog_sql_types(self.catalog_entry),
            self.catalog_key,
            table,
            use_singer_decimal=self.connector.use_singer_decimal,
        )
        self.catalog_fit = fit
        new_key = list(fit.key) != list(self.primary_keys or ())
        if new_key:
            self.primary_keys = list(fit.key)
        if new_key or fit.properties != self.schema.get("properties"):
            # New columns inherit the stream's selection (see sdk.replace_schema).
            sdk.replace_schema(self, {**self.schema, "properties": fit.properties})

    def _bind_converters(self, table: TableInfo) -> None:
        self.table = table
        self._converters = {
            col.name: typemap.converter(
                col.type, use_singer_decimal=self.connector.use_singer_decimal
            )
            for col in table.columns
        }

    def converter_for(self, column: str) -> typemap.Converter:
        """The converter of a column's text value (from the table bound last)."""
        return self._converters[column]

    def replace_schema(self, table: TableInfo) -> None:
        """Adopt a changed table shape (ADD/DROP/ALTER COLUMN seen in the log).

        The new schema goes through the SDK's mapper so stream maps and selection apply to it,
        and a SCHEMA message is written before the next record.
        """
        key = followed_key(self.primary_keys or (), self.table, table)
        if list(key) != list(self.primary_keys or ()):
            # A renamed key column: the SCHEMA's key_properties name the server's key now.
            self.primary_keys = list(key)
        self._bind_converters(table)
        schema = table_schema(table, use_singer_decimal=self.connector.use_singer_decimal)
        sdk.replace_schema(self, schema)
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
        """Move the stream's log bookmark to `lsn` (stored as "X/Y")."""
        self.bookmark["lsn"] = format_lsn(lsn)

    @property
    def needs_snapshot(self) -> bool:
        """Whether the stream has no log bookmark yet, or an unfinished snapshot."""
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

    # --- FULL_TABLE versions -------------------------------------------------------------------

    def begin_full_table(self, wal_position: int) -> None:
        """Choose the version of this FULL_TABLE sync, before its first record (Singer's convention).

        The version is the server's WAL position as the sync starts (above the last one's), so
        that a stream's versions, FULL_TABLE or TRUNCATE's commit LSNs, compare across a change
        of replication method. An interrupted sync of a keyed table resumes after its last key
        with the same version, so the rows it already sent stay. Any other sync is a new version:
        a keyless table or a view, read from the start again, must not keep the rows of the
        interrupted attempt. The stream's first sync activates its version before the first
        record, so the target shows the rows as they load; every completed sync activates it
        after the last record (`end_full_table`), which drops the rows of older versions.
        """
        progress = self.bookmark.get("snapshot")
        if (
            isinstance(progress, dict)
            and progress.get("version") is not None
            and progress.get("after") is not None
            and self.table.key
        ):
            self.table_version = int(progress["version"])
            return
        previous = self.bookmark.get(FULL_TABLE_VERSION)
        version = max(wal_position, int(previous or 0) + 1)
        self.bookmark["snapshot"] = {"version": version, "after": None}
        self.bookmark[FULL_TABLE_VERSION] = version
        self.table_version = version
        if previous is None:
            self.write_schema()
            sdk.write_activate_version(self, version)

    def end_full_table(self) -> None:
        """The sync is complete: the target keeps only the rows of this version."""
        version = self.table_version
        if version is not None:
            sdk.write_activate_version(self, version)

    # --- snapshot -------------------------------------------------------------------------

    def deselected_columns(self) -> frozenset[str]:
        """The table's columns outside the stream's selection (its key is always kept)."""
        kept = set(self.get_selected_schema().get("properties", {})) | set(self.table.key)
        return frozenset(col.name for col in self.table.columns if col.name not in kept)

    def get_batch_config(self, config: t.Mapping[str, t.Any]) -> BatchConfig | None:
        """`batch_config` where the tap writes BATCH files itself; otherwise RECORD messages."""
        try:
            found = super().get_batch_config(config)
        except (TypeError, ValueError) as exc:  # a part missing: the SDK's dataclass says which
            msg = (
                f"batch_config is incomplete ({exc}). Fix: give both "
                '"encoding": {"format": "jsonl", "compression": "gzip" or "none"} and '
                '"storage": {"root": "file:///path"}, or unset batch_config.'
            )
            raise ConfigError(msg) from None
        return stream_batch_config(self, found)

    @property
    def chunk_size(self) -> int:
        """Rows per snapshot chunk (`snapshot_chunk_size`): a STATE follows each chunk."""
        return int(self.config.get("snapshot_chunk_size") or DEFAULT_CHUNK_SIZE)

    def _snapshot_columns(self) -> list[ColumnInfo]:
        selected = set(self.get_selected_schema().get("properties", {}))
        # Key columns are always read: chunking and resume depend on them.
        return [
            col for col in self.table.columns if col.name in selected or col.name in self.table.key
        ]

    def get_records(self, context: Context | None) -> Iterable[Record]:
        """Read the table in primary-key order, in chunks; resume after the last chunk emitted.

        Where the fast path applies (`records.snapshot_lines`), the server renders the records and
        they are written here; nothing is yielded. Otherwise the records go to the SDK's loop.
        """
        if context:  # pragma: no cover - the tap has no partitions
            msg = f"Stream '{self.name}' does not support partitioning."
            raise NotImplementedError(msg)
        conn = self.snapshot_conn
        if conn is None:  # pragma: no cover - the tap always provides one
            msg = "snapshot connection not set"
            raise RuntimeError(msg)
        columns = self._snapshot_columns()
        for reader in (conn, *self.snapshot_readers):
            raw_text_casters(reader, (col.type.oid for col in columns))
        self._last_snapshot_line, self._last_snapshot_record = "", None  # this read's own
        progress = self.bookmark.setdefault("snapshot", {"after": None})
        if progress.get("after") is not None and len(progress["after"]) != len(self.table.key):
            # The key changed since the interrupted run (a new replica identity index): start
            # over, which is safe (the log replays from the consistent point; targets upsert).
            progress["after"] = None
        lines = records.snapshot_lines(self)
        if lines is not None:
            # Nothing the SDK does per record applies: the server renders the records' JSON
            # and they are written here, so nothing is yielded to the SDK's loop.
            files = batch_files(self, lines)  # under batch_config: BATCH files, then STATE
            snapshot = JsonSnapshot(
                self.table,
                columns,
                [self._converters[col.name] for col in columns],
                files or lines,
                snapshot_lsn=self.snapshot_lsn,
                chunk_size=self.chunk_size,
                write_state=files.covering(self.write_state) if files else self.write_state,
                where=self.row_filter,
            )
            with self.get_record_counter() as counter:
                try:
                    if self.table.key:
                        snapshot.read_by_key(conn, progress, counter, self.snapshot_readers)
                    else:
                        snapshot.read_all(conn, counter)
                    if files:  # every chunk is followed by a STATE: nothing left open, normally
                        files.complete()
                finally:
                    self.snapshot_rows += snapshot.rows
                    # A snapshot sent as BATCH files has no RECORD line to repeat.
                    self._last_snapshot_line = "" if files else snapshot.last_line
        else:
            query = ChunkQuery(
                self.table,
                tuple(quote_ident(col.name) for col in columns),
                self.chunk_size,
                self.row_filter,
            )
            if self.table.key:
                yield from self._read_by_key(conn, query, columns, progress)
            else:
                # Closed here, not when collected, should the SDK's loop stop early.
                with contextlib.closing(all_chunks(conn, query)) as chunks:
                    for rows in chunks:
                        yield from (self._make_record(columns, row) for row in rows)
                        self.snapshot_rows += len(rows)
        # The snapshot is complete: from now on the log alone feeds this stream.
        self.bookmark.pop("snapshot", None)

    def _make_record(self, columns: Sequence[ColumnInfo], row: Row) -> dict[str, t.Any]:
        convert = self._converters
        # A keyed chunk's row ends with the key's text, after the columns.
        record = {
            col.name: None if value is None else convert[col.name](value)
            for col, value in zip(columns, row[: len(columns)], strict=True)
        }
        if not self.table.is_view:
            record[SDC_LSN] = self.snapshot_lsn
            record[SDC_DELETED_AT] = None
        return record

    def _read_by_key(
        self,
        conn: psycopg2.extensions.connection,
        query: ChunkQuery,
        columns: Sequence[ColumnInfo],
        progress: dict[str, t.Any],
    ) -> Iterator[dict[str, t.Any]]:
        for rows in key_chunks(conn, query, progress.get("after")):
            for row in rows:
                record = self._make_record(columns, row)
                self._last_snapshot_record = record
                yield record
            self.snapshot_rows += len(rows)
            if rows:
                # Every row of this chunk has been written: resume after its last key.
                progress["after"] = query.key_of(rows[-1])
                self.write_state()

    def repeat_last_snapshot_record(self) -> bool:
        """Write the last record of this run's snapshot again; False if there is none.

        For a target that stores a STATE only when a batch of records is flushed: see
        `closing.py`. The same record, an upsert of the same row, changes nothing in a target.
        """
        if not self.table.key:  # a copy would be a second row where nothing is unique
            return False
        lines = records.snapshot_lines(self)
        if self._last_snapshot_line and lines is not None:
            lines.write(self._last_snapshot_line)
            return True
        if self._last_snapshot_record is not None:
            sdk.write_record(self, dict(self._last_snapshot_record))
            return True
        return False

    # --- log-side events --------------------------------------------------------------------

    def truncate(self, lsn: int) -> None:
        """TRUNCATE seen in the log: tell the target to drop every row it holds for this table.

        Singer has one message for "the table now holds only what follows": ACTIVATE_VERSION.
        The new version is the TRUNCATE record's LSN: each TRUNCATE of a table gets a higher
        one than the last (TRUNCATE locks the table until its transaction commits, so a later
        one is written after the earlier one's commit, and after the consistent point of an
        earlier re-snapshot, whose version is that point), and a replay from an older bookmark
        produces the same versions and converges. States written when the version was the
        commit LSN stay valid: a later TRUNCATE's record still comes after that commit.
        """
        self.table_version = lsn
        self.bookmark["version"] = lsn
        sdk.write_activate_version(self, lsn)
