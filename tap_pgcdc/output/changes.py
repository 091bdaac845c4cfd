"""The read loop's sink on the Singer side: decoded changes become records of their streams.

`StreamSink` implements `tap_pgcdc.replication.sink.Sink`: it routes each Relation message to the
stream of its table (adopting a changed table shape with a new SCHEMA), and writes STATE with the
bookmarks the loop advanced. `ChangeTarget` is one routed relation: it writes the records of its
inserts, updates and deletes (straight from the tuple bytes where it can, see
`tap_pgcdc.output.records`), reads values the log did not carry by key (in batches, holding the
stream's records in order: `tap_pgcdc.output.readback`), and turns TRUNCATE into a new table
version. `log_reader` builds the sink and the loop for one log read.
"""

from __future__ import annotations

import functools
import logging
import time
import typing as t
from dataclasses import dataclass

from tap_pgcdc.output.fields import SDC_DELETED_AT, SDC_LSN
from tap_pgcdc.output.readback import HeldChanges, read_back
from tap_pgcdc.output.records import record_lines
from tap_pgcdc.output.relations import RelationPlan
from tap_pgcdc.output.shapes import adopt, same_shape, unknown_types
from tap_pgcdc.pg.catalog import load_table, resolve_types
from tap_pgcdc.pg.wal import current_wal_lsn
from tap_pgcdc.replication.reader import ReadLoop

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import psycopg2.extensions

    from tap_pgcdc.replication.messages import Begin, Delete, Insert, Relation, TupleData, Update
    from tap_pgcdc.replication.protocol import Frame
    from tap_pgcdc.replication.reader import ReaderSettings, Transport
    from tap_pgcdc.replication.sink import MessageSink
    from tap_pgcdc.streams import PgCdcStream


def log_reader(
    *,
    transport: Transport,
    streams: Sequence[PgCdcStream],
    lookup_conn: psycopg2.extensions.connection,
    write_state: Callable[[], None],
    settings: ReaderSettings,
    logger: logging.Logger | None = None,
    clock: Callable[[], float] = time.monotonic,
    messages: MessageSink | None = None,
) -> ReadLoop:
    """The read loop for one log read, writing the changes as records of `streams`.

    Args:
        transport: The replication stream, started at the lowest bookmark of `streams`.
        streams: The log-based streams, bound to their tables, bookmarks set.
        lookup_conn: An autocommit connection for type names, values the log did not carry,
            and the server's WAL position.
        write_state: Writes the tap's STATE (the streams' bookmarks already updated).
        settings: The read's confirmation, timing and stop settings.
        logger: Where the read's lines go.
        clock: Monotonic seconds.
        messages: Where logical decoding messages go (`output.messages.MessageTarget`), if
            the messages stream is read.

    Returns:
        The loop; call its `run(stop_lsn=...)`.
    """
    log = logger or logging.getLogger(ReadLoop.__module__)
    sink = StreamSink(streams=streams, lookup_conn=lookup_conn, write_state=write_state, logger=log)
    return ReadLoop(
        transport=transport,
        sink=sink,
        positions=sink.positions(),
        settings=settings,
        server_lsn=functools.partial(current_wal_lsn, lookup_conn),
        logger=log,
        clock=clock,
        messages=messages,
    )


class StreamSink:
    """Routes relations to streams and writes their STATE (a `replication.sink.Sink`).

    Args:
        streams: The log-based streams, bound to their tables.
        lookup_conn: An autocommit connection for type names and values the log did not carry.
        write_state: Writes the tap's STATE.
        logger: Where schema changes and warnings are logged.
    """

    def __init__(
        self,
        *,
        streams: Sequence[PgCdcStream],
        lookup_conn: psycopg2.extensions.connection,
        write_state: Callable[[], None],
        logger: logging.Logger,
    ) -> None:
        self.streams = {(s.table.schema, s.table.name): s for s in streams}
        self.lookup_conn = lookup_conn
        self.logger = logger
        self._by_name = {s.name: s for s in streams}
        self._write_state = write_state
        self._warned: set[str] = set()
        self._held: dict[str, HeldChanges] = {}

    def positions(self) -> dict[str, int]:
        """Every stream's bookmark as an int (0: none), for the loop to skip by."""
        return {s.name: s.log_position or 0 for s in self.streams.values()}

    def write_state(self, advanced: Mapping[str, int]) -> None:
        """Move the advanced streams' bookmarks, then write STATE (after every held record)."""
        self.commit()
        for name, lsn in advanced.items():
            self._by_name[name].set_log_position(lsn)
        self._write_state()

    def relation(self, message: Relation) -> ChangeTarget | None:
        """Route a relation to its table's stream; adopt a changed shape with a new SCHEMA.

        A changed shape costs one catalog lookup of the table (by the message's OID) and the
        resolution of its new types: once per Relation message, never per row.
        """
        stream = self.streams.get((message.namespace, message.name))
        if stream is None or stream.table.oid != message.relation_id:
            # Another table of that name: one dropped since, whose changes come before the
            # stream's position, or one created during the run, which the shape check after
            # the read snapshots (see Run._after_read).
            return None
        # Deselected columns a publication's column list leaves out (PG15+) are no difference.
        left_out = stream.deselected_columns() - {col.name for col in message.columns}
        if not same_shape(message, stream.table, left_out):
            # Held records were built with the old shape: they go before the new SCHEMA.
            self.held(stream).flush()
            current = load_table(self.lookup_conn, message.relation_id)
            wanted = unknown_types(message, stream.table, current)
            types = resolve_types(self.lookup_conn, wanted) if wanted else {}
            new_table = adopt(
                message,
                stream.table,
                current,
                types,
                self._format_types,
                stream.catalog_key,
                left_out,
            )
            self.logger.info("Schema of %s changed in the log; sending a new SCHEMA.", stream.name)
            stream.replace_schema(new_table)
        table = stream.table
        sent = {col.name for col in message.columns}
        plan = RelationPlan.build(
            message,
            [stream.converter_for(col.name) for col in message.columns],
            table.key,
            [col.name for col in table.columns if col.name not in sent | left_out],
        )
        return ChangeTarget(
            stream_name=stream.name, stream=stream, plan=plan, sink=self, held=self.held(stream)
        )

    def _format_types(self, pairs: Sequence[tuple[int, int]]) -> dict[tuple[int, int], str]:
        with self.lookup_conn.cursor() as cur:
            cur.execute(
                "SELECT o, m, pg_catalog.format_type(o, m) FROM unnest(%s::oid[], %s::int[]) "
                "AS p(o, m)",
                ([oid for oid, _ in pairs], [mod for _, mod in pairs]),
            )
            return {(int(o), int(m)): str(name) for o, m, name in cur.fetchall()}

    def held(self, stream: PgCdcStream) -> HeldChanges:
        """The stream's records held for values read back by key (one object per stream)."""
        held = self._held.get(stream.name)
        if held is None:
            held = HeldChanges(
                functools.partial(read_back, self.lookup_conn, stream),
                functools.partial(_write_change, stream),
            )
            self._held[stream.name] = held
        return held

    def commit(self) -> None:
        """The open transaction committed: write every record still held (see `readback`)."""
        for held in self._held.values():
            held.flush()

    def hold(
        self,
        stream: PgCdcStream,
        record: dict[str, t.Any],
        begin: Begin,
        missing: list[str],
        key_raw: tuple[t.Any, ...],
        size: int,
    ) -> None:
        """Write a record whose `missing` values the log did not send, once they are read by key.

        The current value may be newer than this change; that converges, because every later
        change to the row is in the log after this one. If the row is gone, the columns are left
        out of the record (never set to NULL): its delete follows later in the log.
        """
        held = self.held(stream)
        table = stream.table
        if (
            not table.key
            or len(key_raw) != len(table.key)
            or not all(isinstance(v, str) for v in key_raw)
        ):
            if stream.name not in self._warned:
                self._warned.add(stream.name)
                # A run refuses such a table as LOG_BASED (replication/identity.py); this is a
                # table that changed while the log was read.
                self.logger.warning(
                    "%s: the log did not carry %s, and they cannot be read by key (%s has no "
                    "key, or its key is among them): the records lack them. Fix: give %s a "
                    "primary key of columns that are not generated, or on PostgreSQL 18 publish "
                    "them (publish_generated_columns = stored); then run --discover again.",
                    stream.name,
                    ", ".join(missing),
                    table.quoted_name,
                    table.quoted_name,
                )
            held.add(record, begin)
            return
        held.add(record, begin, missing=missing, key=key_raw, size=size)


@dataclass(frozen=True, slots=True, eq=False)
class ChangeTarget:
    """One routed relation: writes its changes as records of its stream (a `RelationSink`)."""

    stream_name: str  # the stream's name, which the loop skips transactions by
    stream: PgCdcStream  # where the records go
    plan: RelationPlan  # how the relation's tuples become records
    sink: StreamSink  # reads what the log did not carry
    held: HeldChanges  # the stream's records waiting for values read back (see `readback`)

    def change(self, frame: Frame, pos: int, begin: Begin, *, deleted: bool, key: bool) -> bool:
        """Write the record from the tuple's bytes; False if it needs the general path.

        The general path is needed for a stream on the SDK's record path, a relation with
        columns the log never carries, while records of the stream are held (they keep their
        order), and whatever `RecordLines.tuple_line` declines.
        """
        lines = record_lines(self.stream)
        plan = self.plan
        if lines is None or plan.not_sent or self.held.holding:
            return False
        return lines.tuple_line(plan, frame, pos, begin, deleted=deleted, key=key)

    def insert(self, message: Insert, begin: Begin) -> int:
        """Write the inserted row's record; returns 1."""
        plan = self.plan
        if self._tuple(message.new, begin, deleted=False, key=False):
            return 1
        record, missing = plan.row(message.new)
        self._write_new(record, missing, message.new, begin)
        return 1

    def update(self, message: Update, begin: Begin) -> int:
        """Write the updated row's record, after its old key's deletion if the key changed."""
        plan = self.plan
        written = 0
        old = message.old
        if old is not None and plan.key_positions:
            old_key = plan.key_text(old)
            if old_key != plan.key_text(message.new):
                # The key changed: the old row is gone under its old key.
                old_record = plan.old_row(old, message.old_kind or "K")
                self._write(old_record, begin, deleted=True, values=old)
                written += 1
        elif old is not None and message.old_kind == "O":
            # A table without key under REPLICA IDENTITY FULL: the row is known only by all its
            # values, so the update is the old row's deletion, then the new row.
            self._write(plan.old_row(old, "O"), begin, deleted=True, values=old)
            written += 1
        if self._tuple(message.new, begin, deleted=False, key=False):
            return written + 1
        full_old = old if message.old_kind == "O" else None
        record, missing = plan.row(message.new, full_old)
        self._write_new(record, missing, message.new, begin)
        return written + 1

    def delete(self, message: Delete, begin: Begin) -> int:
        """Write the deleted row's record (its key, or the whole old row); returns 1."""
        key = message.old_kind == "K"
        if self._tuple(message.old, begin, deleted=True, key=key):
            return 1
        record = self.plan.old_row(message.old, message.old_kind)
        self._write(record, begin, deleted=True, values=message.old)
        return 1

    def truncate(self, begin: Begin, lsn: int) -> None:
        """TRUNCATE: the stream's rows are replaced by what follows (a new table version).

        The version is the TRUNCATE record's own LSN (see `Sink.truncate`), so a second
        TRUNCATE in the same transaction also drops the rows written between the two.
        """
        del begin  # the version does not depend on the transaction: see above
        self.held.flush()  # the records before it belong to the old version
        self.stream.truncate(lsn)

    def _tuple(self, values: TupleData, begin: Begin, *, deleted: bool, key: bool) -> bool:
        """Write a decoded tuple's record on the fast path, if the stream has one and it is whole.

        False (nothing written) when the record needs the dict path: the SDK's path, values the
        server did not send (unchanged TOAST), columns the log never carries (generated).
        """
        lines = record_lines(self.stream)
        plan = self.plan
        if lines is None or plan.not_sent or self.held.holding:
            return False
        return lines.change_line(plan, values, begin, deleted=deleted, key=key)

    def _write_new(
        self, record: dict[str, t.Any], missing: list[str], values: TupleData, begin: Begin
    ) -> None:
        """Write a new row's record, once its `missing` values are read back by key."""
        if missing:
            key = self.plan.key_text(values)
            self.sink.hold(self.stream, record, begin, missing, key, _text_size(values))
        else:
            self._write(record, begin, deleted=False, values=values)

    def _write(
        self, record: dict[str, t.Any], begin: Begin, *, deleted: bool, values: TupleData
    ) -> None:
        """Write a change record built as a dict, behind the stream's held records if any."""
        held = self.held
        held.add(record, begin, deleted=deleted, size=_text_size(values) if held.holding else 0)


def _write_change(
    stream: PgCdcStream, record: dict[str, t.Any], begin: Begin, deleted: bool
) -> None:
    """Write a change record built as a dict, its metadata set here (see `_meta`)."""
    _meta(record, begin, deleted=deleted)
    lines = record_lines(stream)
    if lines is None:
        stream.write_record(record)
    else:
        lines.dict_line(record, begin)


def _text_size(values: TupleData) -> int:
    """About how much text a tuple holds (for the held records' byte budget)."""
    return sum(len(v) for v in values if isinstance(v, str))


def _meta(record: dict[str, t.Any], begin: Begin, *, deleted: bool) -> dict[str, t.Any]:
    """The change's metadata columns: its transaction's commit LSN, and deletion time."""
    record[SDC_LSN] = begin.final_lsn
    record[SDC_DELETED_AT] = begin.commit_time.isoformat() if deleted else None
    return record
