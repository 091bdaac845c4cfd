"""The log read loop: one pass over the slot, changes handed to a sink, STATE at commits.

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

The loop does no I/O of its own: frames come from a `Transport`, what the changes become is a
`tap_pgcdc.replication.sink.Sink`'s business, and the clock and the server's WAL position are
injected, so tests drive it with fakes.
"""

from __future__ import annotations

import logging
import struct
import time
import typing as t
from collections import defaultdict
from dataclasses import dataclass, field

from tap_pgcdc.errors import ProtocolError
from tap_pgcdc.pg.lsn import format_lsn
from tap_pgcdc.replication.decoder import decode
from tap_pgcdc.replication.messages import (
    MESSAGE_FLAG_TRANSACTIONAL,
    TUPLE_KEY,
    TUPLE_NEW,
    TUPLE_OLD,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalDecodingMessage,
    Relation,
    Truncate,
    Update,
)
from tap_pgcdc.replication.progress import LogProgress
from tap_pgcdc.replication.protocol import (
    KEEPALIVE,
    XLOGDATA,
    XLOGDATA_HEADER_SIZE,
    Frame,
    parse_keepalive,
    xlogdata_start,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from tap_pgcdc.replication.sink import MessageSink, RelationSink, Sink


# Insert, Update and Delete as the fast path reads them: type, relation OID, tuple marker.
_CHANGE_TYPES = frozenset(b"IUD")
_DELETE = ord("D")
_OLD_MARKERS = (TUPLE_KEY, TUPLE_OLD)
_CHANGE_HEADER = struct.Struct(">IB")  # relation OID, tuple marker (after the type byte)
_CHANGE_TUPLE_AT = XLOGDATA_HEADER_SIZE + 1 + _CHANGE_HEADER.size

CAUGHT_UP = "caught up"
"""`ReadSummary.stopped` when the read reached the stop position."""

OUT_OF_TIME = "max_run_seconds reached"
"""`ReadSummary.stopped` when the read ran out of time."""


class Transport(t.Protocol):
    """What the loop needs from a replication stream (`replication.transport`, or a fake)."""

    def read(self, timeout: float) -> Frame | None:
        """The next CopyData frame, or None if none arrived within `timeout` seconds."""
        ...

    def send_status(self, *, flush_lsn: int, reply: bool = False) -> None:
        """Send a standby status update confirming `flush_lsn`; `reply` asks for a keepalive."""
        ...


@dataclass(frozen=True, slots=True)
class ReaderSettings:
    """How one log read behaves."""

    confirm_lsn: int  # the one position this run confirms to the slot (0: none)
    max_run_seconds: float | None = None  # stop at the first boundary after this long
    state_interval_seconds: float = 5.0  # STATE at most this often (and at the end)
    status_interval_seconds: float = 10.0  # well under wal_sender_timeout (60 s by default)
    idle_poll_seconds: float = 0.5  # how long one read waits for a frame


@dataclass(slots=True)
class StreamChanges:
    """What the read sent of one stream (for the run report)."""

    changes: int = 0  # records written, deletions included
    deletes: int = 0  # records of deleted rows (a key change's old row included)
    truncates: int = 0


@dataclass(slots=True)
class ReadSummary:
    """What one log read did; its str() is the line the tap logs at the end."""

    transactions: int = 0  # committed transactions read (skipped ones included)
    records: int = (
        0  # records the sink wrote (the sum of `streams`, at a progress line and the end)
    )
    position: int = 0  # the last transaction boundary reached
    stopped: str = ""  # why the read ended: CAUGHT_UP or OUT_OF_TIME
    streams: dict[str, StreamChanges] = field(default_factory=dict)  # by stream name

    def __str__(self) -> str:
        return (
            f"{self.transactions} transactions, {self.records} records, "
            f"position {format_lsn(self.position)}, stopped: {self.stopped}"
        )


class ReadLoop:
    """Reads pgoutput frames from a transport and writes changes and state through a sink.

    Args:
        transport: The replication stream, started at the lowest bookmark.
        sink: Where relations, changes and STATE go.
        positions: Every stream's bookmark (0: none); a stream skips the transactions that
            committed before its bookmark.
        settings: Confirmation, timing and stop settings.
        server_lsn: The server's current WAL position, for progress lines.
        logger: Where progress lines go.
        clock: Monotonic seconds (injected for tests).
        messages: Where logical decoding messages go (None: the stream is not read); its
            stream's bookmark joins `positions`.
    """

    def __init__(
        self,
        *,
        transport: Transport,
        sink: Sink,
        positions: Mapping[str, int],
        settings: ReaderSettings,
        server_lsn: Callable[[], int],
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        messages: MessageSink | None = None,
    ) -> None:
        self.transport = transport
        self.sink = sink
        self.settings = settings
        self.server_lsn = server_lsn
        self.logger = logger or logging.getLogger(__name__)
        self.clock = clock
        self.progress = LogProgress(self.logger, clock=clock)
        self.routes: dict[int, RelationSink | None] = {}
        self.positions: dict[str, int] = dict(positions)
        self.messages = messages
        if messages is not None:
            self.positions[messages.stream_name] = messages.position
        # Per stream (a stream first seen in the log gets its counts then): the fast path adds
        # to them, and the summary's total is their sum (see `_total`).
        self._counts: defaultdict[str, StreamChanges] = defaultdict(StreamChanges)
        for name in self.positions:
            self._counts[name] = StreamChanges()
        self.summary = ReadSummary(
            position=min(self.positions.values(), default=0), streams=self._counts
        )
        self._start = self.summary.position
        self._begin: Begin | None = None
        self._skip: frozenset[str] = frozenset()
        self._dirty = False

    # --- the loop ---------------------------------------------------------------------------

    def run(self, *, stop_lsn: int) -> ReadSummary:
        """Read until past `stop_lsn` (or out of time), stopping at a transaction boundary.

        Returns:
            The summary; a final STATE has been written through the sink.
        """
        settings = self.settings
        transport = self.transport
        confirm = settings.confirm_lsn
        started = self.clock()
        deadline = started + settings.max_run_seconds if settings.max_run_seconds else None
        # The one confirmation this run makes: what the target stored (see module docstring).
        transport.send_status(flush_lsn=confirm)
        last_status = last_state = started
        waiting_reply = False
        while True:
            raw = transport.read(settings.idle_poll_seconds)
            now = self.clock()
            if now - last_status >= settings.status_interval_seconds:
                transport.send_status(flush_lsn=confirm)
                last_status = now
            if raw is None:
                if self._begin is None:
                    if deadline is not None and now >= deadline:
                        return self._finish(OUT_OF_TIME)
                    if not waiting_reply:
                        # Idle: ask the server where it is; the keepalive answer tells us
                        # whether we have passed stop_lsn.
                        transport.send_status(flush_lsn=confirm, reply=True)
                        last_status = now
                        waiting_reply = True
                continue
            waiting_reply = False
            kind = raw[0]
            if kind == XLOGDATA:
                if self._change(raw):
                    continue
                message = decode(memoryview(raw)[XLOGDATA_HEADER_SIZE:])
                if not isinstance(message, Commit):
                    self._handle(message, xlogdata_start(raw))
                    continue
                self._commit(message)
                boundary = message.end_lsn
            elif kind == KEEPALIVE:
                wal_end, _, reply = parse_keepalive(raw)
                if reply:
                    transport.send_status(flush_lsn=confirm)
                    last_status = now
                if self._begin is not None:
                    continue
                # Between transactions, everything committed before wal_end has been sent.
                self._advance(wal_end)
                boundary = wal_end
            else:
                continue
            # A transaction boundary: the only place where the read stops or writes STATE.
            if self.progress.due():
                self._report()
            if boundary >= stop_lsn:
                return self._finish(CAUGHT_UP)
            if deadline is not None and now >= deadline:
                return self._finish(OUT_OF_TIME)
            if now - last_state >= settings.state_interval_seconds:
                self._emit_state()
                last_state = now

    def _finish(self, reason: str) -> ReadSummary:
        self._emit_state(force=True)
        summary = self._total()
        summary.stopped = reason
        self.logger.info(
            "Log read (%s): %s.",
            reason,
            self.progress.summary(
                start=self._start,
                position=summary.position,
                server_lsn=self.server_lsn(),
                transactions=summary.transactions,
                records=summary.records,
            ),
        )
        return summary

    def _report(self) -> None:
        """A progress line: position, bytes behind the server, rates (every 30 s)."""
        summary = self._total()
        self.progress.log(
            position=summary.position,
            server_lsn=self.server_lsn(),
            transactions=summary.transactions,
            records=summary.records,
        )

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
        # A stream whose bookmark is already later (snapshotted after this read's start) keeps it.
        advanced = {
            name: position for name, current in self.positions.items() if position > current
        }
        self.positions.update(advanced)
        if self.messages is not None and self.messages.stream_name in advanced:
            # The messages stream's bookmark lives beside the tables' (see `MessageSink`).
            self.messages.advance(advanced.pop(self.messages.stream_name))
        self.sink.write_state(advanced)
        self._dirty = False

    # --- messages ---------------------------------------------------------------------------

    def _change(self, raw: Frame) -> bool:
        """Hand an Insert, Update or Delete to its sink's fast path, straight from the bytes.

        False, with nothing done, for every other message and for changes the fast path leaves
        to the general one: not routed, skipped, an Update carrying an old row (a key change is
        possible), whatever the sink declines, malformed data (which `decode` then reports).
        """
        if len(raw) < _CHANGE_TUPLE_AT or raw[XLOGDATA_HEADER_SIZE] not in _CHANGE_TYPES:
            return False
        relation_id, marker = _CHANGE_HEADER.unpack_from(raw, XLOGDATA_HEADER_SIZE + 1)
        route = self.routes.get(relation_id)
        begin = self._begin
        if route is None or begin is None or route.stream_name in self._skip:
            return False
        if raw[XLOGDATA_HEADER_SIZE] == _DELETE:
            if marker not in _OLD_MARKERS:
                return False
            deleted, key = True, marker == TUPLE_KEY
        elif marker == TUPLE_NEW:  # an Insert, or an Update without old row
            deleted = key = False
        else:
            return False
        if not route.change(raw, _CHANGE_TUPLE_AT, begin, deleted=deleted, key=key):
            return False
        counts = self._counts[route.stream_name]
        counts.changes += 1
        if deleted:
            counts.deletes += 1
        return True

    def _count(self, route: RelationSink, written: int, deletes: int) -> None:
        """Count what the general path wrote: `written` records, `deletes` of them deletions."""
        counts = self._counts[route.stream_name]
        counts.changes += written
        counts.deletes += deletes

    def _total(self) -> ReadSummary:
        """The summary, its total of records brought up to date from the per-stream counts."""
        summary = self.summary
        summary.records = sum(counts.changes for counts in self._counts.values())
        return summary

    def _handle(self, message: object, lsn: int) -> None:
        """Dispatch a decoded message; `lsn` is the WAL position of its record (see Truncate)."""
        if isinstance(message, Begin):
            self._begin = message
            final = message.final_lsn
            self._skip = frozenset(name for name, pos in self.positions.items() if final < pos)
        elif isinstance(message, Insert):
            route = self._route(message.relation_id)
            if route is not None:
                self._count(route, route.insert(message, self._open("Insert")), 0)
        elif isinstance(message, Update):
            route = self._route(message.relation_id)
            if route is not None:
                written = route.update(message, self._open("Update"))
                # Beyond the new row's record: the old row's deletion (a key change).
                self._count(route, written, max(written - 1, 0))
        elif isinstance(message, Delete):
            route = self._route(message.relation_id)
            if route is not None:
                written = route.delete(message, self._open("Delete"))
                self._count(route, written, written)
        elif isinstance(message, Relation):
            self.routes[message.relation_id] = self.sink.relation(message)
        elif isinstance(message, Truncate):
            # Its own LSN, not the commit's: two TRUNCATEs in one transaction must be told
            # apart (each drops what the transaction wrote before it), and a replay of the
            # transaction sees the same positions again.
            for relation_id in message.relation_ids:
                route = self._route(relation_id)
                if route is not None:
                    route.truncate(self._open("Truncate"), lsn)
                    self._counts[route.stream_name].truncates += 1
        elif isinstance(message, LogicalDecodingMessage):
            self._message(message)
        # Origin and Type messages carry nothing a record needs.

    def _message(self, message: LogicalDecodingMessage) -> None:
        """A logical decoding message: to the messages sink, unless already sent.

        The tap reads protocol 1 without streaming, so a transactional message always arrives
        between its transaction's Begin and Commit (in a streamed transaction it would carry
        the xid; the decoder reads that form, the tap never asks for it). A non-transactional
        one is sent as soon as the server decodes it, outside any transaction; a bookmark past
        its LSN means it was sent before the STATE that carries the bookmark.
        """
        sink = self.messages
        if sink is None:
            return
        name = sink.stream_name
        if message.flags & MESSAGE_FLAG_TRANSACTIONAL:
            begin: Begin | None = self._open("Logical decoding")
            if name in self._skip:
                return
        else:
            begin = None
            if message.lsn < self.positions.get(name, 0):
                return
        self._counts[name].changes += sink.message(message, begin)

    def _commit(self, message: Commit) -> None:
        self.sink.commit()  # every record of the transaction written before its boundary
        self._begin = None
        self.summary.transactions += 1
        self._advance(message.end_lsn)

    def _route(self, relation_id: int) -> RelationSink | None:
        """Where a relation's changes go in this transaction: None if unfollowed or skipped."""
        route = self.routes.get(relation_id)
        if route is None or route.stream_name in self._skip:
            return None
        return route

    def _open(self, what: str) -> Begin:
        """The open transaction, which every change belongs to."""
        begin = self._begin
        if begin is None:
            msg = f"{what} message outside a transaction (no Begin before it)"
            raise ProtocolError(msg)
        return begin
