"""The order of work of one run: check, publication, slot, snapshots, then one log read.

The SDK's sync_all runs streams one after another; change capture needs one reader for all
LOG_BASED streams, after their snapshots, so the order is ours:

1. Bind every selected stream to its live table, and read the server's facts.
2. Judge the slot before anything changes (a run that stops here leaves no trace), and plan a
   recovery if changes were lost (`recovery.plan_slot_recovery`).
3. The publication before the slot: a change is published only if its table was in the
   publication when the change was decoded.
4. The slot, then snapshots of the streams that need one, inside a snapshot exported at a point
   the slot replays from; FULL_TABLE streams in a snapshot of their own.
5. One pass over the slot for every LOG_BASED stream, confirming only the input state.
"""

from __future__ import annotations

import contextlib
import logging
import typing as t
import uuid

import psycopg2
import psycopg2.errors
from singer_sdk.exceptions import AbortedSyncFailedException, AbortedSyncPausedException

from tap_pgcdc import recovery, report
from tap_pgcdc.checks import (
    bind_tables,
    full_table_warning,
    idle_slot_warning,
    log_based_candidates,
    log_positions,
    publishing,
    refuse_uncapturable,
    slot_facts,
    stale_keys,
    uncapturable,
)
from tap_pgcdc.errors import (
    ConnectionLost,
    PrivilegeError,
    ReplicationError,
    SlotError,
    TapPgCdcError,
    raise_first,
)
from tap_pgcdc.output.changes import log_reader
from tap_pgcdc.pg import wal
from tap_pgcdc.pg.connect import connect
from tap_pgcdc.pg.lsn import format_lsn
from tap_pgcdc.pg.quoting import quote_literal
from tap_pgcdc.replication import server
from tap_pgcdc.replication import slot as slots
from tap_pgcdc.replication.blockers import wait_for_prepared
from tap_pgcdc.replication.publication import judge_publication, membership
from tap_pgcdc.replication.publication_ops import apply_publication, fetch_publication
from tap_pgcdc.replication.reader import CAUGHT_UP, ReaderSettings, ReadSummary
from tap_pgcdc.replication.transport import ReplicationStream, SnapshotSession
from tap_pgcdc.snapshot.session import snapshot_connection
from tap_pgcdc.state import (
    PUBLICATION_KEY,
    RESNAPSHOT_KEY,
    STATE_KEY,
    check_identity,
    identity_record,
    publication_record,
)
from tap_pgcdc.streams import FULL_TABLE_VERSION

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import psycopg2.extensions

    from tap_pgcdc.settings import Settings
    from tap_pgcdc.streams import PgCdcStream


def dry_run(config: Mapping[str, t.Any], streams: Sequence[PgCdcStream], limit: int | None) -> None:
    """Read a few rows of each stream, read-only: no slot, no publication, no state change."""
    for stream in streams:
        stream.ABORT_AT_RECORD_COUNT = limit
        stream.selected = True
    with snapshot_connection(config) as conn:
        bind_tables(conn, streams)
        for stream in streams:
            stream.snapshot_conn = conn
            with contextlib.suppress(AbortedSyncFailedException, AbortedSyncPausedException):
                stream.sync()
            stream.snapshot_conn = None


class Run:
    """One run of the tap over its selected streams."""

    def __init__(
        self,
        *,
        config: Mapping[str, t.Any],
        settings: Settings,
        state: dict[str, t.Any],
        identity: dict[str, t.Any] | None,
        write_state: Callable[[], None],
        logger: logging.Logger,
        run_report: report.RunReport | None = None,
    ) -> None:
        """Prepare a run.

        Args:
            config: The tap's settings as given (connection parameters).
            settings: The same, parsed.
            state: The tap's live state (the SDK's), written by `write_state`.
            identity: The slot and cluster the input state's positions belong to.
            write_state: Writes a STATE message of `state`.
            logger: The tap's logger.
            run_report: Filled with what the run does (the tap writes it at the end).
        """
        self.config = config
        self.settings = settings
        self.state = state
        self.identity = identity
        self.write_state = write_state
        self.logger = logger
        self.report = run_report or report.RunReport(settings.slot_name, settings.publication_name)
        # What the run is doing, for the message when a connection breaks.
        self.activity = "starting"

    def execute(self, streams: Sequence[PgCdcStream]) -> None:
        """Snapshot what needs it, then read the slot once for every LOG_BASED stream."""
        self.activity = "connecting"
        control = connect(self.config)
        control.autocommit = True
        try:
            self._run(control, streams)
            if not self.report.reason:
                self.report.reason = report.NO_LOG_READ
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            if not _connection_lost(exc):
                raise
            raise ConnectionLost.during(self.activity, str(exc), self.config) from None
        except psycopg2.errors.InsufficientPrivilege as exc:
            msg = (
                f"PostgreSQL refused a statement while {self.activity}: "
                f"{' '.join(str(exc).split())}. Fix: grant the privilege it names to "
                f"{self.config.get('user')!r} (see the README's Postgres prerequisites)."
            )
            raise PrivilegeError(msg) from None
        finally:
            try:
                self._sample_slot_after(control, streams)
            finally:
                control.close()

    def _sample_slot_after(
        self, control: psycopg2.extensions.connection, streams: Sequence[PgCdcStream]
    ) -> None:
        """The report's counts and the slot's positions at the end (best effort: a broken
        connection, or a signal that asks for a prompt exit, leaves the sample out)."""
        run_report = self.report
        for stream in streams:
            counts = run_report.stream(stream.name, stream.replication_method)
            counts.snapshot_rows = stream.snapshot_rows
        if run_report.reason == report.SIGNAL or not any(s.is_log_based for s in streams):
            return
        with contextlib.suppress(psycopg2.Error):
            run_report.slot_after = report.slot_sample(control, self.settings.slot_name)

    def _run(self, control: psycopg2.extensions.connection, streams: Sequence[PgCdcStream]) -> None:
        settings = self.settings
        self.activity = "checking the server, the slot and the publication"
        bind_tables(control, streams)
        log_streams = [s for s in streams if s.is_log_based]
        full_streams = [s for s in streams if not s.is_log_based]
        info = server.fetch_server(control)
        check_identity(
            self.identity, slot_name=settings.slot_name, system_identifier=info.system_identifier
        )
        # Beside the SDK's bookmarks: which slot and cluster the positions belong to, and when
        # this run started (how long the slot will have been idle at the next run).
        self.state[STATE_KEY] = identity_record(
            slot_name=settings.slot_name,
            system_identifier=info.system_identifier,
            last_run_at=info.now,
        )
        for stream in log_streams:
            # Records carry the table version of the last TRUNCATE or re-snapshot, across runs.
            stream.table_version = stream.bookmark.get("version")
            if stream.bookmark.pop(FULL_TABLE_VERSION, None) is not None:
                # Read in full until now: snapshotted again (a position from an earlier time as
                # LOG_BASED is stale), as a new version, which drops the rows the target holds
                # from the reads in full (rows deleted since, a keyless table's copies).
                for key in ("lsn", "snapshot"):
                    stream.bookmark.pop(key, None)
                stream.bookmark[RESNAPSHOT_KEY] = True

        slot_name = settings.slot_name
        confirm_lsn = 0
        if log_streams:
            facts = slots.fetch_slot(control, slot_name)
            existing = facts.slot
            self.report.slot_before = report.slot_sample(control, slot_name)
            idle_warning = idle_slot_warning(info, existing, self.identity)
            if idle_warning is not None:
                self.logger.warning("%s", idle_warning)
            # The slot is judged before anything changes: a run that stops here leaves no trace.
            if existing is not None:  # not another tool's, database's or session's
                raise_first(self._judge_slot(facts, allow_invalidated=True))
            plan = recovery.plan_slot_recovery(
                slot_facts(slot_name, existing),
                log_positions(log_streams),
                resnapshot=settings.resnapshot_on_slot_lost,
            )
            if plan.needed:
                self._mark_for_resnapshot(plan, log_streams, slot_missing=existing is None)
            tables = [s.table for s in log_streams]
            publication = fetch_publication(control, settings.publication_name, tables)
            # Before the publication changes: was each bookmark's table published all along?
            published = recovery.plan_publication_recovery(
                settings.publication_name,
                *publishing(publication, log_streams),
                resnapshot=settings.resnapshot_on_slot_lost,
            )
            if published.needed:
                self._mark_for_resnapshot(published, log_streams, slot_missing=False)
            if existing is None:  # and create_slot is false
                raise_first(self._judge_slot(facts))
            pending = [s for s in log_streams if s.needs_snapshot]
            # Our own slot needs a free place only if it does not exist yet; a snapshot needs one
            # more (its temporary slot). One WAL sender suffices: the snapshot's replication
            # connection is closed before the log is read.
            raise_first(
                server.judge_server(
                    info,
                    need_slots=(0 if existing else 1) + (1 if pending else 0),
                    origin=settings.origin,
                )
            )
            raise_first(refuse_uncapturable(uncapturable(control, tables)))
            for warning in stale_keys(log_streams):
                self.logger.warning("%s", warning)
            # Publication before slot: a change is published only if its table was in the
            # publication when the change was decoded.
            raise_first(judge_publication(publication, create=settings.create_publication))
            apply_publication(control, publication, create=settings.create_publication)
            self._record_publication(control, log_streams)
            if plan.drop_slot:
                slots.drop_slot(control, slot_name)
                self.logger.warning("Dropped invalidated replication slot %s.", slot_name)
            slot_info = self._open_slot(control)
            confirm_lsn = recovery.confirmable_position(
                slot_info.name, slot_info.confirmed_flush_lsn, log_positions(log_streams)
            )
            if pending:
                self._snapshot_log_streams(control, pending)

        candidates = log_based_candidates(full_streams, info.version_num)
        for name, verdicts in uncapturable(control, candidates).items():
            self.logger.warning("%s", full_table_warning(name, verdicts))
        for stream in full_streams:
            self._snapshot_full_table(stream)

        if log_streams:
            self._read_log(log_streams, confirm_lsn)

    def _judge_slot(
        self, facts: slots.SlotFacts, *, allow_invalidated: bool = False
    ) -> list[TapPgCdcError]:
        return slots.judge_slot(
            facts,
            create=self.settings.create_slot,
            failover=self.settings.slot_failover,
            allow_invalidated=allow_invalidated,
        )

    def _open_slot(self, control: psycopg2.extensions.connection) -> slots.SlotInfo:
        """The tap's slot, created if it is missing (and allowed), judged usable.

        Creating a slot waits until every transaction running at that moment has ended, so a
        long-open transaction delays it. A slot another run created meanwhile is judged too.
        """
        facts = slots.fetch_slot(control, self.settings.slot_name)
        raise_first(self._judge_slot(facts))
        if facts.slot is None:
            wait_for_prepared(
                control,
                f"replication slot {self.settings.slot_name}",
                limit=self.settings.slot_wait_seconds,
            )
            facts, created = slots.create_slot(
                control, self.settings.slot_name, failover=self.settings.slot_failover
            )
            raise_first(self._judge_slot(facts))
            if created:
                self.logger.info("Created replication slot %s (pgoutput).", facts.name)
        assert facts.slot is not None  # judged: it exists, or was just created
        slots.warn_if_unreserved(facts.slot)
        return facts.slot

    def _mark_for_resnapshot(
        self, plan: recovery.SlotRecovery, log_streams: Sequence[PgCdcStream], *, slot_missing: bool
    ) -> None:
        """Act on a recovery plan: the lost streams forget their positions and are re-snapshotted.

        The mark stays in the state until the re-snapshot starts, so a run interrupted before
        then still sends the ACTIVATE_VERSION that lets the target drop rows deleted meanwhile.
        """
        lost = [s for s in log_streams if s.name in plan.lost]
        for stream in lost:
            for key in ("lsn", "snapshot"):
                stream.bookmark.pop(key, None)
            stream.bookmark[RESNAPSHOT_KEY] = True
        self.logger.warning("%s", plan.describe(slot_missing=slot_missing))

    def _record_publication(
        self, control: psycopg2.extensions.connection, log_streams: Sequence[PgCdcStream]
    ) -> None:
        """Keep, with each bookmark, the publication and membership its changes are read through.

        Called once the publication lists every stream's table, and every bookmark left is
        trusted (the others were marked for a re-snapshot): from here on the changes of each
        table are published, so the record is true of every position the run will write.
        """
        facts = fetch_publication(
            control, self.settings.publication_name, [s.table for s in log_streams]
        )
        publication = facts.publication
        if publication is None:  # dropped again in the meantime: the next run sees it
            return
        for stream in log_streams:
            member = membership(publication, facts.catalog.get(stream.table.oid))
            if member is not None:
                stream.bookmark[PUBLICATION_KEY] = publication_record(publication.oid, member)

    def _snapshot_log_streams(
        self, control: psycopg2.extensions.connection, pending: list[PgCdcStream]
    ) -> None:
        """Snapshot streams inside a snapshot exported at a point the slot replays from."""
        temp_slot = f"tap_pgcdc_snap_{uuid.uuid4().hex[:12]}"
        wait_for_prepared(
            control,
            "the temporary slot a snapshot is exported from",
            limit=self.settings.slot_wait_seconds,
        )
        with SnapshotSession(self.config, temp_slot) as session:
            exported = session.exported
            self.logger.info(
                "Snapshot of %d stream(s) at consistent point %s.",
                len(pending),
                format_lsn(exported.consistent_point),
            )
            with snapshot_connection(self.config, snapshot_name=exported.snapshot_name) as conn:
                for stream in pending:
                    self.activity = f"snapshotting {stream.name}"
                    stream.begin_snapshot(exported.consistent_point)
                    if stream.bookmark.pop(RESNAPSHOT_KEY, None):
                        # Its changes were lost (see recovery.plan_slot_recovery): targets that
                        # implement ACTIVATE_VERSION drop every row they hold for it, including
                        # rows deleted meanwhile, and keep what this snapshot sends. The version,
                        # the consistent point, is above every earlier one (TRUNCATE commits).
                        stream.write_schema()
                        stream.truncate(exported.consistent_point)
                    self._sync_snapshot(stream, conn)

    def _snapshot_full_table(self, stream: PgCdcStream) -> None:
        """Read the table in full as a new version (see `PgCdcStream.begin_full_table`)."""
        self.activity = f"reading {stream.name} in full"
        with snapshot_connection(self.config) as conn:
            stream.begin_full_table(wal.current_wal_lsn(conn))
            self._sync_snapshot(stream, conn)
            stream.end_full_table()
            stream.write_state()

    @staticmethod
    def _sync_snapshot(stream: PgCdcStream, conn: psycopg2.extensions.connection) -> None:
        stream.snapshot_conn = conn
        stream.sync()
        stream.finalize_state_progress_markers()
        stream.snapshot_conn = None

    def _read_log(self, log_streams: list[PgCdcStream], confirm_lsn: int) -> None:
        settings = self.settings
        slot_name = settings.slot_name
        positions = [s.log_position for s in log_streams]
        start = min(p for p in positions if p is not None)
        reader_settings = ReaderSettings(
            confirm_lsn=confirm_lsn,
            max_run_seconds=settings.max_run_seconds,
            state_interval_seconds=settings.state_interval_seconds,
        )
        lookup_conn = connect(self.config)
        lookup_conn.autocommit = True
        try:
            stop_lsn = wal.current_flush_lsn(lookup_conn)
            # Makes sure the WAL up to the stop position is whole, so that an idle server
            # still reports a position past it and the run can end (see pg.wal.flush_past).
            wal.flush_past(lookup_conn)
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
                publication_name=settings.publication_name,
                start_lsn=start,
                # Said explicitly where pgoutput knows the option (judged: 'any' before 16).
                origin=settings.origin
                if lookup_conn.server_version >= server.ORIGIN_VERSION
                else None,
            ) as transport:
                reader = log_reader(
                    transport=transport,
                    streams=log_streams,
                    lookup_conn=lookup_conn,
                    write_state=self.write_state,
                    settings=reader_settings,
                    logger=self.logger,
                )
                self.activity = f"reading slot {slot_name}"
                self._report_read(start, stop_lsn, confirm_lsn)
                try:
                    summary = reader.run(stop_lsn=stop_lsn)
                except ReplicationError as exc:
                    if _publication_missing(str(exc)):
                        raise SlotError(self._undecodable(str(exc))) from None
                    raise ConnectionLost.during(self.activity, str(exc), self.config) from None
                finally:
                    self._report_summary(reader.summary, transport.bytes_received)
            self.report.reason = (
                report.CAUGHT_UP if summary.stopped == CAUGHT_UP else report.OUT_OF_TIME
            )
            self.logger.info("Log read complete: %s", summary)
        finally:
            lookup_conn.close()

    def _report_read(self, start: int, stop_lsn: int, confirm_lsn: int) -> None:
        run_report = self.report
        run_report.start_lsn, run_report.stop_lsn = start, stop_lsn
        run_report.confirmed_lsn = confirm_lsn or None

    def _report_summary(self, summary: ReadSummary, bytes_received: int) -> None:
        """The read's counters in the report, also when it stopped on an error or a signal."""
        run_report = self.report
        run_report.end_lsn = summary.position
        run_report.transactions = summary.transactions
        run_report.bytes_received = bytes_received
        for name, changes in summary.streams.items():
            counts = run_report.stream(name, "LOG_BASED")
            counts.changes, counts.deletes = changes.changes, changes.deletes
            counts.truncates = changes.truncates

    def _undecodable(self, detail: str) -> str:
        """The error for a slot that cannot decode what happened while the publication was gone."""
        slot = self.settings.slot_name
        return (
            f"Slot {slot} cannot decode changes made while publication "
            f"{self.settings.publication_name!r} did not exist (the server said: "
            f"{' '.join(detail.split()).rstrip('.')}): it was dropped and created again while "
            "those changes waited in the slot, and the input state was written before the tap "
            "recorded the publication's identity, so the run could not tell before reading. "
            "Every run would stop here. Fix: drop the slot (SELECT "
            f"pg_drop_replication_slot({quote_literal(slot)});) and run with on_slot_lost = "
            "resnapshot: every stream is snapshotted again, after an ACTIVATE_VERSION."
        )


def _publication_missing(detail: str) -> bool:
    """Whether the walsender stopped because pgoutput could not find the publication."""
    return "publication" in detail and "does not exist" in detail


def _connection_lost(exc: psycopg2.Error) -> bool:
    """Whether a psycopg2 error means the connection broke, not that a statement failed."""
    code = exc.pgcode or ""
    # No SQLSTATE: libpq's own error (closed socket); 08: connection exception; 57P: the server
    # is shutting down, crashed, or ended the session (pg_terminate_backend).
    return code == "" or code.startswith(("08", "57P"))
