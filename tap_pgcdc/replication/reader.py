"""The log read loop: one pass over the slot, changes routed to their streams, STATE at commits.

Why no change can be lost, whatever happens to the target:
- The only position this run confirms to the slot is `confirm_lsn`, the lowest bookmark of the
  input state, i.e. what the target already stored. Postgres keeps every transaction that
  commits at or after it, so if the target dies before storing anything we emit now, the next
  run (given the same old state) receives the same transactions again.
- A bookmark is only advanced to the end LSN of a transaction whose records have all been
  written before the STATE that carries it (or, between transactions, to a keepalive's WAL end:
  every transaction that committed before it has been sent before the keepalive). So a state the
  target stores never claims a change the target has not received.
- On resume, a stream skips a transaction only if it committed before its bookmark. Replayed
  changes converge because records are upserts by key.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import time
import typing as t
from dataclasses import dataclass, field

from tap_pgcdc import connector as pgconn
from tap_pgcdc import emit
from tap_pgcdc.connector import SDC_DELETED_AT, SDC_LSN, ColumnInfo
from tap_pgcdc.pg.casters import raw_text_casters
from tap_pgcdc.pg.lsn import format_lsn, parse_lsn
from tap_pgcdc.pg.quoting import quote_ident
from tap_pgcdc.progress import LogProgress
from tap_pgcdc.replication.decoder import decode
from tap_pgcdc.replication.messages import (
    Begin,
    Commit,
    Delete,
    Insert,
    Relation,
    Truncate,
    Update,
)
from tap_pgcdc.replication.relations import RelationPlan
from tap_pgcdc.replication.transport import (
    KEEPALIVE,
    XLOGDATA,
    XLOGDATA_HEADER_SIZE,
    parse_keepalive,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import psycopg2.extensions

    from tap_pgcdc.replication.messages import TupleData
    from tap_pgcdc.streams import PgCdcStream


# Insert, Update and Delete as the fast path reads them: type, relation OID, tuple marker.
_CHANGE_TYPES = frozenset(b"IUD")
_DELETE = ord("D")
_NEW, _KEY, _OLD = ord("N"), ord("K"), ord("O")
_CHANGE_HEADER = struct.Struct(">IB")  # relation OID, tuple marker (after the type byte)
_CHANGE_TUPLE_AT = XLOGDATA_HEADER_SIZE + 1 + _CHANGE_HEADER.size


class Transport(t.Protocol):
    """What the reader needs from a replication stream (a fake in tests)."""

    def read(self, timeout: float) -> bytes | None: ...

    def send_status(self, *, flush_lsn: int, reply: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class ReaderSettings:
    confirm_lsn: int  # the one position this run confirms to the slot (0: none)
    max_run_seconds: float | None = None
    state_interval_seconds: float = 5.0
    status_interval_seconds: float = 10.0  # well under wal_sender_timeout (60 s by default)
    idle_poll_seconds: float = 0.5


@dataclass(slots=True)
class ReadSummary:
    transactions: int = 0
    records: int = 0
    position: int = 0
    stopped: str = ""
    per_stream: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"{self.transactions} transactions, {self.records} records, "
            f"position {format_lsn(self.position)}, stopped: {self.stopped}"
        )


class LogReader:
    """Reads decoded pgoutput changes and writes records and state through the streams."""

    def __init__(
        self,
        *,
        transport: Transport,
        streams: Sequence[PgCdcStream],
        lookup_conn: psycopg2.extensions.connection,
        write_state: Callable[[], None],
        settings: ReaderSettings,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.streams = {(s.table.schema, s.table.name): s for s in streams}
        self.lookup_conn = lookup_conn
        self.write_state = write_state
        self.settings = settings
        self.logger = logger or logging.getLogger(__name__)
        self.clock = clock
        self.progress = LogProgress(self.logger, clock=clock)
        self.plans: dict[int, tuple[PgCdcStream, RelationPlan] | None] = {}
        # Every stream's bookmark as an int; transactions that committed before it are skipped.
        self.positions: dict[str, int] = {s.name: s.log_position or 0 for s in streams}
        self.summary = ReadSummary(position=min(self.positions.values(), default=0))
        self._start = self.summary.position
        self._begin: Begin | None = None
        self._skip: frozenset[str] = frozenset()
        self._dirty = False
        self._warned: set[str] = set()

    # --- the loop ---------------------------------------------------------------------------

    def run(self, *, stop_lsn: int) -> ReadSummary:
        """Read until past `stop_lsn` (or out of time) at a transaction boundary."""
        settings = self.settings
        transport = self.transport
        started = self.clock()
        deadline = started + settings.max_run_seconds if settings.max_run_seconds else None
        # The one confirmation this run makes: what the target stored (see module docstring).
        transport.send_status(flush_lsn=settings.confirm_lsn)
        last_status = last_state = started
        waiting_reply = False
        while True:
            raw = transport.read(settings.idle_poll_seconds)
            now = self.clock()
            if now - last_status >= settings.status_interval_seconds:
                transport.send_status(flush_lsn=settings.confirm_lsn)
                last_status = now
            if raw is None:
                if self._begin is None:
                    if deadline is not None and now >= deadline:
                        return self._finish("max_run_seconds reached")
                    if not waiting_reply:
                        # Idle: ask the server where it is; the keepalive answer tells us
                        # whether we have passed stop_lsn.
                        transport.send_status(flush_lsn=settings.confirm_lsn, reply=True)
                        last_status = now
                        waiting_reply = True
                continue
            waiting_reply = False
            kind = raw[0]
            if kind == KEEPALIVE:
                wal_end, _, reply = parse_keepalive(raw)
                if reply:
                    transport.send_status(flush_lsn=settings.confirm_lsn)
                    last_status = now
                if self._begin is None:
                    # Between transactions, everything committed before wal_end has been sent.
                    self._advance(wal_end)
                    if self.progress.due():
                        self._report()
                    if wal_end >= stop_lsn:
                        return self._finish("caught up")
                    if deadline is not None and now >= deadline:
                        return self._finish("max_run_seconds reached")
                    if now - last_state >= settings.state_interval_seconds:
                        self._emit_state()
                        last_state = now
                continue
            if kind != XLOGDATA:
                continue
            if self._change(raw):
                continue
            message = decode(memoryview(raw)[XLOGDATA_HEADER_SIZE:])
            if isinstance(message, Commit):
                self._commit(message)
                if self.progress.due():
                    self._report()
                if message.end_lsn >= stop_lsn:
                    return self._finish("caught up")
                if deadline is not None and now >= deadline:
                    return self._finish("max_run_seconds reached")
                if now - last_state >= settings.state_interval_seconds:
                    self._emit_state()
                    last_state = now
            else:
                self._handle(message)

    def _finish(self, reason: str) -> ReadSummary:
        self._emit_state(force=True)
        self.summary.stopped = reason
        summary = self.summary
        self.logger.info(
            "Log read (%s): %s.",
            reason,
            self.progress.summary(
                start=self._start,
                position=summary.position,
                server_lsn=self._server_lsn(),
                transactions=summary.transactions,
                records=summary.records,
            ),
        )
        return summary

    # --- progress -----------------------------------------------------------------------------

    def _report(self) -> None:
        """A progress line: position, bytes behind the server, rates (every 30 s)."""
        summary = self.summary
        self.progress.log(
            position=summary.position,
            server_lsn=self._server_lsn(),
            transactions=summary.transactions,
            records=summary.records,
        )

    def _server_lsn(self) -> int:
        """The server's current WAL position (replayed position on a standby)."""
        with self.lookup_conn.cursor() as cur:
            cur.execute(
                "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
                " ELSE pg_current_wal_lsn() END)::text"
            )
            row = cur.fetchone()
        return parse_lsn(row[0]) if row and row[0] else 0

    # --- positions and state ----------------------------------------------------------------

    def _advance(self, lsn: int) -> None:
        if lsn > self.summary.position:
            self.summary.position = lsn
            self._dirty = True

    def _emit_state(self, *, force: bool = False) -> None:
        """Write STATE with every stream at the last transaction boundary reached."""
        if not self._dirty and not force:
            return
        position = self.summary.position
        for stream in self.streams.values():
            current = self.positions[stream.name]
            if position > current:
                self.positions[stream.name] = position
                stream.set_log_position(position)
        self.write_state()
        self._dirty = False

    # --- messages ---------------------------------------------------------------------------

    def _handle(self, message: object) -> None:
        if isinstance(message, Begin):
            self._begin = message
            final = message.final_lsn
            self._skip = frozenset(name for name, pos in self.positions.items() if final < pos)
        elif isinstance(message, Insert):
            self._insert(message)
        elif isinstance(message, Update):
            self._update(message)
        elif isinstance(message, Delete):
            self._delete(message)
        elif isinstance(message, Relation):
            self._relation(message)
        elif isinstance(message, Truncate):
            self._truncate(message)
        # Origin, Type and logical decoding messages carry nothing a record needs.

    def _commit(self, message: Commit) -> None:
        self._begin = None
        self.summary.transactions += 1
        self._advance(message.end_lsn)

    def _route(self, relation_id: int) -> tuple[PgCdcStream, RelationPlan] | None:
        routed = self.plans.get(relation_id)
        if routed is None:
            return None
        stream = routed[0]
        if stream.name in self._skip:
            return None
        return routed

    def _change(self, raw: bytes) -> bool:
        """Write an Insert, Update or Delete straight from the XLogData bytes, if it can be.

        The common changes take this path: their record is rendered from the tuple's bytes
        (`decoder.tuple_renderer`), as the general path would build and write it. False, with
        nothing done, for every other message and for changes that need the general path: a
        stream on the SDK's path, an Update carrying an old row (a key change is possible),
        values the server did not send, malformed data (which `decode` then reports).
        """
        if len(raw) < _CHANGE_TUPLE_AT or raw[XLOGDATA_HEADER_SIZE] not in _CHANGE_TYPES:
            return False
        relation_id, marker = _CHANGE_HEADER.unpack_from(raw, XLOGDATA_HEADER_SIZE + 1)
        routed = self._route(relation_id)
        begin = self._begin
        if routed is None or begin is None:
            return False
        stream, plan = routed
        lines = emit.record_lines(stream)
        if lines is None or plan.not_sent:
            return False
        if raw[XLOGDATA_HEADER_SIZE] == _DELETE:
            if marker not in (_KEY, _OLD):
                return False
            deleted, key = True, marker == _KEY
        elif marker == _NEW:  # an Insert, or an Update without old row
            deleted = key = False
        else:
            return False
        if not lines.tuple_line(plan, raw, _CHANGE_TUPLE_AT, begin, deleted=deleted, key=key):
            return False
        self._count(stream)
        return True

    def _write(self, stream: PgCdcStream, record: dict[str, t.Any]) -> None:
        """Write a change record built as a dict, its metadata set (see `_meta`)."""
        lines = emit.record_lines(stream)
        if lines is None:
            stream.write_record(record)
        else:
            begin = self._begin
            assert begin is not None  # changes only arrive inside a transaction
            lines.dict_line(record, begin)
        self._count(stream)

    def _write_tuple(
        self,
        stream: PgCdcStream,
        plan: RelationPlan,
        values: TupleData,
        *,
        deleted: bool,
        key: bool,
    ) -> bool:
        """Write a tuple's record on the fast path, if the stream has one and the tuple is whole.

        False (nothing written) when the record needs the dict path: the SDK's path, values the
        server did not send (unchanged TOAST), columns the log never carries (generated).
        """
        lines = emit.record_lines(stream)
        if lines is None or plan.not_sent:
            return False
        begin = self._begin
        assert begin is not None  # changes only arrive inside a transaction
        if not lines.change_line(plan, values, begin, deleted=deleted, key=key):
            return False
        self._count(stream)
        return True

    def _count(self, stream: PgCdcStream) -> None:
        self.summary.records += 1
        per = self.summary.per_stream
        per[stream.name] = per.get(stream.name, 0) + 1

    def _meta(self, record: dict[str, t.Any], *, deleted: bool) -> dict[str, t.Any]:
        begin = self._begin
        assert begin is not None  # changes only arrive inside a transaction
        record[SDC_LSN] = begin.final_lsn
        record[SDC_DELETED_AT] = begin.commit_time.isoformat() if deleted else None
        return record

    def _insert(self, message: Insert) -> None:
        routed = self._route(message.relation_id)
        if routed is None:
            return
        stream, plan = routed
        if self._write_tuple(stream, plan, message.new, deleted=False, key=False):
            return
        record, missing = plan.row(message.new)
        if missing:
            self._fill_missing(stream, plan, record, missing, plan.key_text(message.new))
        self._write(stream, self._meta(record, deleted=False))

    def _update(self, message: Update) -> None:
        routed = self._route(message.relation_id)
        if routed is None:
            return
        stream, plan = routed
        old = message.old
        if old is not None and plan.key_positions:
            old_key = plan.key_text(old)
            if old_key != plan.key_text(message.new):
                # The primary key changed: the old row is gone under its old key.
                old_record = plan.old_row(old, message.old_kind or "K")
                self._write(stream, self._meta(old_record, deleted=True))
        if self._write_tuple(stream, plan, message.new, deleted=False, key=False):
            return
        full_old = old if message.old_kind == "O" else None
        record, missing = plan.row(message.new, full_old)
        if missing:
            self._fill_missing(stream, plan, record, missing, plan.key_text(message.new))
        self._write(stream, self._meta(record, deleted=False))

    def _delete(self, message: Delete) -> None:
        routed = self._route(message.relation_id)
        if routed is None:
            return
        stream, plan = routed
        key = message.old_kind == "K"
        if self._write_tuple(stream, plan, message.old, deleted=True, key=key):
            return
        record = plan.old_row(message.old, message.old_kind)
        self._write(stream, self._meta(record, deleted=True))

    def _truncate(self, message: Truncate) -> None:
        for relation_id in message.relation_ids:
            routed = self._route(relation_id)
            if routed is None:
                continue
            stream = routed[0]
            begin = self._begin
            assert begin is not None
            stream.truncate(begin.final_lsn)

    # --- relations ----------------------------------------------------------------------------

    def _relation(self, relation: Relation) -> None:
        stream = self.streams.get((relation.namespace, relation.name))
        if stream is None:
            self.plans[relation.relation_id] = None
            return
        table = stream.table
        existing = {col.name: col for col in table.columns}
        sent = {col.name for col in relation.columns}
        columns: list[ColumnInfo] = []
        unknown_types = [
            col.type_oid
            for col in relation.columns
            if col.name not in existing or existing[col.name].type.oid != col.type_oid
        ]
        types = pgconn.resolve_types(self.lookup_conn, unknown_types) if unknown_types else {}
        changed = False
        for col in relation.columns:
            known = existing.get(col.name)
            if (
                known is not None
                and known.type.oid == col.type_oid
                and known.typmod == col.atttypmod
            ):
                columns.append(known)
                continue
            changed = True
            columns.append(
                ColumnInfo(
                    name=col.name,
                    attnum=known.attnum if known else 0,
                    type=types[col.type_oid],
                    typmod=col.atttypmod,
                    not_null=False,
                    generated=False,
                    sql_type=self._format_type(col.type_oid, col.atttypmod),
                )
            )
        # Generated columns are never in the log before PG 18: keep them, fill them by key.
        not_sent = [col for col in table.columns if col.name not in sent and col.generated]
        if any(col.name not in sent and not col.generated for col in table.columns):
            changed = True  # a column was dropped
        if changed:
            new_table = dataclasses.replace(table, columns=tuple(columns + not_sent))
            self.logger.info("Schema of %s changed in the log; sending a new SCHEMA.", stream.name)
            stream.replace_schema(new_table)
        plan = RelationPlan.build(
            relation,
            [stream.converter_for(col.name) for col in columns],
            stream.table.key,
            [col.name for col in not_sent],
        )
        self.plans[relation.relation_id] = (stream, plan)

    def _format_type(self, oid: int, typmod: int) -> str:
        with self.lookup_conn.cursor() as cur:
            cur.execute("SELECT pg_catalog.format_type(%s, %s)", (oid, typmod))
            row = cur.fetchone()
        return str(row[0]) if row else "text"

    # --- values the log did not carry --------------------------------------------------------

    def _fill_missing(
        self,
        stream: PgCdcStream,
        plan: RelationPlan,
        record: dict[str, t.Any],
        missing: list[str],
        key_raw: tuple[t.Any, ...],
    ) -> None:
        """Read values the log did not send (unchanged TOAST, generated columns) by key.

        The current value may be newer than this change; that converges, because every later
        change to the row is in the log after this one. If the row is gone, the columns are left
        out of the record (never set to NULL): its delete follows later in the log.
        """
        table = stream.table
        if (
            not table.key
            or len(key_raw) != len(table.key)
            or not all(isinstance(v, str) for v in key_raw)
        ):
            if stream.name not in self._warned:
                self._warned.add(stream.name)
                self.logger.warning(
                    "%s: values of %s were not sent by the server and the table has no primary "
                    "key to read them by; they are left out of the records. Fix: ALTER TABLE %s "
                    "REPLICA IDENTITY FULL.",
                    stream.name,
                    ", ".join(missing),
                    table.quoted_name,
                )
            return
        cols = [table.column(name) for name in missing]
        keys = [table.column(name) for name in table.key]
        sql = (
            # Identifiers are doubled-% escaped: the statement also carries %s parameters.
            f"SELECT {', '.join(_ident(c.name) for c in cols)} FROM {_pct(table.quoted_name)} "
            f"WHERE ({', '.join(_ident(k.name) for k in keys)}) = ("
            + ", ".join(f"%s::{k.sql_type}" for k in keys)
            + ")"
        )
        params = list(key_raw)
        raw_text_casters(self.lookup_conn, (c.type.oid for c in cols))
        with self.lookup_conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        if row is None:
            return
        for col, value in zip(cols, row, strict=True):
            record[col.name] = None if value is None else stream.converter_for(col.name)(value)


def _pct(sql: str) -> str:
    return sql.replace("%", "%%")


def _ident(name: str) -> str:
    return _pct(quote_ident(name))
