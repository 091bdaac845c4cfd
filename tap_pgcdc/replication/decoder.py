"""Decode pgoutput messages from bytes: ``decode(data) -> Message``.

One small function per message type, chosen by the first byte. Every length is checked before it
is used and every message must be consumed exactly, so truncated, corrupt or misframed data is a
:class:`ProtocolError` naming the message, never a wrong value or another exception type.

Insert, Update and Delete arrive once per changed row, so their decoders avoid the generic
:class:`Reader` and unpack straight from the bytes, with a specialised loop for tuple data.
"""

from __future__ import annotations

import struct
import typing as t
from collections.abc import Callable

from tap_pgcdc.errors import ProtocolError
from tap_pgcdc.replication.buffer import Reader, truncated
from tap_pgcdc.replication.messages import (
    TUPLE_KEY,
    TUPLE_NEW,
    TUPLE_OLD,
    UNCHANGED_TOAST,
    VALUE_BINARY,
    VALUE_NULL,
    VALUE_TEXT,
    VALUE_TOAST,
    Begin,
    Column,
    ColumnValue,
    Commit,
    Delete,
    Insert,
    LogicalDecodingMessage,
    Message,
    OldTupleKind,
    Origin,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    TupleData,
    Type,
    Update,
)
from tap_pgcdc.replication.protocol import pg_time

if t.TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "UNCHANGED_TOAST",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "LogicalDecodingMessage",
    "Message",
    "Origin",
    "ProtocolError",
    "Relation",
    "StreamAbort",
    "StreamCommit",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "TupleData",
    "Type",
    "Update",
    "decode",
]

# Fixed layouts after the type byte. Widths and signedness from "Logical Replication Message
# Formats": LSNs uint64, timestamps int64, xids and OIDs uint32.
_BEGIN = struct.Struct(">QqI")  # final LSN, commit time, xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit LSN, end LSN, commit time
_STREAM_START = struct.Struct(">IB")  # xid, first-segment flag
_STREAM_COMMIT = struct.Struct(">IBQQq")  # xid, flags, commit LSN, end LSN, commit time
_STREAM_ABORT = struct.Struct(">II")  # xid, subxid
_STREAM_ABORT_V4 = struct.Struct(">IIQq")  # xid, subxid, abort LSN, abort time
_CHANGE = struct.Struct(">IB")  # relation OID, tuple marker byte
_STREAM_CHANGE = struct.Struct(">IIB")  # xid, relation OID, tuple marker byte
_unpack_i32 = struct.Struct(">i").unpack_from

_OLD_MARKERS = frozenset((TUPLE_KEY, TUPLE_OLD))
_VALUE_KINDS = frozenset((VALUE_TEXT, VALUE_BINARY))  # kinds followed by Int32 length + bytes
_REPLICA_IDENTITIES = frozenset("dnfi")


def _show(byte: int) -> str:
    """Render a type or kind byte for an error message: 'X' (0x58), or 0x00 if unprintable."""
    return f"{chr(byte)!r} (0x{byte:02X})" if 0x20 < byte < 0x7F else f"0x{byte:02X}"


def _wrong_length(what: str, expected: str, got: int) -> ProtocolError:
    return ProtocolError(f"{what} message must have {expected} bytes after the type, got {got}")


def _trailing(what: str, pos: int, end: int) -> ProtocolError:
    return ProtocolError(
        f"{what} message has {end - pos} unexpected trailing bytes at offset {pos}"
    )


def _timestamp(micros: int, what: str) -> datetime:
    """Convert a pgoutput timestamp (int64 microseconds since 2000-01-01 UTC) to a datetime."""
    try:
        return pg_time(micros)
    except OverflowError:
        # Postgres timestamps reach year 294276; a commit time outside 1..9999 is corruption.
        raise ProtocolError(
            f"{what} message has timestamp {micros} outside the supported range"
        ) from None


def _tuple_data(buf: bytes, pos: int, end: int, what: str) -> tuple[TupleData, int]:
    """Decode TupleData at ``pos``; return the column values and the offset just past them.

    Hot path: one pass with inline bounds checks, no Reader calls per column.
    """
    if pos + 2 > end:
        raise truncated(what, 2, pos, end - pos)
    # Int16 column count, read unsigned as Postgres' own reader does; every column needs at
    # least its kind byte, so a corrupt count fails here rather than after a long loop.
    ncols = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    if ncols > end - pos:
        raise ProtocolError(
            f"{what} message truncated: tuple data at offset {pos - 2} declares {ncols} "
            f"columns but only {end - pos} bytes follow"
        )
    values: list[ColumnValue] = []
    append = values.append
    try:
        for _ in range(ncols):
            if pos >= end:
                raise truncated(what, 1, pos, 0)
            kind = buf[pos]
            pos += 1
            if kind in _VALUE_KINDS:
                if pos + 4 > end:
                    raise truncated(what, 4, pos, end - pos)
                length = _unpack_i32(buf, pos)[0]
                pos += 4
                stop = pos + length
                if length < 0 or stop > end:
                    raise ProtocolError(
                        f"{what} message truncated: column value at offset {pos} declares "
                        f"{length} bytes, have {end - pos}"
                    )
                value = buf[pos:stop]
                append(value.decode() if kind == VALUE_TEXT else value)
                pos = stop
            elif kind == VALUE_NULL:
                append(None)
            elif kind == VALUE_TOAST:
                append(UNCHANGED_TOAST)
            else:
                raise ProtocolError(
                    f"{what} message has unknown tuple column kind {_show(kind)} "
                    f"at offset {pos - 1}"
                )
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"{what} message: text value of column {len(values) + 1} at offset {pos} is not "
            f"valid UTF-8 ({exc.reason}); the replication connection must use client_encoding UTF8"
        ) from None
    return tuple(values), pos


def _change_header(buf: bytes, in_stream: bool, what: str) -> tuple[int | None, int, int, int]:
    """Read [xid,] relation OID and the first tuple marker of Insert/Update/Delete.

    Returns:
        (xid or None, relation OID, marker byte, offset after the marker).
    """
    if in_stream:
        if len(buf) < 10:
            raise truncated(what, 9, 1, len(buf) - 1)
        xid, relation_id, marker = _STREAM_CHANGE.unpack_from(buf, 1)
        return xid, relation_id, marker, 10
    if len(buf) < 6:
        raise truncated(what, 5, 1, len(buf) - 1)
    relation_id, marker = _CHANGE.unpack_from(buf, 1)
    return None, relation_id, marker, 6


def _bad_marker(what: str, marker: int, expected: str, pos: int) -> ProtocolError:
    return ProtocolError(
        f"{what} message has tuple marker {_show(marker)} at offset {pos}, expected {expected}"
    )


def _insert(buf: bytes, in_stream: bool) -> Insert:
    xid, relation_id, marker, pos = _change_header(buf, in_stream, "Insert")
    if marker != TUPLE_NEW:
        raise _bad_marker("Insert", marker, "'N'", pos - 1)
    end = len(buf)
    new, pos = _tuple_data(buf, pos, end, "Insert")
    if pos != end:
        raise _trailing("Insert", pos, end)
    return Insert(relation_id, new, xid)


def _update(buf: bytes, in_stream: bool) -> Update:
    xid, relation_id, marker, pos = _change_header(buf, in_stream, "Update")
    end = len(buf)
    old: TupleData | None = None
    old_kind: OldTupleKind | None = None
    if marker in _OLD_MARKERS:
        old, pos = _tuple_data(buf, pos, end, "Update")
        if pos >= end:
            raise truncated("Update", 1, pos, 0)
        old_kind = "K" if marker == TUPLE_KEY else "O"
        marker = buf[pos]
        pos += 1
    if marker != TUPLE_NEW:
        raise _bad_marker("Update", marker, "'K', 'O' or 'N'" if old is None else "'N'", pos - 1)
    new, pos = _tuple_data(buf, pos, end, "Update")
    if pos != end:
        raise _trailing("Update", pos, end)
    return Update(relation_id, old, old_kind, new, xid)


def _delete(buf: bytes, in_stream: bool) -> Delete:
    xid, relation_id, marker, pos = _change_header(buf, in_stream, "Delete")
    if marker not in _OLD_MARKERS:
        raise _bad_marker("Delete", marker, "'K' or 'O'", pos - 1)
    end = len(buf)
    old, pos = _tuple_data(buf, pos, end, "Delete")
    if pos != end:
        raise _trailing("Delete", pos, end)
    return Delete(relation_id, old, "K" if marker == TUPLE_KEY else "O", xid)


def _begin(buf: bytes, in_stream: bool) -> Begin:
    if len(buf) != 1 + _BEGIN.size:
        raise _wrong_length("Begin", str(_BEGIN.size), len(buf) - 1)
    final_lsn, commit_time, xid = _BEGIN.unpack_from(buf, 1)
    return Begin(final_lsn, _timestamp(commit_time, "Begin"), xid)


def _commit(buf: bytes, in_stream: bool) -> Commit:
    if len(buf) != 1 + _COMMIT.size:
        raise _wrong_length("Commit", str(_COMMIT.size), len(buf) - 1)
    flags, commit_lsn, end_lsn, commit_time = _COMMIT.unpack_from(buf, 1)
    return Commit(flags, commit_lsn, end_lsn, _timestamp(commit_time, "Commit"))


def _origin(buf: bytes, in_stream: bool) -> Origin:
    reader = Reader(buf, "Origin", 1)
    message = Origin(reader.read_u64(), reader.read_cstring())
    reader.expect_end()
    return message


def _relation(buf: bytes, in_stream: bool) -> Relation:
    reader = Reader(buf, "Relation", 1)
    xid = reader.read_u32() if in_stream else None
    relation_id = reader.read_u32()
    namespace = reader.read_cstring()
    name = reader.read_cstring()
    replica_identity = chr(reader.read_u8())
    if replica_identity not in _REPLICA_IDENTITIES:
        raise ProtocolError(
            f"Relation message for {namespace}.{name} has unknown replica identity "
            f"{_show(ord(replica_identity))}, expected one of 'd', 'n', 'f', 'i'"
        )
    # Each column is at least flags + NUL + type OID + typmod = 10 bytes; the loop cannot run
    # longer than the buffer allows, as every read consumes bytes or raises.
    columns = tuple(
        Column(reader.read_u8(), reader.read_cstring(), reader.read_u32(), reader.read_i32())
        for _ in range(reader.read_u16())
    )
    reader.expect_end()
    return Relation(relation_id, namespace, name, replica_identity, columns, xid)


def _type(buf: bytes, in_stream: bool) -> Type:
    reader = Reader(buf, "Type", 1)
    xid = reader.read_u32() if in_stream else None
    message = Type(reader.read_u32(), reader.read_cstring(), reader.read_cstring(), xid)
    reader.expect_end()
    return message


def _truncate(buf: bytes, in_stream: bool) -> Truncate:
    reader = Reader(buf, "Truncate", 1)
    xid = reader.read_u32() if in_stream else None
    count = reader.read_u32()
    options = reader.read_u8()
    message = Truncate(options, reader.read_u32s(count), xid)
    reader.expect_end()
    return message


def _logical_message(buf: bytes, in_stream: bool) -> LogicalDecodingMessage:
    reader = Reader(buf, "Logical decoding", 1)
    xid = reader.read_u32() if in_stream else None
    flags = reader.read_u8()
    lsn = reader.read_u64()
    prefix = reader.read_cstring()
    content = reader.read_bytes(reader.read_i32())
    reader.expect_end()
    return LogicalDecodingMessage(flags, lsn, prefix, content, xid)


def _stream_start(buf: bytes, in_stream: bool) -> StreamStart:
    if len(buf) != 1 + _STREAM_START.size:
        raise _wrong_length("Stream Start", str(_STREAM_START.size), len(buf) - 1)
    xid, first_segment = _STREAM_START.unpack_from(buf, 1)
    if first_segment > 1:
        raise ProtocolError(
            f"Stream Start message has first-segment flag {first_segment}, expected 0 or 1"
        )
    return StreamStart(xid, first_segment == 1)


def _stream_stop(buf: bytes, in_stream: bool) -> StreamStop:
    if len(buf) != 1:
        raise _wrong_length("Stream Stop", "0", len(buf) - 1)
    return StreamStop()


def _stream_commit(buf: bytes, in_stream: bool) -> StreamCommit:
    if len(buf) != 1 + _STREAM_COMMIT.size:
        raise _wrong_length("Stream Commit", str(_STREAM_COMMIT.size), len(buf) - 1)
    xid, flags, commit_lsn, end_lsn, commit_time = _STREAM_COMMIT.unpack_from(buf, 1)
    return StreamCommit(xid, flags, commit_lsn, end_lsn, _timestamp(commit_time, "Stream Commit"))


def _stream_abort(buf: bytes, in_stream: bool) -> StreamAbort:
    # Protocol 4 appends the abort LSN and time when streaming = parallel; the two lengths are
    # the only valid ones, so anything else is still rejected.
    if len(buf) == 1 + _STREAM_ABORT.size:
        xid, subxid = _STREAM_ABORT.unpack_from(buf, 1)
        return StreamAbort(xid, subxid)
    if len(buf) == 1 + _STREAM_ABORT_V4.size:
        xid, subxid, abort_lsn, abort_time = _STREAM_ABORT_V4.unpack_from(buf, 1)
        return StreamAbort(xid, subxid, abort_lsn, _timestamp(abort_time, "Stream Abort"))
    raise _wrong_length(
        "Stream Abort", f"{_STREAM_ABORT.size} or {_STREAM_ABORT_V4.size}", len(buf) - 1
    )


_DECODERS: dict[int, Callable[[bytes, bool], Message]] = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _logical_message,
    ord("S"): _stream_start,
    ord("E"): _stream_stop,
    ord("c"): _stream_commit,
    ord("A"): _stream_abort,
}

# Two-phase messages only flow when the subscriber enables two_phase, which the tap never does;
# seeing one means the slot or session was set up by something else.
_TWO_PHASE = {
    ord("b"): "Begin Prepare",
    ord("P"): "Prepare",
    ord("K"): "Commit Prepared",
    ord("r"): "Rollback Prepared",
    ord("p"): "Stream Prepare",
}


def decode(data: bytes | bytearray | memoryview, *, in_stream: bool = False) -> Message:
    """Decode one pgoutput message.

    Args:
        data: The message bytes, starting with the type byte (the payload of an XLogData
            message). ``bytes`` is used as is; other buffers are copied to ``bytes`` once.
        in_stream: True between Stream Start and Stream Stop, where Relation, Type, Insert,
            Update, Delete, Truncate and logical decoding messages carry the streamed
            transaction's xid after the type byte. Other message types ignore it.

    Returns:
        The decoded message; see :mod:`tap_pgcdc.replication.messages`.

    Raises:
        ProtocolError: If the message is empty, truncated, has trailing bytes, holds an invalid
            value, or has an unknown or unsupported type.
    """
    if type(data) is not bytes:
        data = bytes(data)
    if not data:
        raise ProtocolError("empty pgoutput message: expected at least a type byte")
    decoder = _DECODERS.get(data[0])
    if decoder is None:
        kind = data[0]
        if kind in _TWO_PHASE:
            raise ProtocolError(
                f"unsupported message type {chr(kind)!r} ({_TWO_PHASE[kind]}; two-phase is not "
                "enabled by tap-pgcdc: check that no other client enabled two_phase on the "
                "replication slot)"
            )
        raise ProtocolError(f"unknown pgoutput message type {_show(kind)}")
    return decoder(data, in_stream)
