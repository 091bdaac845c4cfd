"""The streaming replication protocol's frames, as pure functions over bytes.

Inside the COPY BOTH stream the server sends XLogData ('w', a pgoutput message after a header)
and primary keepalives ('k'); the client sends standby status updates ('r'). Nothing here does
I/O: the transport moves the bytes, the reader decides what to send.
"""

from __future__ import annotations

import struct
import time
import typing as t
from datetime import UTC, datetime, timedelta

# The Postgres epoch (2000-01-01 UTC): protocol timestamps are microseconds since it.
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_OFFSET_US = 946_684_800_000_000  # microseconds from the Unix epoch to PG_EPOCH

Frame: t.TypeAlias = "bytes | memoryview"
"""A CopyData payload: bytes, or for a large one a view of the driver's copy (unsigned bytes:
indexing gives ints, slicing gives views)."""

XLOGDATA = 0x77  # 'w'
KEEPALIVE = 0x6B  # 'k'

_XLOGDATA_HEADER = struct.Struct("!QQq")  # data start, WAL end, send time (after the 'w' byte)
_KEEPALIVE = struct.Struct("!Qq?")  # WAL end, send time, reply requested (after the 'k' byte)
_STATUS_UPDATE = struct.Struct("!cQQQq?")  # 'r', write, flush, apply, client time, reply

XLOGDATA_HEADER_SIZE = 1 + _XLOGDATA_HEADER.size
"""Bytes before the pgoutput message in an XLogData frame (type byte and header)."""


def pg_time(micros: int) -> datetime:
    """A protocol timestamp (microseconds since the Postgres epoch) as an aware datetime."""
    return PG_EPOCH + timedelta(microseconds=micros)


def pg_now_us() -> int:
    """Now, in microseconds since the Postgres epoch (for status updates)."""
    return time.time_ns() // 1000 - PG_EPOCH_OFFSET_US


def xlogdata_start(raw: Frame) -> int:
    """The WAL position of the record an XLogData frame's message was decoded from.

    For an Insert, Update, Delete or Truncate it is the LSN of that change's own WAL record,
    which increases within a transaction and is the same on every replay (a Begin carries its
    transaction's first LSN, a Commit its end).
    """
    start: int = _XLOGDATA_HEADER.unpack_from(raw, 1)[0]
    return start


def parse_keepalive(raw: Frame) -> tuple[int, int, bool]:
    """(wal_end, send_time, reply_requested) of a primary keepalive frame."""
    wal_end, send_time, reply = _KEEPALIVE.unpack_from(raw, 1)
    return wal_end, send_time, reply


def status_update(flush_lsn: int, *, reply: bool = False, now_us: int | None = None) -> bytes:
    """A standby status update reporting `flush_lsn` as written, flushed and applied.

    For a logical slot only the flush position matters: the server sets the slot's
    confirmed_flush_lsn to it. Write and apply carry the same value so that monitoring
    (pg_stat_replication) shows what the tap has confirmed, not what it merely read.
    0 means "nothing to confirm" and the server ignores it.
    """
    sent = pg_now_us() if now_us is None else now_us
    return _STATUS_UPDATE.pack(b"r", flush_lsn, flush_lsn, flush_lsn, sent, reply)


def xlogdata(wal_start: int, wal_end: int, payload: bytes, *, send_time: int = 0) -> bytes:
    """An XLogData frame around a pgoutput message (for fakes and fixtures)."""
    return b"w" + _XLOGDATA_HEADER.pack(wal_start, wal_end, send_time) + payload


def keepalive(wal_end: int, *, reply: bool = False, send_time: int = 0) -> bytes:
    """A primary keepalive frame (for fakes and fixtures)."""
    return b"k" + _KEEPALIVE.pack(wal_end, send_time, reply)
