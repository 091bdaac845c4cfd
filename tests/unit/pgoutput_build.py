"""Test-only pgoutput encoder: message bytes from field values.

Written from the PostgreSQL documentation ("Logical Replication Message Formats"), not from the
decoder, so round trips check the decoder against an independent reading of the spec. Every
integer is big-endian; "String" is UTF-8 with a NUL terminator.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from tap_pgcdc.replication.messages import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    ColumnValue,
    Commit,
    Delete,
    Insert,
    LogicalDecodingMessage,
    Message,
    Origin,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    Update,
)

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def micros(when: datetime) -> int:
    """Int64 TimestampTz: microseconds since 2000-01-01 00:00 UTC."""
    return (when - PG_EPOCH) // timedelta(microseconds=1)


def cstring(text: str) -> bytes:
    """String: UTF-8 bytes and a NUL terminator."""
    return text.encode() + b"\0"


def xid_prefix(xid: int | None) -> bytes:
    """Int32 xid, present only for messages inside a streamed transaction block."""
    return b"" if xid is None else struct.pack(">I", xid)


def tuple_data(values: Iterable[ColumnValue]) -> bytes:
    """TupleData: Int16 column count, then per column a kind byte and maybe a counted value."""
    values = list(values)
    out = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED_TOAST:
            out += b"u"
        elif isinstance(value, str):
            raw = value.encode()
            out += b"t" + struct.pack(">i", len(raw)) + raw
        else:
            assert isinstance(value, bytes)
            out += b"b" + struct.pack(">i", len(value)) + value
    return out


def begin(final_lsn: int, commit_time: datetime, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, micros(commit_time), xid)


def commit(flags: int, commit_lsn: int, end_lsn: int, commit_time: datetime) -> bytes:
    return b"C" + struct.pack(">BQQq", flags, commit_lsn, end_lsn, micros(commit_time))


def origin(commit_lsn: int, name: str) -> bytes:
    return b"O" + struct.pack(">Q", commit_lsn) + cstring(name)


def relation(
    relation_id: int,
    namespace: str,
    name: str,
    replica_identity: str,
    columns: Iterable[Column],
    xid: int | None = None,
) -> bytes:
    columns = list(columns)
    out = b"R" + xid_prefix(xid) + struct.pack(">I", relation_id)
    out += cstring(namespace) + cstring(name) + replica_identity.encode("ascii")
    out += struct.pack(">h", len(columns))
    for column in columns:
        out += struct.pack(">B", column.flags) + cstring(column.name)
        out += struct.pack(">Ii", column.type_oid, column.atttypmod)
    return out


def type_(type_oid: int, namespace: str, name: str, xid: int | None = None) -> bytes:
    return b"Y" + xid_prefix(xid) + struct.pack(">I", type_oid) + cstring(namespace) + cstring(name)


def insert(relation_id: int, new: Iterable[ColumnValue], xid: int | None = None) -> bytes:
    return b"I" + xid_prefix(xid) + struct.pack(">I", relation_id) + b"N" + tuple_data(new)


def update(
    relation_id: int,
    old: Iterable[ColumnValue] | None,
    old_kind: str | None,
    new: Iterable[ColumnValue],
    xid: int | None = None,
) -> bytes:
    out = b"U" + xid_prefix(xid) + struct.pack(">I", relation_id)
    if old is not None:
        assert old_kind in ("K", "O")
        out += old_kind.encode() + tuple_data(old)
    return out + b"N" + tuple_data(new)


def delete(
    relation_id: int, old: Iterable[ColumnValue], old_kind: str, xid: int | None = None
) -> bytes:
    return (
        b"D"
        + xid_prefix(xid)
        + struct.pack(">I", relation_id)
        + old_kind.encode()
        + tuple_data(old)
    )


def truncate(options: int, relation_ids: Iterable[int], xid: int | None = None) -> bytes:
    ids = list(relation_ids)
    return (
        b"T"
        + xid_prefix(xid)
        + struct.pack(">IB", len(ids), options)
        + b"".join(struct.pack(">I", oid) for oid in ids)
    )


def logical_message(
    flags: int, lsn: int, prefix: str, content: bytes, xid: int | None = None
) -> bytes:
    return (
        b"M"
        + xid_prefix(xid)
        + struct.pack(">BQ", flags, lsn)
        + cstring(prefix)
        + struct.pack(">i", len(content))
        + content
    )


def stream_start(xid: int, first_segment: bool) -> bytes:
    return b"S" + struct.pack(">IB", xid, 1 if first_segment else 0)


def stream_stop() -> bytes:
    return b"E"


def stream_commit(
    xid: int, flags: int, commit_lsn: int, end_lsn: int, commit_time: datetime
) -> bytes:
    return b"c" + struct.pack(">IBQQq", xid, flags, commit_lsn, end_lsn, micros(commit_time))


def stream_abort(
    xid: int, subxid: int, abort_lsn: int | None = None, abort_time: datetime | None = None
) -> bytes:
    out = b"A" + struct.pack(">II", xid, subxid)
    if abort_lsn is not None:  # protocol 4, streaming = parallel
        assert abort_time is not None
        out += struct.pack(">Qq", abort_lsn, micros(abort_time))
    return out


def encode(message: Message) -> bytes:
    """Encode any message dataclass with the builders above."""
    match message:
        case Begin():
            return begin(message.final_lsn, message.commit_time, message.xid)
        case Commit():
            return commit(message.flags, message.commit_lsn, message.end_lsn, message.commit_time)
        case Origin():
            return origin(message.commit_lsn, message.name)
        case Relation():
            return relation(
                message.relation_id,
                message.namespace,
                message.name,
                message.replica_identity,
                message.columns,
                message.xid,
            )
        case Type():
            return type_(message.type_oid, message.namespace, message.name, message.xid)
        case Insert():
            return insert(message.relation_id, message.new, message.xid)
        case Update():
            return update(
                message.relation_id, message.old, message.old_kind, message.new, message.xid
            )
        case Delete():
            return delete(message.relation_id, message.old, message.old_kind, message.xid)
        case Truncate():
            return truncate(message.options, message.relation_ids, message.xid)
        case LogicalDecodingMessage():
            return logical_message(
                message.flags, message.lsn, message.prefix, message.content, message.xid
            )
        case StreamStart():
            return stream_start(message.xid, message.first_segment)
        case StreamStop():
            return stream_stop()
        case StreamCommit():
            return stream_commit(
                message.xid, message.flags, message.commit_lsn, message.end_lsn, message.commit_time
            )
        case StreamAbort():
            return stream_abort(message.xid, message.subxid, message.abort_lsn, message.abort_time)
    raise TypeError(f"not a pgoutput message: {message!r}")
