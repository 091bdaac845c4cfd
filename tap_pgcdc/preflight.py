"""`tap-pgcdc --test`: check everything a run needs, report every problem at once, change nothing.

A run stops at the first problem it meets, after the checks before it; someone setting the tap
up wants the whole list, each with its fix, in one go. This module asks the same questions as
a run (run.py, recovery.py, replication/), in a read-only session, and also those a run only learns
from the server's refusal (may this role create the publication? accept a replication
connection?). It creates no slot or publication and confirms nothing; the replication
connection it opens to test access is closed at once.
"""

from __future__ import annotations

import dataclasses
import typing as t
from dataclasses import dataclass, field

import psycopg2

from tap_pgcdc import checks, filters, recovery
from tap_pgcdc.errors import TapPgCdcError
from tap_pgcdc.pg.catalog import load_tables
from tap_pgcdc.pg.connect import connect
from tap_pgcdc.pg.lsn import format_lsn
from tap_pgcdc.pg.quoting import quote_ident
from tap_pgcdc.replication import server
from tap_pgcdc.replication import slot as slots
from tap_pgcdc.replication.blockers import fetch_blockers, prepared_problem
from tap_pgcdc.replication.publication import judge_publication
from tap_pgcdc.replication.publication_ops import fetch_decoding, fetch_publication
from tap_pgcdc.replication.transport import open_replication_connection
from tap_pgcdc.state import check_identity

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import psycopg2.extensions

    from tap_pgcdc.replication.publication import Decoding
    from tap_pgcdc.settings import Settings
    from tap_pgcdc.streams import PgCdcStream


@dataclass
class Report:
    """What the preflight check found: problems (each with its fix) and facts worth knowing."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what endangers later runs


def check(
    config: Mapping[str, t.Any],
    settings: Settings,
    selected_streams: Callable[[], list[PgCdcStream]],
    identity: dict[str, t.Any] | None,
) -> Report:
    """Every problem that would stop or endanger a run, with its fix.

    Args:
        config: The tap's settings as given (connection parameters).
        settings: The same, parsed.
        selected_streams: The selected streams (reading the catalog can itself fail).
        identity: The slot and cluster the input state's positions belong to.
    """
    report = Report()
    try:
        conn = connect(config)
    except TapPgCdcError as exc:
        report.problems.append(str(exc))
        return report
    try:
        # Read-only: whatever a check runs, it cannot change the database (the one exception,
        # a row filter's trial publication, is in a transaction always rolled back).
        conn.set_session(readonly=True, autocommit=True)
        _check(config, settings, selected_streams, identity, conn, report)
    finally:
        conn.close()
    return report


def _check(
    config: Mapping[str, t.Any],
    settings: Settings,
    selected_streams: Callable[[], list[PgCdcStream]],
    identity: dict[str, t.Any] | None,
    conn: psycopg2.extensions.connection,
    report: Report,
) -> None:
    info = server.fetch_server(conn)
    report.notes.append(
        f"PostgreSQL {info.version_num // 10000}.{info.version_num % 10000}, wal_level "
        f"{info.wal_level}, role {info.current_user!r}, database {info.database!r}."
    )
    # The messages setting on (its stream read only when selected): PostgreSQL 14+.
    report.problems.extend(
        str(problem) for problem in server.judge_messages(info, settings.messages)
    )
    try:
        streams = selected_streams()
    except TapPgCdcError as exc:
        report.problems.append(str(exc))
        return
    if not streams and not settings.messages:
        report.problems.append(
            "No stream is selected, so a run would replicate nothing. Fix: select tables "
            "(meltano select tap-pgcdc <schema>-<table>, or `selected: true` in the catalog)."
        )
        return
    bound = _bind_tables(conn, streams, info.current_user, report)
    report.notes.extend(checks.stale_catalog(bound))
    log_streams: list[PgCdcStream] = []
    full_streams: list[PgCdcStream] = []
    for stream in bound:
        try:
            (log_streams if stream.is_log_based else full_streams).append(stream)
        except TapPgCdcError as exc:
            report.problems.append(str(exc))
    report.notes.append(f"{len(streams)} selected stream(s), {len(log_streams)} of them LOG_BASED.")
    generated = fetch_decoding(conn, settings.publication_name, create=settings.create_publication)
    _note_tables(conn, full_streams, log_streams, generated, report)
    if not log_streams and not settings.messages:  # the messages stream reads the slot too
        return

    slot_name = settings.slot_name
    facts = slots.fetch_slot(conn, slot_name)
    existing = facts.slot
    idle_warning = checks.idle_slot_warning(info, existing, identity)
    if idle_warning is not None:
        report.warnings.append(idle_warning)
    # What DDL did since the bookmarks: a run snapshots those streams again first, so their
    # old positions and publication membership no longer matter (as in run.py).
    changed, _ = checks.shape_changes(conn, log_streams, {s.name: s.table.oid for s in log_streams})
    for name, change in changed.items():
        report.notes.append(recovery.describe_shape_change(name, change))
    lost: tuple[str, ...] = tuple(changed)
    judged = [s for s in log_streams if s.name not in changed]
    try:
        check_identity(identity, slot_name=slot_name, system_identifier=info.system_identifier)
        # Raises where a run would stop (on_slot_lost = fail); with resnapshot it names the
        # streams a run would snapshot again.
        plan = recovery.plan_slot_recovery(
            checks.slot_facts(slot_name, existing),
            checks.log_positions(judged),
            resnapshot=settings.resnapshot_on_slot_lost,
        )
        if plan.needed:
            lost = plan.lost
            report.notes.append(plan.describe(slot_missing=existing is None))
    except TapPgCdcError as exc:
        report.problems.append(str(exc))
    tables = [s.table for s in log_streams]
    publication = fetch_publication(conn, settings.publication_name, tables, rights=True)
    try:
        # As a run: judged before anything else about the publication; a stream whose filter
        # changed is snapshotted again, so its publication membership no longer matters.
        wanted = filters.plan_filters(conn, settings, bound, publication)
        publication = dataclasses.replace(publication, entries=wanted.entries)
        for name, why in wanted.changed.items():
            report.notes.append(f"Stream {name}: {why}; a run snapshots it again.")
        lost += tuple(wanted.changed)
        judged = [s for s in judged if s.name not in wanted.changed]
    except TapPgCdcError as exc:
        report.problems.append(str(exc))
    try:
        published = recovery.plan_publication_recovery(
            settings.publication_name,
            *checks.publishing(publication, judged),
            resnapshot=settings.resnapshot_on_slot_lost,
        )
        if published.needed:
            lost += published.lost
            report.notes.append(published.describe(slot_missing=False))
    except TapPgCdcError as exc:
        report.problems.append(str(exc))
    gaps = checks.generated_gaps(conn, log_streams, publication, create=settings.create_publication)
    if gaps:
        lost += tuple(gaps)
        report.notes.append(
            f"Publication {settings.publication_name!r} does not publish generated columns yet: "
            f"a run sets publish_generated_columns = stored and snapshots {', '.join(gaps)} "
            "again, whose changes already in the slot came without them."
        )
    pending = bool(lost) or any(s.needs_snapshot for s in log_streams)
    refused = server.judge_server(
        info,
        need_slots=(0 if existing else 1) + (1 if pending else 0),
        origin=settings.origin,
    )
    report.problems.extend(str(problem) for problem in refused)
    if not refused:  # else the server would refuse the connection for a reason already listed
        _check_replication_connection(config, report)

    report.problems.extend(
        str(problem)
        for problem in judge_publication(publication, create=settings.create_publication)
    )
    if existing is None or slots.invalidation(existing) is None:
        # An invalidated slot was judged by plan_slot_recovery above.
        report.problems.extend(
            str(problem)
            for problem in slots.judge_slot(
                facts, create=settings.create_slot, failover=settings.slot_failover
            )
        )
    if existing is None or pending:
        # What creating the slot (or a snapshot's temporary one) would wait for.
        _check_blockers(
            conn,
            settings,
            "the replication slot"
            if existing is None
            else "the temporary slot a snapshot is exported from",
            report,
        )
    _note_slot(conn, slot_name, existing, report)


def _note_tables(
    conn: psycopg2.extensions.connection,
    full_streams: list[PgCdcStream],
    log_streams: list[PgCdcStream],
    generated: Decoding,
    report: Report,
) -> None:
    """What each kind of table gets: refused, read in full, keyed by an index, or keyless."""
    tables = [s.table for s in log_streams]
    for name, verdicts in checks.uncapturable(conn, tables, generated).items():
        report.problems.extend(str(error) for error in checks.refuse_uncapturable({name: verdicts}))
    candidates = checks.log_based_candidates(full_streams, conn.server_version)
    for name, verdicts in checks.uncapturable(conn, candidates, generated).items():
        report.notes.append(checks.full_table_warning(name, verdicts))
    report.notes.extend(checks.stale_keys(log_streams))
    for stream in log_streams:
        table = stream.table
        if table.replica_identity == "i" and table.key != table.primary_key:
            report.notes.append(
                f"Stream {stream.name}: its key is {', '.join(table.key)}, the columns of its "
                "REPLICA IDENTITY USING INDEX (the log identifies deleted and changed rows by "
                "them), not its primary key."
            )
        elif not table.key and table.replica_identity == "f":
            report.notes.append(
                f"Stream {stream.name} has no key (REPLICA IDENTITY FULL, no primary key): a "
                "target appends its records; an UPDATE arrives as the old row's deletion "
                "(_sdc_deleted_at set) followed by the new row, so only a target that deletes "
                "by whole row keeps it exact. Fix, for an exact copy in any target: add a "
                f"primary key to {table.schema}.{table.name}."
            )


def _bind_tables(
    conn: psycopg2.extensions.connection,
    streams: list[PgCdcStream],
    user: str,
    report: Report,
) -> list[PgCdcStream]:
    """Bind each stream to its table; one problem per table that is missing or unreadable."""
    tables = {table.stream_name: table for table in load_tables(conn)}
    bound = []
    for stream in streams:
        table = tables.get(stream.name)
        if table is not None:
            stream.bind_table(table)
            try:
                with conn.cursor() as cur:  # what a snapshot reads, without reading it
                    columns = ", ".join(quote_ident(col.name) for col in table.columns)
                    cur.execute(f"SELECT {columns or 'NULL'} FROM {table.quoted_name} LIMIT 0")
            except psycopg2.Error as exc:
                report.problems.append(
                    f"Stream {stream.name}: reading {table.schema}.{table.name} fails: "
                    f"{' '.join(str(exc).split())}. Fix: GRANT SELECT ON {table.quoted_name} TO "
                    f"{quote_ident(user)}; or deselect the stream."
                )
                continue
            bound.append(stream)
            continue
        qualified = f"{quote_ident(stream.schema_name)}.{quote_ident(stream.table_name)}"
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_catalog.has_table_privilege(c.oid, 'SELECT'), "
                "pg_catalog.has_schema_privilege(c.relnamespace, 'USAGE') "
                "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                (stream.schema_name, stream.table_name),
            )
            row = cur.fetchone()
        role = quote_ident(user)
        if row is None:
            report.problems.append(
                f"Stream {stream.name}: table {stream.schema_name}.{stream.table_name} does not "
                "exist. Fix: run --discover again and update the selection (it was dropped or "
                "renamed), or deselect the stream."
            )
        elif not row[0] or not row[1]:
            grants = f"GRANT SELECT ON {qualified} TO {role};"
            if not row[1]:
                grants = (
                    f"GRANT USAGE ON SCHEMA {quote_ident(stream.schema_name)} TO {role}; {grants}"
                )
            report.problems.append(
                f"Stream {stream.name}: role {user!r} may not read table "
                f"{stream.schema_name}.{stream.table_name}. Fix: {grants} or deselect the stream."
            )
        else:
            report.problems.append(
                f"Stream {stream.name}: table {stream.schema_name}.{stream.table_name} is outside "
                "filter_schemas / filter_tables. Fix: widen those settings or deselect the stream."
            )
    return bound


def _check_blockers(
    conn: psycopg2.extensions.connection, settings: Settings, what: str, report: Report
) -> None:
    blockers = fetch_blockers(conn)
    limit = settings.slot_wait_seconds
    problem = prepared_problem(what, blockers.prepared, waited=limit, limit=limit)
    if problem is not None:
        report.problems.append(str(problem))
    if blockers.open:
        report.notes.append(
            f"Creating {what} will wait for the transactions open now to end: "
            + "; ".join(str(item) for item in blockers.open)
            + "."
        )


def _check_replication_connection(config: Mapping[str, t.Any], report: Report) -> None:
    """Open (and close) a replication connection: pg_hba.conf needs a `replication` entry."""
    try:
        conn = open_replication_connection(config)
    except TapPgCdcError as exc:
        report.problems.append(f"The replication connection was refused: {exc}")
        return
    conn.close()


def _note_slot(
    conn: psycopg2.extensions.connection,
    slot_name: str,
    slot: slots.SlotInfo | None,
    report: Report,
) -> None:
    if slot is None:
        report.notes.append(f"Slot {slot_name}: does not exist yet.")
        return
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_catalog.pg_size_pretty(pg_catalog.pg_wal_lsn_diff("
            "pg_catalog.pg_current_wal_lsn(), restart_lsn)) "
            "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
            (slot.name,),
        )
        row = cur.fetchone()
    retained = row[0] if row and row[0] else "unknown"
    confirmed = format_lsn(slot.confirmed_flush_lsn) if slot.confirmed_flush_lsn else "none"
    report.notes.append(
        f"Slot {slot.name}: confirmed up to {confirmed}, holding {retained} of WAL, "
        f"wal_status {slot.wal_status or 'n/a'}."
    )
    if slot.wal_status == "unreserved":
        report.notes.append(
            f"Warning: slot {slot.name} is about to lose WAL it needs (wal_status = unreserved): "
            "run the tap now, and more often, or raise max_slot_wal_keep_size."
        )
