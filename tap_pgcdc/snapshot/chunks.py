"""Snapshot chunks whose records the server renders as JSON, written as RECORD lines.

On the fast path (see `tap_pgcdc.output.records`) the snapshot SELECT returns, per row, the record object
ready to frame as a RECORD line (`render`). A keyed table is read in chunks in key order, as on
the plain path (`query`): each row also carries its key's text, the last one being where the
next chunk and a resumed run start. A thread reads one chunk ahead, so that the server renders
the next chunk while this one is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import queue
import threading
import typing as t
from dataclasses import dataclass

from tap_pgcdc.output.fields import SDC_DELETED_AT, SDC_LSN
from tap_pgcdc.output.jsontext import ascii_json, json_string
from tap_pgcdc.snapshot.parallel import chunk_starts, in_order
from tap_pgcdc.snapshot.query import ChunkQuery, Row, all_chunks, key_chunks
from tap_pgcdc.snapshot.render import MARKER_START, column_sql, record_sql, resolve_markers

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    import psycopg2.extensions
    from singer_sdk.metrics import Counter

    from tap_pgcdc import typemap
    from tap_pgcdc.pg.catalog import ColumnInfo, TableInfo


class Lines(t.Protocol):
    """Where a stream's RECORD lines go: the fast emitter (`emit.RecordLines`)."""

    @property
    def head(self) -> str:
        """What precedes a record object in its line."""

    def tail(self) -> str:
        """What follows a record object, for records extracted now (newline included)."""

    def write(self, text: str) -> None:
        """Write complete lines."""

    def selected(self, name: str) -> bool:
        """Whether the property is in the output."""


# glibc's mallopt parameters, and the values the snapshot wants (see _reuse_freed_memory).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's maximum
_TRIM_THRESHOLD = 128 << 20
_GROUP_BYTES = 4 << 20  # lines joined into one write, about
_KEPT_LAST_BYTES = 1 << 20  # the last record kept for closing.py, if smaller (see last_line)
_CHUNK_BYTES = 32 << 20  # records of one chunk, about (see _sized_chunks)


def _reuse_freed_memory() -> None:
    """Keep freed buffers of a few MB for reuse instead of returning them to the kernel.

    Every chunk allocates and frees buffers of megabytes (the fetched rows, the joined lines, their
    encoding). By default glibc gives such blocks back on free (unmapping them, or trimming the
    heap), so the next chunk faults them in again, zero-filled: as much kernel time as the tap's
    own work on a million rows. Above these thresholds it keeps them; peak RSS stays the same,
    as the next chunk reuses the memory. A process-wide setting, harmless to the rest of the run.
    """
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


class JsonSnapshot:
    """Reads one stream's snapshot as server-rendered records and writes their lines."""

    def __init__(
        self,
        table: TableInfo,
        columns: Sequence[ColumnInfo],
        converters: Sequence[typemap.Converter],
        lines: Lines,
        *,
        snapshot_lsn: int | None,
        chunk_size: int,
        write_state: Callable[[], None],
        where: str | None = None,
    ) -> None:
        """Prepare the snapshot query.

        Args:
            table: the table (or view) to read.
            columns: the columns read, key columns included; each selected one is rendered.
            converters: the plain path's converter of each column, in the same order.
            lines: where the records go, and which properties are selected.
            snapshot_lsn: the `_sdc_lsn` of the records (the snapshot's consistent point).
            chunk_size: rows per chunk.
            write_state: writes the tap's STATE (after each chunk: where a resumed run starts).
            where: the stream's row filter (None: every row).
        """
        self.table = table
        self.lines = lines
        self.converters = list(converters)
        self.write_state = write_state
        fields = [
            (col.name, column_sql(col, index, self.converters[index]))
            for index, col in enumerate(columns)
            if lines.selected(col.name)
        ]
        meta = ""
        if not table.is_view:  # as the plain path's records (PgCdcStream.get_records)
            lsn = "null" if snapshot_lsn is None else str(int(snapshot_lsn))
            values = {SDC_LSN: lsn, SDC_DELETED_AT: "null"}
            meta = ",".join(
                f"{json_string(name)}:{value}"
                for name, value in values.items()
                if lines.selected(name)
            )
        self.query = ChunkQuery(table, (record_sql(fields, meta),), chunk_size, where)
        self.rows = 0  # records written
        # The last record written (its JSON, head and tail), unless it is large: see last_line.
        self._last: tuple[str, str, str] | None = None
        _reuse_freed_memory()

    def _write(self, chunk: _Chunk, counter: Counter) -> None:
        """Write a chunk's lines, joined a few MB at a time: never a copy of a whole chunk."""
        head, tail = self.lines.head, chunk.tail
        group: list[str] = []
        size = 0
        for row in chunk.rows:
            record: str = row[0]
            if len(record) >= _GROUP_BYTES:  # a large row: its own writes, no joined copy
                self._write_text("".join(group))
                group, size = [], 0
                self.lines.write(head)
                self._write_text(record)
                self.lines.write(tail)
                continue
            group += (head, record, tail)
            size += len(record)
            if size >= _GROUP_BYTES:
                self._write_text("".join(group))
                group, size = [], 0
        self._write_text("".join(group))
        last: str | None = chunk.rows[-1][0] if chunk.rows else None
        if last is not None:
            self._last = (head, last, tail) if len(last) < _KEPT_LAST_BYTES else None
        counter.increment(len(chunk.rows))
        self.rows += len(chunk.rows)

    @property
    def last_line(self) -> str:
        """The last record line written (newline included); "" if none, or if it was large.

        Kept for `closing.py`, which may write it again at the end of the run. A large record
        is not kept (it would stay in memory for the rest of the run): its snapshot's resume
        marker may then stay in a batching target's state, which costs the next run a read of
        the last chunk again, nothing more.
        """
        if self._last is None:
            return ""
        head, record, tail = self._last
        text = head + record + tail
        if MARKER_START in text:
            text = resolve_markers(text, self.converters)
        return ascii_json(text)

    def _write_text(self, text: str) -> None:
        if MARKER_START in text:
            text = resolve_markers(text, self.converters)
        if text:
            self.lines.write(ascii_json(text))

    def read_by_key(
        self,
        conn: psycopg2.extensions.connection,
        progress: dict[str, t.Any],
        counter: Counter,
        readers: Sequence[psycopg2.extensions.connection] = (),
    ) -> None:
        """Read in key order, a chunk at a time; STATE after each chunk says where to resume.

        Args:
            conn: the snapshot's connection (in the exported snapshot's transaction).
            progress: the stream's snapshot bookmark; its "after" is the last key written.
            counter: counts the records written.
            readers: more connections in the same snapshot: chunks are then read in parallel
                (see parallel.py) and still written, with their STATEs, in key order.
        """
        after = progress.get("after")
        chunks: Generator[_Chunk, None, None]
        if readers:
            chunks = self._parallel([conn, *readers], after)
        else:
            chunks = _prefetched(self._stamped(_sized_chunks(conn, self.query, after)))
        with contextlib.closing(chunks):
            for chunk in chunks:
                if chunk.rows:
                    self._write(chunk, counter)
                    # Every row of this chunk has been written: resume after its last key.
                    progress["after"] = self.query.key_of(chunk.rows[-1])
                    self.write_state()

    def _parallel(
        self, conns: Sequence[psycopg2.extensions.connection], after: Sequence[str] | None
    ) -> Generator[_Chunk, None, None]:
        """The chunks after `after`, in key order: the first alone, the rest by one thread each.

        The first chunk (sized from the statistics, as in `_sized_chunks`) measures the rows:
        the rest share one size, from its largest record, with the byte budget shared by the
        chunks in flight (up to 2 per worker), since the boundaries are taken once.
        """
        conn = conns[0]  # the workers start after the boundaries: until then, this thread's
        query = self.query
        first = dataclasses.replace(
            query, size=min(query.size, _fitting(_average_row_bytes(conn, self.table.oid)))
        )
        tail = self.lines.tail()
        with conn.cursor() as cur:
            cur.execute(*first.keyed(after))
            rows = cur.fetchall()
        yield _Chunk(rows, tail)
        if len(rows) < first.size:
            return
        after = query.key_of(rows[-1])
        largest = max(len(row[0]) for row in rows) * len(conns)
        query = dataclasses.replace(query, size=min(query.size, _fitting(largest)))
        with conn.cursor() as cur:
            cur.execute(*query.boundaries(after))
            bounds = [list(row) for row in cur.fetchall()]

        def read(reader: psycopg2.extensions.connection, start: Sequence[str] | None) -> _Chunk:
            tail = self.lines.tail()  # before the chunk is queried, as `_stamped`
            with reader.cursor() as cur:
                cur.execute(*query.keyed(start))
                return _Chunk(cur.fetchall(), tail)

        yield from in_order(conns, chunk_starts(after, bounds), read, ahead=2 * len(conns))

    def read_all(self, conn: psycopg2.extensions.connection, counter: Counter) -> None:
        """Read a table without key, or a view, in one pass (an interrupted run starts over)."""
        for chunk in _prefetched(self._stamped(all_chunks(conn, self.query))):
            if chunk.rows:
                self._write(chunk, counter)
                # As the SDK's loop does every so many records: a STATE, hence a flush.
                self.write_state()

    def _stamped(self, chunks: Generator[list[Row], None, None]) -> Generator[_Chunk, None, None]:
        """Each chunk with the tail of records extracted when it was queried."""
        with contextlib.closing(chunks):  # in the thread that uses the connection
            while True:
                tail = self.lines.tail()  # before the chunk is queried
                rows = next(chunks, None)
                if rows is None:
                    return
                yield _Chunk(rows, tail)


def _sized_chunks(
    conn: psycopg2.extensions.connection, query: ChunkQuery, after: Sequence[str] | None
) -> Generator[list[Row], None, None]:
    """`key_chunks`, with fewer rows per chunk where rows are large: about `_CHUNK_BYTES` each.

    The first chunk's size comes from the table's statistics (its size over its row count,
    TOAST included) where they say rows are large; each later one from the largest record of
    the chunk before. Small rows keep the configured size.
    """
    size = min(query.size, _fitting(_average_row_bytes(conn, query.table.oid)))
    while True:
        chunks = key_chunks(conn, dataclasses.replace(query, size=size), after)
        with contextlib.closing(chunks):
            rows = next(chunks)  # one query: this chunk only
        yield rows
        if len(rows) < size:
            return
        after = query.key_of(rows[-1])
        size = min(query.size, _fitting(max(len(row[0]) for row in rows)))


def _fitting(row_bytes: int) -> int:
    """Rows of about `row_bytes` that fit in a chunk's byte budget (at least one)."""
    return max(1, _CHUNK_BYTES // row_bytes) if row_bytes > 0 else 1 << 62


def _average_row_bytes(conn: psycopg2.extensions.connection, oid: int) -> int:
    """The table's size over its estimated row count (0: no statistics, or no storage)."""
    with conn.cursor() as cur:
        cur.execute(
            # As bigint: the connection may read float8 as text (raw_text_casters).
            "SELECT CASE WHEN reltuples > 0"
            " THEN (pg_catalog.pg_table_size(oid) / reltuples)::bigint END"
            " FROM pg_catalog.pg_class WHERE oid = %s",
            (oid,),
        )
        row = cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


@dataclass(frozen=True, slots=True)
class _Chunk:
    rows: list[Row]  # record JSON first
    tail: str  # what follows each record: time_extracted of when the chunk was read


_T = t.TypeVar("_T")
_DONE = object()


def _prefetched(items: Generator[_T, None, None]) -> Generator[_T, None, None]:
    """`items`, produced one ahead by a thread: the next chunk is read while this one is written.

    One ahead only: the thread reads the next item once the consumer has taken the one before
    (so two chunks are in memory at most, the one written and the one read).

    The server renders the next chunk instead of waiting for the tap to write this one (the
    driver lets go of the GIL while it waits for the server). Only the thread touches the
    connection until the iteration is over, and it is joined before this returns, also on an
    error; an error in the thread is raised here.
    """
    handoff: queue.Queue[t.Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                handoff.put(item)
                handoff.join()  # taken: read the next one while the consumer writes this one
                if stop.is_set():
                    return
            handoff.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            handoff.put(_Failure(exc))
        finally:
            items.close()  # closes an open cursor here, in the thread that uses the connection

    thread = threading.Thread(target=produce, name="tap-pgcdc-snapshot-read", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            handoff.task_done()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let a blocked put() finish, then the thread sees `stop`
            with contextlib.suppress(queue.Empty):
                handoff.get(timeout=0.1)
                handoff.task_done()
        thread.join()


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException
