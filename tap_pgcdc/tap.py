"""The tap: settings, stream discovery, and the order of work (snapshots, then one log reader)."""

from __future__ import annotations

import contextlib
import typing as t
import uuid

from singer_sdk import typing as th
from singer_sdk.exceptions import AbortedSyncFailedException, AbortedSyncPausedException
from singer_sdk.sql import SQLTap

from tap_pgcdc import connector as pgconn
from tap_pgcdc.errors import ConfigError, SlotError, StateError, TapPgCdcError
from tap_pgcdc.replication import slot as slots
from tap_pgcdc.replication.lsn import format_lsn, parse_lsn
from tap_pgcdc.replication.reader import LogReader, ReaderSettings
from tap_pgcdc.replication.transport import ReplicationStream, SnapshotSession
from tap_pgcdc.streams import PgCdcStream
from tap_pgcdc.writer import PgCdcWriter

if t.TYPE_CHECKING:
    import psycopg2.extensions
    from singer_sdk.streams.core import Stream

    from tap_pgcdc.connector import TableInfo

# Replication slot names: Postgres allows lower-case letters, digits and underscores, max 63.
SLOT_NAME_PATTERN = r"^[a-z0-9_]{1,63}$"
STATE_KEY = "tap_pgcdc"


class TapPgCdc(SQLTap):
    """Singer tap for PostgreSQL change data capture over pgoutput logical replication."""

    name = "tap-pgcdc"
    default_stream_class = PgCdcStream
    message_writer_class = PgCdcWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "host",
            th.StringType,
            default="localhost",
            description="Server host name or IP address.",
        ),
        th.Property("port", th.IntegerType, default=5432, description="Server port."),
        th.Property(
            "user",
            th.StringType,
            required=True,
            description="Role to connect as. Log-based capture needs the REPLICATION attribute (or the platform's replication role).",
        ),
        th.Property(
            "password",
            th.StringType,
            secret=True,
            description="Password of `user` (not needed with trust or certificate auth).",
        ),
        th.Property("database", th.StringType, required=True, description="Database to replicate."),
        th.Property(
            "sslmode",
            th.StringType,
            allowed_values=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
            description="libpq SSL mode for both the SQL and the replication connection.",
        ),
        th.Property(
            "sslrootcert",
            th.StringType,
            description="Path to the CA certificate(s) used to verify the server (verify-ca, verify-full).",
        ),
        th.Property("sslcert", th.StringType, description="Path to the client certificate."),
        th.Property(
            "sslkey",
            th.StringType,
            secret=True,
            description="Path to the client certificate's private key.",
        ),
        th.Property(
            "filter_schemas",
            th.ArrayType(th.StringType),
            description="Only discover tables in these schemas (all schemas when empty).",
        ),
        th.Property(
            "filter_tables",
            th.ArrayType(th.StringType),
            description="Only discover tables whose `schema.table` matches one of these glob patterns, e.g. `public.order*`.",
        ),
        th.Property(
            "slot_name",
            th.StringType,
            default="tap_pgcdc",
            pattern=SLOT_NAME_PATTERN,
            description="Logical replication slot (pgoutput) this tap reads. One per tap instance: lower-case letters, digits and underscores, at most 63.",
        ),
        th.Property(
            "publication_name",
            th.StringType,
            default="tap_pgcdc",
            pattern=r"^.{1,63}$",
            description="Publication listing the selected tables. One per tap instance.",
        ),
        th.Property(
            "create_slot",
            th.BooleanType,
            default=True,
            description="Create the replication slot when it is missing. When false, a missing slot is an error that gives the SQL to run.",
        ),
        th.Property(
            "create_publication",
            th.BooleanType,
            default=True,
            description="Create the publication when missing and keep its table list equal to the selected LOG_BASED streams. When false, the publication must already list them.",
        ),
        th.Property(
            "slot_failover",
            th.BooleanType,
            default=False,
            description="PostgreSQL 17+: create the slot as a failover slot, which standbys with sync_replication_slots = on keep in sync, so that it survives a promotion. An error on older servers, and for an existing slot made without failover.",
        ),
        th.Property(
            "max_run_seconds",
            th.IntegerType,
            minimum=1,
            description="Stop reading the log after this many seconds (at a transaction boundary). By default a run reads until it has passed the WAL position the server had flushed when the run started.",
        ),
        th.Property(
            "snapshot_chunk_size",
            th.IntegerType,
            default=10000,
            minimum=1,
            description="Rows per snapshot chunk; a snapshot resumes after the last chunk emitted.",
        ),
        th.Property(
            "state_interval_seconds",
            th.NumberType,
            default=5,
            minimum=0,
            description="While reading the log, emit STATE (at a transaction boundary) at most this often.",
        ),
    ).to_dict()

    # --- discovery ----------------------------------------------------------------------

    @property
    def catalog_dict(self) -> dict:
        if self._catalog_dict is not None:
            return self._catalog_dict
        if self.input_catalog:
            return self.input_catalog.to_dict()
        connector = t.cast("pgconn.PgCdcConnector", self.tap_connector)
        self._catalog_dict = {"streams": connector.discover_catalog_entries()}
        return self._catalog_dict

    # --- state ----------------------------------------------------------------------------

    def load_state(self, state: dict[str, t.Any]) -> None:
        """Validate the input state before the SDK merges it; bad state is an error, not a reset."""
        if not isinstance(state, dict):
            msg = "The input state is not a JSON object. Fix: pass the state file this tap wrote."
            raise StateError(msg)
        bookmarks = state.get("bookmarks", {})
        if not isinstance(bookmarks, dict):
            msg = "The input state's `bookmarks` is not an object. Fix: pass the state this tap wrote."
            raise StateError(msg)
        for stream, bookmark in bookmarks.items():
            if not isinstance(bookmark, dict):
                msg = f"State bookmark for {stream!r} is not an object. Fix: pass the state this tap wrote."
                raise StateError(msg)
            for key in ("lsn",):
                if key in bookmark and bookmark[key] is not None:
                    try:
                        parse_lsn(bookmark[key])
                    except ValueError as exc:
                        msg = f"State bookmark for {stream!r} has an invalid {key}: {exc}. Fix: pass the state this tap wrote."
                        raise StateError(msg) from None
        identity = state.get(STATE_KEY)
        if identity is not None:
            self._input_identity = identity
        super().load_state(state)

    _input_identity: dict[str, t.Any] | None = None

    def _check_state_identity(self, system_identifier: str) -> None:
        """Refuse a state written for another slot or server: its positions mean nothing here."""
        identity = self._input_identity
        if identity:
            slot = identity.get("slot_name")
            if slot and slot != self.config.get("slot_name", "tap_pgcdc"):
                msg = (
                    f"The input state was written for slot {slot!r}, but this tap reads slot "
                    f"{self.config.get('slot_name', 'tap_pgcdc')!r}. Its positions do not apply. "
                    "Fix: use the state of this tap instance (another state id), or set slot_name "
                    f"to {slot!r}."
                )
                raise StateError(msg)
            system = identity.get("system_identifier")
            if system and system != system_identifier:
                msg = (
                    f"The input state was written for another PostgreSQL cluster (system id {system}, "
                    f"this one is {system_identifier}). Its positions do not apply. Fix: use this "
                    "server's state, or start without state to re-snapshot."
                )
                raise StateError(msg)
        # Beside the SDK's bookmarks: which slot and cluster the positions belong to.
        t.cast("dict[str, t.Any]", self.state)[STATE_KEY] = {
            "slot_name": self.config.get("slot_name", "tap_pgcdc"),
            "system_identifier": system_identifier,
        }

    # --- the run --------------------------------------------------------------------------

    def sync_all(self) -> None:  # type: ignore[misc]
        """Snapshot what needs it, then read the slot once for every LOG_BASED stream.

        The SDK's sync_all runs streams one after another; change capture needs one reader for
        all streams, after their snapshots, so the order of work is ours.
        """
        self._reset_state_progress_markers()
        streams = [t.cast("PgCdcStream", s) for s in self.streams.values() if s.selected]
        if not streams:
            self.logger.warning("No stream is selected: nothing to do.")
            return
        control = pgconn.connect(self.config)
        control.autocommit = True
        try:
            self._run(control, streams)
        finally:
            control.close()
        for stream in self.streams.values():
            stream.log_sync_costs()

    def run_sync_dry_run(  # type: ignore[misc]  # the SDK's version needs our table binding
        self,
        dry_run_record_limit: int | None = 1,
        streams: t.Iterable[Stream] | None = None,
    ) -> bool:
        """Read a few rows of each stream, read-only: no slot, no publication, no state change."""
        chosen = [t.cast("PgCdcStream", s) for s in (streams or self.streams.values())]
        for stream in chosen:
            stream.ABORT_AT_RECORD_COUNT = dry_run_record_limit
            stream.selected = True
        conn = pgconn.connect(self.config)
        try:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            self._bind_tables(conn, chosen)
            for stream in chosen:
                stream.snapshot_conn = conn
                with contextlib.suppress(AbortedSyncFailedException, AbortedSyncPausedException):
                    stream.sync()
                stream.snapshot_conn = None
            conn.rollback()
        finally:
            conn.close()
        return True

    def _bind_tables(
        self, control: psycopg2.extensions.connection, streams: list[PgCdcStream]
    ) -> None:
        tables = {tbl.stream_name: tbl for tbl in pgconn.load_tables(control)}
        for stream in streams:
            table = tables.get(stream.name)
            if table is None:
                msg = (
                    f"Stream {stream.name}: table {stream.schema_name}.{stream.table_name} does not "
                    "exist or this role cannot SELECT it. Fix: GRANT SELECT ON it to the tap's user, "
                    "or deselect the stream (run --discover again after schema changes)."
                )
                raise ConfigError(msg)
            stream.bind_table(table)

    def _run(self, control: psycopg2.extensions.connection, streams: list[PgCdcStream]) -> None:
        self._bind_tables(control, streams)
        log_streams = [s for s in streams if s.is_log_based]
        full_streams = [s for s in streams if not s.is_log_based]
        info = slots.server_info(control)
        self._check_state_identity(info.system_identifier)

        slot_name = self.config.get("slot_name", "tap_pgcdc")
        publication = self.config.get("publication_name", "tap_pgcdc")
        confirm_lsn = 0
        if log_streams:
            pending = [s for s in log_streams if s.needs_snapshot]
            # Our own slot needs a free place only if it does not exist yet; a snapshot needs one
            # more (its temporary slot). One WAL sender suffices: the snapshot's replication
            # connection is closed before the log is read.
            existing = slots.get_slot(control, slot_name)
            slots.check_logical_replication(
                info, need_slots=(0 if existing else 1) + (1 if pending else 0)
            )
            self._check_replica_identity(control, [s.table for s in log_streams])
            # Publication before slot: a change is published only if its table was in the
            # publication when the change was decoded.
            slots.ensure_publication(
                control,
                publication,
                [s.table for s in log_streams],
                create=bool(self.config.get("create_publication", True)),
            )
            slot_info, created = slots.ensure_slot(
                control,
                slot_name,
                create=bool(self.config.get("create_slot", True)),
                failover=bool(self.config.get("slot_failover", False)),
            )
            if created:
                self.logger.info("Created replication slot %s (pgoutput).", slot_name)
            confirm_lsn = self._confirmable_position(slot_info, log_streams)
            if pending:
                self._snapshot_log_streams(pending)

        for stream in full_streams:
            self._snapshot_full_table(stream)

        if log_streams:
            self._read_log(log_streams, slot_name, publication, confirm_lsn)

    def _check_replica_identity(
        self, control: psycopg2.extensions.connection, tables: list[TableInfo]
    ) -> None:
        problems = slots.replica_identity_problems(control, tables)
        if problems:
            msg = (
                "Some LOG_BASED tables have no usable replica identity, so their UPDATEs and "
                "DELETEs could not be captured (and would fail in Postgres once published): "
                + "; ".join(problems)
                + ". Alternatively set replication-method FULL_TABLE for those streams."
            )
            raise ConfigError(msg)

    def _confirmable_position(
        self, slot_info: slots.SlotInfo, log_streams: list[PgCdcStream]
    ) -> int:
        """The LSN this run may confirm to the slot: the lowest bookmark of the input state.

        The input state is what the target stored (Meltano hands the tap the last STATE the
        target emitted). Confirming it lets Postgres recycle WAL the target no longer needs;
        confirming anything past it could drop changes the target never stored.
        """
        positions = [s.log_position for s in log_streams]
        known = [p for p in positions if p is not None]
        if not known:
            return 0
        lowest = min(known)
        confirmed = slot_info.confirmed_flush_lsn or 0
        behind = [
            s.name for s in log_streams if s.log_position is not None and s.log_position < confirmed
        ]
        if behind:
            msg = (
                f"The state's position {format_lsn(lowest)} for {', '.join(behind)} is older "
                f"than slot {slot_info.name}'s confirmed position {format_lsn(confirmed)}: changes "
                "between them are no longer available, so continuing would leave a silent gap. "
                "This happens when the tap is given an older state than the one it last "
                "confirmed (a restored target, another state id). Fix: pass the latest state, or "
                "re-snapshot these streams (run them without state)."
            )
            raise SlotError(msg)
        return lowest

    def _snapshot_log_streams(self, pending: list[PgCdcStream]) -> None:
        """Snapshot streams inside a snapshot exported at a point the slot replays from."""
        temp_slot = f"tap_pgcdc_snap_{uuid.uuid4().hex[:12]}"
        with SnapshotSession(self.config, temp_slot) as session:
            exported = session.exported
            self.logger.info(
                "Snapshot of %d stream(s) at consistent point %s.",
                len(pending),
                format_lsn(exported.consistent_point),
            )
            conn = pgconn.connect(self.config)
            try:
                conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
                with conn.cursor() as cur:
                    cur.execute("SET TRANSACTION SNAPSHOT %s", (exported.snapshot_name,))
                for stream in pending:
                    stream.begin_snapshot(exported.consistent_point)
                    stream.snapshot_conn = conn
                    stream.sync()
                    stream.finalize_state_progress_markers()
                    stream.snapshot_conn = None
                conn.rollback()
            finally:
                conn.close()

    def _snapshot_full_table(self, stream: PgCdcStream) -> None:
        conn = pgconn.connect(self.config)
        try:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            stream.snapshot_conn = conn
            stream.sync()
            stream.finalize_state_progress_markers()
            stream.snapshot_conn = None
            conn.rollback()
        finally:
            conn.close()

    def _read_log(
        self,
        log_streams: list[PgCdcStream],
        slot_name: str,
        publication: str,
        confirm_lsn: int,
    ) -> None:
        positions = [s.log_position for s in log_streams]
        start = min(p for p in positions if p is not None)
        settings = ReaderSettings(
            confirm_lsn=confirm_lsn,
            max_run_seconds=self.config.get("max_run_seconds"),
            state_interval_seconds=float(self.config.get("state_interval_seconds", 5)),
        )
        lookup_conn = pgconn.connect(self.config)
        lookup_conn.autocommit = True
        try:
            stop_lsn = _current_flush_lsn(lookup_conn)
            self.logger.info(
                "Reading slot %s from %s until %s (confirming %s).",
                slot_name,
                format_lsn(start),
                format_lsn(stop_lsn),
                format_lsn(confirm_lsn) if confirm_lsn else "nothing",
            )
            for stream in log_streams:
                if stream.snapshot_lsn is None:  # not snapshotted in this run
                    stream._write_schema_message()
            with ReplicationStream(
                self.config,
                slot_name=slot_name,
                publication_name=publication,
                start_lsn=start,
            ) as transport:
                reader = LogReader(
                    transport=transport,
                    streams=log_streams,
                    lookup_conn=lookup_conn,
                    write_state=self._write_log_state,
                    settings=settings,
                    logger=self.logger,
                )
                summary = reader.run(stop_lsn=stop_lsn)
            self.logger.info("Log read complete: %s", summary)
        except TapPgCdcError:
            raise
        finally:
            lookup_conn.close()

    def _write_log_state(self) -> None:
        self._state_writer.write_state(self.state)


def _current_flush_lsn(conn: psycopg2.extensions.connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_flush_lsn()::text")
        row = cur.fetchone()
    assert row is not None
    return parse_lsn(row[0])
