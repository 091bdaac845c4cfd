"""The tap: settings, stream discovery, and the order of work (snapshots, then one log reader)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import typing as t
import uuid

import click
import psycopg2
import psycopg2.errors
from singer_sdk import typing as th
from singer_sdk.exceptions import (
    AbortedSyncFailedException,
    AbortedSyncPausedException,
    ConfigValidationError,
)
from singer_sdk.plugin_base import SingerCommand
from singer_sdk.sql import SQLTap
from singer_sdk.tap_base import CliTestOptionValue

from tap_pgcdc import connector as pgconn
from tap_pgcdc import preflight, sdk
from tap_pgcdc.errors import (
    ConfigError,
    ConnectionLost,
    PrivilegeError,
    SlotError,
    StateError,
    TapPgCdcError,
)
from tap_pgcdc.pg.lsn import format_lsn, parse_lsn
from tap_pgcdc.replication import slot as slots
from tap_pgcdc.replication.reader import LogReader, ReaderSettings
from tap_pgcdc.replication.transport import ReplicationError, ReplicationStream, SnapshotSession
from tap_pgcdc.streams import PgCdcStream
from tap_pgcdc.writer import PgCdcWriter

if t.TYPE_CHECKING:
    from types import FrameType

    import psycopg2.extensions
    from singer_sdk.streams.core import Stream

    from tap_pgcdc.connector import TableInfo

# Replication slot names: Postgres allows lower-case letters, digits and underscores, max 63.
SLOT_NAME_PATTERN = r"^[a-z0-9_]{1,63}$"
STATE_KEY = "tap_pgcdc"
# In a stream's bookmark: its changes were lost (see `_plan_slot_recovery`) and its re-snapshot
# must first tell the target to drop what it holds (ACTIVATE_VERSION).
RESNAPSHOT_KEY = "resnapshot"
ON_SLOT_LOST = ("fail", "resnapshot")


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
            "ssh_tunnel",
            th.ObjectType(
                th.Property(
                    "enable",
                    th.BooleanType,
                    default=False,
                    description="Reach the database through an SSH bastion host (both the SQL and the replication connection).",
                ),
                th.Property(
                    "host", th.StringType, description="The bastion's host name or address."
                ),
                th.Property(
                    "port", th.IntegerType, default=22, description="The bastion's SSH port."
                ),
                th.Property(
                    "username", th.StringType, description="User to log in to the bastion as."
                ),
                th.Property(
                    "private_key",
                    th.StringType,
                    secret=True,
                    description="The private key's text (OpenSSH or PEM; Ed25519, ECDSA or RSA), not a path.",
                ),
                th.Property(
                    "private_key_password",
                    th.StringType,
                    secret=True,
                    description="Passphrase of `private_key`, if it has one.",
                ),
                th.Property(
                    "host_public_key",
                    th.StringType,
                    description="The bastion's public host key (`ssh-ed25519 AAAA...`, as in known_hosts). When set, any other key is refused; when not, the key's fingerprint is logged.",
                ),
            ),
            description="SSH tunnel settings (as Meltano's tap-postgres). `host` and `port` are then the database's address as the bastion sees it.",
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
            "on_slot_lost",
            th.StringType,
            default="fail",
            allowed_values=list(ON_SLOT_LOST),
            description="What to do when changes were lost: the slot was dropped or invalidated (wal_status = lost), or the state is older than the slot's confirmed position. `fail` (default) stops with an error naming the recovery. `resnapshot` recreates the slot if needed and snapshots the affected streams again, after an ACTIVATE_VERSION so that targets which support it drop rows deleted in the meantime.",
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
            return _with_raw_root_metadata(self.input_catalog.to_dict(), self._raw_catalog)
        connector = t.cast("pgconn.PgCdcConnector", self.tap_connector)
        self._catalog_dict = {"streams": connector.discover_catalog_entries()}
        return self._catalog_dict

    # --- command line -----------------------------------------------------------------------

    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's command, reporting the tap's own errors as one line instead of a traceback."""
        command = super().get_singer_command()
        command.__class__ = _Command
        return command

    @classmethod
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]) -> t.Any:
        try:
            return super().cb_config(ctx, param, value)
        except (OSError, ValueError, TypeError) as exc:
            msg = (
                f"Cannot read the settings given with --config {' '.join(value)}: "
                f"{str(exc).rstrip('.')}. Fix: "
                "pass a readable JSON file holding an object of settings, or ENV to read the "
                "TAP_PGCDC_* environment variables."
            )
            raise ConfigError(msg) from None

    @classmethod
    def cb_test(cls, ctx: click.Context, param: click.Option, value: str) -> None:
        """`--test` runs the preflight check, in `invoke` once --catalog and --state are read."""
        if value == CliTestOptionValue.All.value:
            ctx.meta[_PREFLIGHT] = True
            return
        super().cb_test(ctx, param, value)

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: t.Any = None,
        state: t.IO[str] | None = None,
        catalog: t.IO[str] | None = None,
    ) -> None:
        """Run the tap (or, with --test, the preflight check); a bad state file is an error.

        The SDK would treat a state that is valid JSON but not an object as no state at all,
        silently re-snapshotting everything.
        """
        state_text = None if state is None else _checked_state_text(state.read())
        ctx = click.get_current_context(silent=True)
        if ctx is not None and ctx.meta.get(_PREFLIGHT) and not about:
            cls._run_preflight(config, state_text, catalog)
            return
        super().invoke(
            about=about,
            about_format=about_format,
            config=config,
            state=None if state_text is None else io.StringIO(state_text),
            catalog=catalog,
        )

    @classmethod
    def _run_preflight(
        cls, config: t.Any, state_text: str | None, catalog: t.IO[str] | None
    ) -> None:
        """Check everything a run needs, report every problem with its fix, change nothing."""
        cls.print_version(print_fn=cls.logger.info)
        try:
            catalog_dict = None if catalog is None else json.loads(catalog.read())
        except ValueError as exc:
            msg = f"The catalog given with --catalog is not valid JSON: {exc}. Fix: pass the output of --discover."
            raise ConfigError(msg) from None
        tap = cls(
            config=config.config,
            state=None if state_text is None else json.loads(state_text),
            catalog=catalog_dict,
            parse_env_config=config.parse_env,
            validate_config=True,
        )
        report = preflight.check(tap)
        for note in report.notes:
            cls.logger.info("Preflight: %s", note)
        if report.problems:
            total = len(report.problems)
            for number, problem in enumerate(report.problems, 1):
                cls.logger.error("Preflight problem %d of %d: %s", number, total, problem)
            cls.logger.error(
                "Preflight found %d problem(s); nothing was changed. Fix them, then run "
                "tap-pgcdc --test again.",
                total,
            )
            sys.exit(1)
        cls.logger.info("Preflight passed: a run can start.")

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's validation, with the fix after each error and secret values never shown."""
        try:
            return super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as exc:
            secrets = _secret_settings(self.config_jsonschema)
            errors = [_explain_config_error(error, secrets) for error in exc.errors]
            raise ConfigValidationError(str(exc), errors=errors, schema=exc.schema) from None

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """On SIGTERM or SIGINT, stop with the STATE already written as the last word.

        The SDK's Tap writes its live state here, but ours can be ahead of the records written
        (a TRUNCATE's table version is recorded when it is read, mid-transaction). Every STATE
        already written is at a transaction boundary, after the records it covers, so the
        target keeps the last of them and the next run resumes there.
        """
        sdk.default_termination(self, signum, frame)

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
            _check_bookmark(stream, bookmark)
        identity = state.get(STATE_KEY)
        if identity is not None and not isinstance(identity, dict):
            msg = (
                f"The input state's {STATE_KEY!r} is not an object (it names the slot and cluster "
                "the positions belong to). Fix: pass the state this tap wrote."
            )
            raise StateError(msg)
        if identity is not None:
            self._input_identity = identity
        super().load_state(state)

    _input_identity: dict[str, t.Any] | None = None

    def __init__(self, *args: t.Any, catalog: t.Any = None, **kwargs: t.Any) -> None:
        self._raw_catalog = _read_raw_catalog(catalog)
        super().__init__(*args, catalog=catalog, **kwargs)

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
        self._activity = "connecting"
        control = pgconn.connect(self.config)
        control.autocommit = True
        try:
            self._run(control, streams)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            if not _connection_lost(exc):
                raise
            raise ConnectionLost.during(self._activity, str(exc), self.config) from None
        except psycopg2.errors.InsufficientPrivilege as exc:
            msg = (
                f"PostgreSQL refused a statement while {self._activity}: "
                f"{' '.join(str(exc).split())}. Fix: grant the privilege it names to "
                f"{self.config.get('user')!r} (see the README's Postgres prerequisites)."
            )
            raise PrivilegeError(msg) from None
        finally:
            control.close()
        for stream in self.streams.values():
            stream.log_sync_costs()

    # What the run is doing, for the message when a connection breaks.
    _activity = "starting"

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
        self._activity = "checking the server, the slot and the publication"
        self._bind_tables(control, streams)
        log_streams = [s for s in streams if s.is_log_based]
        full_streams = [s for s in streams if not s.is_log_based]
        info = slots.server_info(control)
        self._check_state_identity(info.system_identifier)
        for stream in log_streams:
            # Records carry the table version of the last TRUNCATE or re-snapshot, across runs.
            stream.table_version = stream.bookmark.get("version")

        slot_name = self.config.get("slot_name", "tap_pgcdc")
        publication = self.config.get("publication_name", "tap_pgcdc")
        confirm_lsn = 0
        if log_streams:
            existing = slots.get_slot(control, slot_name)
            # The slot is judged before anything changes: a run that stops here leaves no trace.
            create_slot = bool(self.config.get("create_slot", True))
            failover = bool(self.config.get("slot_failover", False))
            if existing is not None:  # not another tool's, database's or session's
                _refuse(
                    slots.slot_problems(
                        control,
                        slot_name,
                        create=create_slot,
                        failover=failover,
                        allow_invalidated=True,
                    )
                )
            drop_lost_slot = self._plan_slot_recovery(existing, slot_name, log_streams)
            if existing is None:  # and create_slot is false
                _refuse(
                    slots.slot_problems(control, slot_name, create=create_slot, failover=failover)
                )
            pending = [s for s in log_streams if s.needs_snapshot]
            # Our own slot needs a free place only if it does not exist yet; a snapshot needs one
            # more (its temporary slot). One WAL sender suffices: the snapshot's replication
            # connection is closed before the log is read.
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
            if drop_lost_slot:
                slots.drop_slot(control, slot_name)
                self.logger.warning("Dropped invalidated replication slot %s.", slot_name)
            slot_info, created = slots.ensure_slot(
                control, slot_name, create=create_slot, failover=failover
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

    def _plan_slot_recovery(
        self,
        existing: slots.SlotInfo | None,
        slot_name: str,
        log_streams: list[PgCdcStream],
    ) -> bool:
        """Find streams whose changes the slot can no longer deliver; fail, or re-snapshot them.

        Changes are lost when the slot is gone while the state holds positions in it (dropped,
        or a failover to a server without it), when the server invalidated it (wal_status =
        lost), or when a bookmark is older than its confirmed position (the server starts
        decoding there, skipping what lies between). Reading on would leave a silent gap. With
        on_slot_lost = resnapshot those streams lose their bookmarks and are snapshotted again
        after an ACTIVATE_VERSION (see `_snapshot_log_streams`); the state keeps the mark, so a
        re-snapshot interrupted before it starts still sends it. Nothing changes here.

        Returns:
            Whether the (invalidated) slot must be dropped before `ensure_slot` recreates it.
        """
        recover = self.config.get("on_slot_lost", "fail") == "resnapshot"
        bookmarked = [s for s in log_streams if s.log_position is not None]
        names = ", ".join(s.name for s in bookmarked)
        drop = False
        if existing is None:
            lost = bookmarked
            why = (
                f"Replication slot {slot_name!r} does not exist, but the input state holds "
                f"positions in it for {names}: the slot was dropped (or the server was replaced, "
                "e.g. by a failover to a standby without it), so the changes since those "
                "positions are lost"
            )
        elif (invalid := slots.invalidation(existing)) is not None:
            lost, drop = bookmarked, True
            why = f"Replication slot {slot_name!r} was invalidated ({invalid[0]}): {invalid[1]}"
        else:
            confirmed = existing.confirmed_flush_lsn or 0
            lost = [s for s in bookmarked if t.cast("int", s.log_position) < confirmed]
            lowest = min((t.cast("int", s.log_position) for s in lost), default=0)
            why = (
                f"The state's position {format_lsn(lowest)} for "
                f"{', '.join(s.name for s in lost)} is older than slot {slot_name}'s confirmed "
                f"position {format_lsn(confirmed)}: the changes between them are no longer "
                "available (this happens when the tap is given an older state than the one it "
                "last confirmed: a restored target, another state id)"
            )
        if not lost and not drop:
            return False
        if not recover:
            msg = (
                f"{why}. Continuing would leave a silent gap in the target. Fix: set on_slot_lost "
                "= resnapshot to "
                + ("drop and recreate the slot and " if drop else "")
                + ("create the slot and " if existing is None else "")
                + "snapshot the affected streams again (an ACTIVATE_VERSION first lets targets "
                "that support it drop rows deleted meanwhile), or pass the latest state if this "
                "one is stale, or run without state to snapshot everything again."
            )
            raise SlotError(msg)
        for stream in lost:
            for key in ("lsn", "snapshot"):
                stream.bookmark.pop(key, None)
            stream.bookmark[RESNAPSHOT_KEY] = True
        self.logger.warning(
            "%s. on_slot_lost = resnapshot: snapshotting %s again%s.",
            why,
            ", ".join(s.name for s in lost) or "no stream",
            " with a new slot" if drop or existing is None else "",
        )
        return drop

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
                "set on_slot_lost = resnapshot to snapshot these streams again."
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
                    self._activity = f"snapshotting {stream.name}"
                    stream.begin_snapshot(exported.consistent_point)
                    if stream.bookmark.pop(RESNAPSHOT_KEY, None):
                        # Its changes were lost (see `_plan_slot_recovery`): targets that
                        # implement ACTIVATE_VERSION drop every row they hold for it, including
                        # rows deleted meanwhile, and keep what this snapshot sends. The version,
                        # the consistent point, is above every earlier one (TRUNCATE commits).
                        stream.write_schema()
                        stream.truncate(exported.consistent_point)
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
            self._flush_past(lookup_conn)
            self.logger.info(
                "Reading slot %s from %s until %s (confirming %s).",
                slot_name,
                format_lsn(start),
                format_lsn(stop_lsn),
                format_lsn(confirm_lsn) if confirm_lsn else "nothing",
            )
            for stream in log_streams:
                if stream.snapshot_lsn is None:  # not snapshotted in this run
                    stream.write_schema()
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
                self._activity = f"reading slot {slot_name}"
                try:
                    summary = reader.run(stop_lsn=stop_lsn)
                except ReplicationError as exc:
                    raise ConnectionLost.during(self._activity, str(exc), self.config) from None
            self.logger.info("Log read complete: %s", summary)
        finally:
            lookup_conn.close()

    def _flush_past(self, conn: psycopg2.extensions.connection) -> None:
        """Make sure the WAL up to the stop position is whole and flushed, so the run can end.

        The flush position can fall inside a record: the WAL writer flushes whole pages, and a
        record such as the running-transactions one that a slot's creation writes is not
        flushed by anyone until more WAL follows. The walsender decodes only whole flushed
        records, so on a server that then falls idle it never reports a position at or past
        the stop position, and the run waits for unrelated activity (15 s for the next
        running-transactions record, or for ever). Committing a transaction of our own (it
        takes an XID and changes nothing, so nothing is published) writes a commit record
        after the stop position and flushes everything before it.
        """
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL "
                    "ELSE pg_catalog.txid_current() END"
                )
        except psycopg2.Error as exc:  # e.g. default_transaction_read_only for this role
            self.logger.debug("Could not commit a transaction to flush the WAL: %s", exc)

    def _write_log_state(self) -> None:
        self._state_writer.write_state(self.state)


_PREFLIGHT = "tap_pgcdc.preflight"


class _Command(SingerCommand):
    """The SDK's command line, with the tap's own errors as one line each, exit status 1.

    The SDK handles a ConfigValidationError in `invoke` only; callbacks (--discover, --test,
    --config) run before it, and the tap's errors would otherwise end in a traceback.
    """

    def main(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return super().main(*args, **kwargs)
        except TapPgCdcError as exc:
            self.logger.error("%s", " ".join(str(exc).split()))
        except ConfigValidationError as exc:
            for error in exc.errors:
                self.logger.error("%s", error)
            self.logger.error("Config validation failed")
        sys.exit(1)


def _checked_state_text(text: str) -> str:
    """The --state file's text, if it holds a JSON object; otherwise a StateError."""
    try:
        state = json.loads(text)
    except ValueError as exc:
        msg = (
            f"The state given with --state is not valid JSON ({exc}). Fix: pass the state file "
            "this tap wrote (the last STATE message the target stored), or no --state to start "
            "over with new snapshots."
        )
        raise StateError(msg) from None
    if not isinstance(state, dict):
        msg = (
            f"The state given with --state is a JSON {type(state).__name__}, not an object. Fix: "
            "pass the state file this tap wrote (the last STATE message the target stored), or "
            "no --state to start over with new snapshots."
        )
        raise StateError(msg)
    return text


def _secret_settings(schema: dict[str, t.Any]) -> set[str]:
    """Names of the settings (at any depth) whose values must never be shown."""
    names: set[str] = set()
    for name, prop in schema.get("properties", {}).items():
        if prop.get("secret"):
            names.add(name)
        names |= _secret_settings(prop)
    return names


_FIXES = {
    "slot_name": "use 1 to 63 lower-case letters, digits and underscores, e.g. 'tap_pgcdc'",
    "sslmode": "use one of disable, allow, prefer, require, verify-ca, verify-full",
    "on_slot_lost": "use fail or resnapshot",
}


def _explain_config_error(error: str, secrets: set[str]) -> str:
    """One SDK validation error with what to do about it; a secret's value is never repeated."""
    match = re.search(r"in config((?:\['[^']*'\])+)$", error)
    path = re.findall(r"'([^']*)'", match.group(1)) if match else []
    required = re.match(r"'([^']+)' is a required property", error)
    if required:
        path = [*path, required.group(1)]
    setting = ".".join(path) or "the settings"
    if set(path) & secrets and not required:
        error = f"The {setting} setting has an invalid value (not shown: it is secret)"
    fix = _FIXES.get(path[-1] if path else "", "")
    if required:
        fix = f"set {setting} (meltano config tap-pgcdc set ..., or TAP_PGCDC_{setting.upper()})"
    elif not fix:
        fix = f"correct {setting}; tap-pgcdc --about lists every setting and its allowed values"
    return f"{error}. Fix: {fix}."


def _refuse(problems: list[str]) -> None:
    if problems:
        raise SlotError(problems[0])


def _connection_lost(exc: psycopg2.Error) -> bool:
    """Whether a psycopg2 error means the connection broke, not that a statement failed."""
    code = exc.pgcode or ""
    # No SQLSTATE: libpq's own error (closed socket); 08: connection exception; 57P: the server
    # is shutting down, crashed, or ended the session (pg_terminate_backend).
    return code == "" or code.startswith(("08", "57P"))


def _check_bookmark(stream: str, bookmark: dict[str, t.Any]) -> None:
    """Refuse a bookmark whose fields this tap would misread (see streams.py for their meaning)."""
    fix = "Fix: pass the state this tap wrote, or remove this stream's bookmark to re-snapshot it."
    lsns = {"lsn": bookmark.get("lsn")}
    snapshot = bookmark.get("snapshot")
    if snapshot is not None:
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("after"), list | None):
            msg = f"State bookmark for {stream!r} has an invalid snapshot progress {snapshot!r}. {fix}"
            raise StateError(msg)
        lsns["snapshot.lsn"] = snapshot.get("lsn")
    for key, value in lsns.items():
        if value is None:
            continue
        try:
            parse_lsn(value)
        except ValueError as exc:
            msg = f"State bookmark for {stream!r} has an invalid {key}: {exc}. {fix}"
            raise StateError(msg) from None
    version = bookmark.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        msg = f"State bookmark for {stream!r} has an invalid version {version!r}. {fix}"
        raise StateError(msg)


def _current_flush_lsn(conn: psycopg2.extensions.connection) -> int:
    # A standby (PG16+ decodes there) has no WAL of its own to flush: what it has replayed is
    # what its walsender can decode up to.
    with conn.cursor() as cur:
        cur.execute(
            "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() "
            "THEN pg_catalog.pg_last_wal_replay_lsn() "
            "ELSE pg_catalog.pg_current_wal_flush_lsn() END::text"
        )
        row = cur.fetchone()
    assert row is not None
    return parse_lsn(row[0])


def _read_raw_catalog(catalog: t.Any) -> dict[str, t.Any] | None:
    """The input catalog as given (a dict or a JSON file), before the SDK's model parses it."""
    if isinstance(catalog, dict):
        return catalog
    if isinstance(catalog, (str, os.PathLike)):
        try:
            with open(catalog, encoding="utf-8") as handle:
                raw = json.load(handle)
        except (OSError, ValueError):
            return None  # the SDK reports an unreadable catalog itself
        return raw if isinstance(raw, dict) else None
    return None


def _with_raw_root_metadata(
    catalog: dict[str, t.Any], raw: dict[str, t.Any] | None
) -> dict[str, t.Any]:
    """Restore root metadata keys the SDK's model drops, e.g. `replication-method`.

    Meltano records a user's choice of replication method in the standard `replication-method`
    metadata key; the SDK's StreamMetadata has no such field and loses it on parsing.
    """
    if not raw:
        return catalog
    raw_roots: dict[str, dict[str, t.Any]] = {}
    for stream in raw.get("streams", []) if isinstance(raw.get("streams"), list) else []:
        if not isinstance(stream, dict):
            continue
        for item in stream.get("metadata", []) or []:
            if isinstance(item, dict) and item.get("breadcrumb") == []:
                raw_roots[str(stream.get("tap_stream_id"))] = item.get("metadata") or {}
    for stream in catalog.get("streams", []):
        extra = raw_roots.get(stream.get("tap_stream_id"), {})
        for item in stream.get("metadata", []):
            if item.get("breadcrumb") == []:
                for key, value in extra.items():
                    item["metadata"].setdefault(key, value)
    return catalog
