"""pgoutput messages as data: one frozen, slotted dataclass per message type.

Field names and meanings follow the PostgreSQL documentation, "Logical Replication Message
Formats". Integers keep the protocol's meaning: OIDs and xids are uint32, LSNs are uint64 integers
(see :mod:`tap_pgcdc.pg.lsn`), and timestamps are UTC-aware datetimes.

Tuple data (the column values of a row) is a plain ``tuple`` with one item per column, in the
relation's column order, because building one small object per column would dominate decoding
time on the hot path:

- ``None``: SQL NULL (kind ``'n'``).
- :data:`UNCHANGED_TOAST`: an unchanged TOASTed value the server did not send (kind ``'u'``); the
  consumer must keep the value it already has or mark the column as unknown.
- ``str``: a value in text format (kind ``'t'``), decoded from UTF-8.
- ``bytes``: a value in binary format (kind ``'b'``), only sent when the subscriber asks for
  ``binary``; tap-pgcdc does not, but the decoder accepts it.

Messages that may appear inside a streamed transaction block (between Stream Start and Stream
Stop) carry ``xid``: the streamed transaction's id, or ``None`` when decoded outside a block.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, TypeAlias


class UnchangedToast(enum.Enum):
    """The type of :data:`UNCHANGED_TOAST`; an enum so the marker survives copy and pickle."""

    UNCHANGED_TOAST = "u"

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = UnchangedToast.UNCHANGED_TOAST
"""Tuple-data marker for an unchanged TOASTed column whose value was not sent (kind ``'u'``)."""

ColumnValue: TypeAlias = str | bytes | UnchangedToast | None
"""One column of tuple data: text, binary, :data:`UNCHANGED_TOAST` or ``None`` for NULL."""

TupleData: TypeAlias = tuple[ColumnValue, ...]
"""A row's column values in the relation's column order; see the module docstring."""

OldTupleKind: TypeAlias = Literal["K", "O"]
"""How an Update/Delete identifies the old row: ``'K'`` key columns only, ``'O'`` the whole row
(REPLICA IDENTITY FULL)."""

COLUMN_FLAG_KEY: Final = 1
"""Column flag bit: the column is part of the relation's replica identity key."""

# The bytes that frame tuple data inside Insert, Update and Delete (as integers, as indexing
# `bytes` gives them): which tuple follows, and each column's kind.
TUPLE_NEW: Final = 0x4E
"""Tuple marker ``'N'``: the new row follows."""

TUPLE_KEY: Final = 0x4B
"""Tuple marker ``'K'``: the old row's replica identity key follows (other columns NULL)."""

TUPLE_OLD: Final = 0x4F
"""Tuple marker ``'O'``: the whole old row follows (REPLICA IDENTITY FULL)."""

VALUE_NULL: Final = 0x6E
"""Column kind ``'n'``: SQL NULL, no value follows."""

VALUE_TOAST: Final = 0x75
"""Column kind ``'u'``: an unchanged TOASTed value, not sent."""

VALUE_TEXT: Final = 0x74
"""Column kind ``'t'``: Int32 length and the value in text format follow."""

VALUE_BINARY: Final = 0x62
"""Column kind ``'b'``: Int32 length and the value in binary format follow."""

TRUNCATE_CASCADE: Final = 1
"""Truncate option bit: TRUNCATE ... CASCADE."""

TRUNCATE_RESTART_IDENTITY: Final = 2
"""Truncate option bit: TRUNCATE ... RESTART IDENTITY."""

MESSAGE_FLAG_TRANSACTIONAL: Final = 1
"""Logical decoding message flag bit: the message was emitted transactionally."""


@dataclass(frozen=True, slots=True)
class Begin:
    """'B': the start of a transaction; its changes follow, then a Commit."""

    final_lsn: int  # LSN of the transaction's commit record (its final LSN)
    commit_time: datetime  # commit timestamp of the transaction, UTC
    xid: int  # transaction id


@dataclass(frozen=True, slots=True)
class Commit:
    """'C': the end of the transaction started by the last Begin."""

    flags: int  # currently unused, always 0
    commit_lsn: int  # LSN of the commit record
    end_lsn: int  # LSN just past the commit record: where to resume after this transaction
    commit_time: datetime  # commit timestamp of the transaction, UTC


@dataclass(frozen=True, slots=True)
class Origin:
    """'O': the transaction was replicated into this server from the named origin."""

    commit_lsn: int  # LSN of the commit on the origin server
    name: str  # replication origin name


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a Relation message."""

    flags: int  # bit COLUMN_FLAG_KEY (1): part of the replica identity key
    name: str  # column name
    type_oid: int  # OID of the column's data type
    atttypmod: int  # type modifier (e.g. varchar length + 4), -1 when none

    @property
    def is_key(self) -> bool:
        """Whether the column is part of the replica identity key."""
        return bool(self.flags & COLUMN_FLAG_KEY)


@dataclass(frozen=True, slots=True)
class Relation:
    """'R': a table's layout, sent before the first change to it (and again after DDL)."""

    relation_id: int  # OID of the relation: the key that change messages refer to
    namespace: str  # schema name; empty string for pg_catalog
    name: str  # relation name
    replica_identity: str  # pg_class.relreplident: 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]  # the published columns, in tuple-data order
    xid: int | None = None  # streamed transaction id, inside a stream block only


@dataclass(frozen=True, slots=True)
class Type:
    """'Y': a user-defined data type used by a following Relation."""

    type_oid: int  # OID of the data type
    namespace: str  # schema name; empty string for pg_catalog
    name: str  # data type name
    xid: int | None = None  # streamed transaction id, inside a stream block only


@dataclass(frozen=True, slots=True)
class Insert:
    """'I': a row was inserted."""

    relation_id: int  # OID of the relation, described by an earlier Relation message
    new: TupleData  # the new row
    xid: int | None = None  # streamed transaction id, inside a stream block only


@dataclass(frozen=True, slots=True)
class Update:
    """'U': a row was updated."""

    relation_id: int  # OID of the relation, described by an earlier Relation message
    # The old row, sent only when the replica identity key changed ('K': key columns, others
    # NULL) or the table has REPLICA IDENTITY FULL ('O': the whole old row); otherwise None.
    old: TupleData | None
    old_kind: OldTupleKind | None  # 'K', 'O', or None when no old row was sent
    new: TupleData  # the new row (unchanged TOASTed columns are UNCHANGED_TOAST)
    xid: int | None = None  # streamed transaction id, inside a stream block only


@dataclass(frozen=True, slots=True)
class Delete:
    """'D': a row was deleted."""

    relation_id: int  # OID of the relation, described by an earlier Relation message
    old: TupleData  # the deleted row: key columns ('K', others NULL) or the whole row ('O')
    old_kind: OldTupleKind  # 'K' replica identity key, 'O' REPLICA IDENTITY FULL
    xid: int | None = None  # streamed transaction id, inside a stream block only


@dataclass(frozen=True, slots=True)
class Truncate:
    """'T': one or more relations were truncated in one statement."""

    options: int  # bits: TRUNCATE_CASCADE (1), TRUNCATE_RESTART_IDENTITY (2)
    relation_ids: tuple[int, ...]  # OIDs of the truncated relations
    xid: int | None = None  # streamed transaction id, inside a stream block only


@dataclass(frozen=True, slots=True)
class LogicalDecodingMessage:
    """'M': a message emitted by pg_logical_emit_message() (sent when ``messages`` is on)."""

    flags: int  # bit MESSAGE_FLAG_TRANSACTIONAL (1): emitted inside the transaction
    lsn: int  # LSN of the message
    prefix: str  # the prefix given to pg_logical_emit_message()
    content: bytes  # the message payload
    xid: int | None = None  # streamed transaction id, inside a stream block only


@dataclass(frozen=True, slots=True)
class StreamStart:
    """'S' (protocol 2+): the start of a block of changes of an in-progress transaction."""

    xid: int  # the streamed transaction's id
    first_segment: bool  # True for the first block of this xid


@dataclass(frozen=True, slots=True)
class StreamStop:
    """'E' (protocol 2+): the end of the current stream block."""


@dataclass(frozen=True, slots=True)
class StreamCommit:
    """'c' (protocol 2+): a streamed transaction committed; apply its streamed changes."""

    xid: int  # the streamed transaction's id
    flags: int  # currently unused, always 0
    commit_lsn: int  # LSN of the commit record
    end_lsn: int  # LSN just past the commit record
    commit_time: datetime  # commit timestamp of the transaction, UTC


@dataclass(frozen=True, slots=True)
class StreamAbort:
    """'A' (protocol 2+): a streamed transaction or one of its subtransactions aborted."""

    xid: int  # the streamed (top-level) transaction's id
    subxid: int  # the aborted subtransaction's id; equals xid when the whole transaction aborted
    abort_lsn: int | None = None  # LSN of the abort; protocol 4 with streaming = parallel only
    abort_time: datetime | None = None  # abort timestamp, UTC; as abort_lsn


Message: TypeAlias = (
    Begin
    | Commit
    | Origin
    | Relation
    | Type
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalDecodingMessage
    | StreamStart
    | StreamStop
    | StreamCommit
    | StreamAbort
)
"""Any decoded pgoutput message."""
