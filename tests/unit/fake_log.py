"""Fakes for driving the read loop: a scripted transport, a recording sink, a clock, frames.

The transport plays scripted frames in order: bytes are a frame, `None` a read that timed out
(the clock moves on by the poll interval), `Sleep` time passing before the next item. Status
updates the loop sends and every call it makes on the sink are appended to one event list, so a
test can assert the whole sequence. Frames are pgoutput messages built with `pgoutput_build`
inside `protocol.xlogdata` and `protocol.keepalive` frames.
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass
from datetime import UTC, datetime

from tap_pgcdc.replication.messages import Column
from tap_pgcdc.replication.protocol import XLOGDATA_HEADER_SIZE, xlogdata
from tap_pgcdc.replication.reader import ReaderSettings, ReadLoop, ReadSummary
from tests.unit import pgoutput_build as pg

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from tap_pgcdc.replication.messages import Begin, Delete, Insert, Relation, Update

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
COLUMNS = [Column(1, "id", 23, -1), Column(0, "name", 25, -1)]
A, B = "public-a", "public-b"  # stream names
TABLES = {("public", "a"): A, ("public", "b"): B}
REL_A, REL_B, REL_X = 16385, 16386, 16387  # relation OIDs; X is published but not followed
SERVER_LSN = 0x9_0000


@dataclass(frozen=True)
class Sleep:
    """Time passing between two frames."""

    seconds: float


Script = list["bytes | Sleep | None"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTransport:
    """Plays scripted frames; records status updates (and, if asked, each frame read)."""

    def __init__(
        self, script: Iterable[bytes | Sleep | None], clock: FakeClock, events: list[t.Any]
    ) -> None:
        self.script = list(script)
        self.clock = clock
        self.events = events
        self.frames_read: list[bytes] = []

    def read(self, timeout: float) -> bytes | None:
        while True:
            if not self.script:
                raise AssertionError("the loop read past the end of the script")
            item = self.script.pop(0)
            if isinstance(item, Sleep):
                self.clock.now += item.seconds
                continue
            if item is None:
                self.clock.now += timeout
                return None
            self.frames_read.append(item)
            return item

    def send_status(self, *, flush_lsn: int, reply: bool = False) -> None:
        self.events.append(("status", flush_lsn, reply))


@dataclass
class FakeRoute:
    stream_name: str
    events: list[t.Any]
    fast: bool

    def change(self, frame: bytes, pos: int, begin: Begin, *, deleted: bool, key: bool) -> bool:
        if not self.fast:
            return False
        kind = chr(frame[XLOGDATA_HEADER_SIZE])
        self.events.append(("fast", self.stream_name, kind, deleted, key, begin.final_lsn))
        return True

    def insert(self, message: Insert, begin: Begin) -> int:
        self.events.append(("insert", self.stream_name, message.new, begin.final_lsn))
        return 1

    def update(self, message: Update, begin: Begin) -> int:
        self.events.append(("update", self.stream_name, message.old, message.new, begin.final_lsn))
        return 1 if message.old is None else 2  # a changed key: its deletion, then the row

    def delete(self, message: Delete, begin: Begin) -> int:
        self.events.append(("delete", self.stream_name, message.old, begin.final_lsn))
        return 1

    def truncate(self, begin: Begin, lsn: int) -> None:
        self.events.append(("truncate", self.stream_name, begin.final_lsn, lsn))


@dataclass
class FakeSink:
    events: list[t.Any]
    fast: frozenset[str] = frozenset()

    def relation(self, message: Relation) -> FakeRoute | None:
        self.events.append(("relation", message.namespace, message.name))
        name = TABLES.get((message.namespace, message.name))
        if name is None:
            return None
        return FakeRoute(name, self.events, name in self.fast)

    def write_state(self, advanced: Mapping[str, int]) -> None:
        self.events.append(("state", dict(advanced)))

    def commit(self) -> None:
        """Nothing held: the fake writes each change as it comes."""


@dataclass
class Run:
    summary: ReadSummary
    events: list[t.Any]
    transport: FakeTransport


def run(
    script: Iterable[bytes | Sleep | None],
    *,
    stop_lsn: int,
    positions: Mapping[str, int] | None = None,
    fast: Iterable[str] = (),
    confirm_lsn: int = 0x100,
    **options: t.Any,
) -> Run:
    events: list[t.Any] = []
    clock = FakeClock()
    transport = FakeTransport(script, clock, events)
    loop = ReadLoop(
        transport=transport,
        sink=FakeSink(events, frozenset(fast)),
        positions={A: 0x100, B: 0x100} if positions is None else positions,
        settings=ReaderSettings(confirm_lsn=confirm_lsn, **options),
        server_lsn=lambda: SERVER_LSN,
        logger=logging.getLogger("test.reader"),
        clock=clock,
    )
    return Run(loop.run(stop_lsn=stop_lsn), events, transport)


def w(payload: bytes, lsn: int = 0) -> bytes:
    """An XLogData frame around a pgoutput message."""
    return xlogdata(lsn, lsn, payload)


def relation(relation_id: int, name: str) -> bytes:
    return w(pg.relation(relation_id, "public", name, "d", COLUMNS))


def begin(final_lsn: int, xid: int = 700) -> bytes:
    return w(pg.begin(final_lsn, WHEN, xid))


def commit(final_lsn: int, end_lsn: int) -> bytes:
    return w(pg.commit(0, final_lsn, end_lsn, WHEN), end_lsn)


def insert(relation_id: int, *values: str | None) -> bytes:
    return w(pg.insert(relation_id, values))


def transaction(final_lsn: int, end_lsn: int, *changes: bytes) -> Script:
    return [begin(final_lsn), *changes, commit(final_lsn, end_lsn)]


CONFIRM = ("status", 0x100, False)  # the only position a run ever confirms
ASK = ("status", 0x100, True)  # ... and with a reply requested


class NotingTransport(FakeTransport):
    """Also records each frame read, to place the sink's calls among the frames."""

    def read(self, timeout: float) -> bytes | None:
        frame = super().read(timeout)
        self.events.append(("frame", frame))
        return frame
