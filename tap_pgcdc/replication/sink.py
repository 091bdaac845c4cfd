"""What the read loop writes through: the sink protocol, implemented on the Singer side.

The loop (`tap_pgcdc.replication.reader`) owns the order of events and every position: which
transactions a stream skips, when STATE is due and what it may claim, what is confirmed to the
server. A sink owns what the changes become: records, schema changes, truncations, the STATE
message itself. The loop hands each change the open transaction's Begin, and calls
`Sink.write_state` only between transactions, never between a Begin and its Commit.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from tap_pgcdc.replication.messages import (
        Begin,
        Delete,
        Insert,
        LogicalDecodingMessage,
        Relation,
        Update,
    )
    from tap_pgcdc.replication.protocol import Frame


class RelationSink(t.Protocol):
    """Where the changes of one followed relation go (what `Sink.relation` returns for it)."""

    @property
    def stream_name(self) -> str:
        """The stream the relation feeds: its bookmark decides which transactions it skips."""
        ...

    def change(self, frame: Frame, pos: int, begin: Begin, *, deleted: bool, key: bool) -> bool:
        """Write a change's record straight from its bytes, if it can be (the fast path).

        Called once per Insert, Update without old row, and Delete, before any decoding.

        Args:
            frame: The whole XLogData frame of the change.
            pos: Where the change's only tuple starts in `frame` (its TupleData ends the frame).
            begin: The open transaction.
            deleted: True for a Delete (the tuple is the old row).
            key: True if the tuple is an old key ('K'): only the replica identity columns.

        Returns:
            True if one record was written; False, with nothing written, to have the change
            decoded and handed to `insert`, `update` or `delete` instead.
        """
        ...

    def insert(self, message: Insert, begin: Begin) -> int:
        """Write an inserted row; returns the number of records written."""
        ...

    def update(self, message: Update, begin: Begin) -> int:
        """Write an updated row (and its old key's deletion, if the key changed); returns the count."""
        ...

    def delete(self, message: Delete, begin: Begin) -> int:
        """Write a deleted row; returns the number of records written."""
        ...

    def truncate(self, begin: Begin, lsn: int) -> None:
        """The relation was truncated by the transaction `begin` opened.

        Args:
            begin: The open transaction.
            lsn: The WAL position of the TRUNCATE's own record: later TRUNCATEs of the same
                table, in this transaction or a later one, have higher positions, and a
                replay sees the same one.
        """
        ...


class Sink(t.Protocol):
    """The read loop's output: relations to route, and STATE at transaction boundaries."""

    def relation(self, message: Relation) -> RelationSink | None:
        """A Relation message: where its changes go from now on, or None if nothing follows it.

        May write what a changed table shape needs (a new SCHEMA) before returning.
        """
        ...

    def commit(self) -> None:
        """The open transaction committed: write whatever records of it the sink still holds.

        Called at every Commit, before the loop may write STATE. A sink may hold a transaction's
        records until then (to complete them in batches), never past it.
        """
        ...

    def write_state(self, advanced: Mapping[str, int]) -> None:
        """Write STATE: the streams in `advanced` have their bookmarks moved to the given LSN.

        Called only at a transaction boundary, after every record the new bookmarks cover has
        been written through this sink. `advanced` may be empty (a STATE the stop requires).
        """
        ...


class MessageSink(t.Protocol):
    """Where logical decoding messages go (pgoutput's `messages` option; optional).

    Its stream has a bookmark like a table's: the loop skips a transactional message whose
    transaction committed before it, and a non-transactional one whose own LSN is before it
    (everything before a bookmark was sent before the STATE that carries it), and moves it with
    every other stream's at transaction boundaries (`advance`, then `Sink.write_state`).
    """

    @property
    def stream_name(self) -> str:
        """The messages stream's name."""
        ...

    @property
    def position(self) -> int:
        """Its bookmark as the read starts (0: none)."""
        ...

    def message(self, message: LogicalDecodingMessage, begin: Begin | None) -> int:
        """Write a message (`begin`: its open transaction; None when non-transactional).

        Returns:
            The records written (0 for a prefix the setting does not keep).
        """
        ...

    def advance(self, lsn: int) -> None:
        """Move the stream's bookmark to `lsn` (the STATE follows through `Sink.write_state`)."""
        ...
