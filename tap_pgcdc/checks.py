"""Facts about the selected streams, gathered for the judgements the run and `--test` share.

Each function here turns what the server and the catalog say about the selected streams into
the facts or verdicts `run.py` acts on and `preflight.py` reports: which tables exist, which
cannot be captured from the log and why, whose catalog key is stale, and the slot's, bookmarks'
and publication's facts that `recovery` judges.
"""

from __future__ import annotations

import dataclasses
import typing as t

from tap_pgcdc import recovery
from tap_pgcdc.errors import ConfigError
from tap_pgcdc.pg.catalog import (
    PUBLISH_PARTITION_ROOT_SINCE,
    RELKIND_PARTITIONED,
    load_tables,
    stream_id,
)
from tap_pgcdc.pg.shape import fetch_shapes, rows_predate_attach
from tap_pgcdc.replication import idle
from tap_pgcdc.replication import slot as slots
from tap_pgcdc.replication.identity import (
    Uncapturable,
    by_table,
    fetch_replica_identities,
    judge_replica_identity,
)
from tap_pgcdc.replication.publication import decoding, membership, needs_generated_option
from tap_pgcdc.replication.publication_ops import fetch_publication
from tap_pgcdc.state import (
    PUBLICATION_KEY,
    last_run_time,
    publication_record,
    recorded_publication,
    recorded_shape,
)

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import psycopg2.extensions

    from tap_pgcdc.pg.catalog import TableInfo
    from tap_pgcdc.pg.shape import TableShape
    from tap_pgcdc.replication.publication import Decoding, PublicationFacts
    from tap_pgcdc.replication.server import ServerInfo
    from tap_pgcdc.streams import PgCdcStream


def bind_tables(control: psycopg2.extensions.connection, streams: Sequence[PgCdcStream]) -> None:
    """Attach each stream to its live table; a stream whose table is gone is an error."""
    tables = {tbl.stream_name: tbl for tbl in load_tables(control)}
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


def uncapturable(
    control: psycopg2.extensions.connection, tables: Sequence[TableInfo], decoding: Decoding
) -> dict[str, list[Uncapturable]]:
    """The tables whose changes the log cannot carry or identify, by stream id, with why."""
    if not tables:
        return {}
    verdicts = judge_replica_identity(fetch_replica_identities(control, tables), decoding)
    return {stream_id(*top): found for top, found in by_table(verdicts).items()}


def generated_gaps(
    control: psycopg2.extensions.connection,
    streams: Sequence[PgCdcStream],
    facts: PublicationFacts,
    *,
    create: bool,
) -> list[str]:
    """The LOG_BASED streams whose changes in the slot lack generated values for good.

    A managed publication on PostgreSQL 18 that does not publish generated columns yet is set
    to, but pgoutput reads the option as the catalog was when each change was made: the changes
    already in the slot come without them. The tap reads them by key, except for the tables that
    only the option makes capturable (no key under REPLICA IDENTITY FULL, a generated key): those
    streams, if they have a position, must be snapshotted again.
    """
    publication = facts.publication
    if (
        not create
        or publication is None
        or not needs_generated_option(publication.info, facts.server_version)
    ):
        return []
    tables = [s.table for s in streams if s.log_position is not None]
    now = decoding(facts, create=create)
    before = dataclasses.replace(now, publishes_generated=False)
    return sorted(
        set(uncapturable(control, tables, before)) - set(uncapturable(control, tables, now))
    )


def refuse_uncapturable(found: Mapping[str, Sequence[Uncapturable]]) -> list[ConfigError]:
    """The LOG_BASED streams whose tables cannot be captured: one sentence per table, with fixes.

    One error for all of them, so that a run names every table to fix at once.
    """
    sentences = [
        verdict.sentence(
            opening=f"Stream {stream} is LOG_BASED, but ",
            alternative=f"; or set replication-method FULL_TABLE for stream {stream}",
        )
        for stream, verdicts in found.items()
        for verdict in verdicts
    ]
    return [ConfigError(" ".join(sentences))] if sentences else []


def log_based_candidates(
    full_streams: Sequence[PgCdcStream], server_version: int
) -> list[TableInfo]:
    """The tables of FULL_TABLE streams that could be LOG_BASED once fixed.

    Not views, nor partitioned tables on PostgreSQL 12 (which cannot publish them).
    """
    return [
        s.table
        for s in full_streams
        if not s.table.is_view
        and (s.table.kind != RELKIND_PARTITIONED or server_version >= PUBLISH_PARTITION_ROOT_SINCE)
    ]


def full_table_warning(stream: str, verdicts: Sequence[Uncapturable]) -> str:
    """What a FULL_TABLE stream that cannot be LOG_BASED is told each run: how to change that."""
    fixes = "; ".join(verdict.fix for verdict in verdicts)
    why = "; ".join(f"{verdict.display}: {verdict.why}" for verdict in verdicts)
    return (
        f"Stream {stream} is read in full every run (FULL_TABLE), because its changes cannot be "
        f"captured from the log ({why}). To make it LOG_BASED: {fixes}; then set its "
        "replication-method to LOG_BASED (or run --discover again)."
    )


def stale_keys(streams: Sequence[PgCdcStream]) -> list[str]:
    """A warning per LOG_BASED stream whose catalog key is not what the log identifies rows by.

    A delete or key change carries only the replica identity's columns (`TableInfo.key`): a
    target keyed otherwise cannot apply it. A catalog discovered before the table's identity
    changed (or edited) has such a key.
    """
    return [
        f"Stream {stream.name}: its key_properties ({', '.join(stream.primary_keys) or 'none'}) "
        f"are not the columns the log identifies its rows by "
        f"({', '.join(stream.table.key) or 'none'}), so a target cannot apply its deletes and "
        "key changes. Fix: run --discover again (or set its table-key-properties to those "
        "columns)."
        for stream in streams
        if stream.is_log_based and list(stream.primary_keys or ()) != list(stream.table.key)
    ]


def stale_catalog(streams: Sequence[PgCdcStream]) -> list[str]:
    """A warning per stream whose catalog describes a column's type or the key no longer true.

    The run sends the live types and key instead (`catalog_fit`, applied when the stream is
    bound); the warning says so and how to refresh the catalog.
    """
    return [
        sentence
        for stream in streams
        if stream.catalog_fit is not None
        for sentence in stream.catalog_fit.sentences()
    ]


def slot_facts(slot_name: str, existing: slots.SlotInfo | None) -> recovery.SlotFacts:
    """The facts `recovery` judges, from the slot's row (None: no such slot)."""
    if existing is None:
        return recovery.SlotFacts(name=slot_name, exists=False)
    return recovery.SlotFacts(
        name=slot_name,
        exists=True,
        confirmed_flush_lsn=existing.confirmed_flush_lsn,
        invalidation=slots.invalidation(existing),
        prevention=slots.idle_prevention(existing),
    )


def idle_slot_warning(
    info: ServerInfo, slot: slots.SlotInfo | None, identity: Mapping[str, t.Any] | None
) -> str | None:
    """The warning when the slot was idle for most of idle_replication_slot_timeout (PG18)."""
    if slot is None or slots.invalidation(slot) is not None:  # nothing left to lose, or lost
        return None
    since = idle.idle_seconds(info.now, last_run_time(dict(identity or {})), slot.inactive_since)
    return idle.idle_warning(slot.name, info.idle_slot_timeout, since)


def log_positions(streams: Sequence[PgCdcStream]) -> dict[str, int | None]:
    """Each stream's log bookmark (None: not snapshotted yet)."""
    return {stream.name: stream.log_position for stream in streams}


def publishing(
    facts: PublicationFacts, streams: Sequence[PgCdcStream]
) -> tuple[int | None, list[recovery.Publishing]]:
    """The publication's OID now (None: missing) and each stream's membership, then and now."""
    publication = facts.publication
    return publication.oid if publication else None, [
        recovery.Publishing(
            stream=stream.name,
            position=stream.log_position,
            recorded=recorded_publication(stream.bookmark),
            member=membership(publication, facts.catalog.get(stream.table.oid)),
        )
        for stream in streams
    ]


def shape_changes(
    conn: psycopg2.extensions.connection,
    streams: Sequence[PgCdcStream],
    oids: Mapping[str, int],
) -> tuple[dict[str, recovery.ShapeChange], dict[str, TableShape]]:
    """What DDL did to each stream's rows since its bookmark, and each table's shape now.

    Args:
        conn: An autocommit connection.
        streams: LOG_BASED streams.
        oids: The OID of each stream's table now, by stream name (a stream whose table is
            gone is left out, and the run's binding says so).

    Returns:
        The changes that need a re-snapshot, by stream (only streams with a position and a
        recorded shape are judged), and the live shape of each stream's table.
    """
    live = fetch_shapes(conn, oids.values())
    changes: dict[str, recovery.ShapeChange] = {}
    shapes: dict[str, TableShape] = {}
    for stream in streams:
        shape = live.get(oids.get(stream.name, 0))
        if shape is None:
            continue
        shapes[stream.name] = shape
        recorded = recorded_shape(stream.bookmark)
        if recorded is None or stream.log_position is None:
            continue
        change = recovery.plan_shape_recovery(recorded, shape)
        if not change.needed and change.new_leaves:
            filled = [
                leaf.name
                for leaf in change.new_leaves
                if rows_predate_attach(conn, shape.oid, stream.table.quoted_name, leaf)
            ]
            change = recovery.ShapeChange(
                reasons=tuple(f"partition {name} was attached with rows" for name in filled)
            )
        if change.needed:
            changes[stream.name] = change
    return changes, shapes


def record_publication(
    control: psycopg2.extensions.connection, name: str, log_streams: Sequence[PgCdcStream]
) -> None:
    """Keep, with each bookmark, the publication and membership its changes are read through.

    Called once the publication lists every stream's table, and every bookmark left is trusted
    (the others were marked for a re-snapshot): from here on the changes of each table are
    published, so the record is true of every position the run will write.
    """
    facts = fetch_publication(control, name, [s.table for s in log_streams])
    publication = facts.publication
    if publication is None:  # dropped again in the meantime: the next run sees it
        return
    for stream in log_streams:
        member = membership(publication, facts.catalog.get(stream.table.oid))
        if member is not None:
            stream.bookmark[PUBLICATION_KEY] = publication_record(publication.oid, member)
