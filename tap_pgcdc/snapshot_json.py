"""Snapshot chunks whose records the server renders as JSON, where its JSON is provably ours.

On the fast path (see `tap_pgcdc.emit`) the snapshot SELECT returns, per row, the record object
ready to frame as a RECORD line. Each column's part is a SQL expression that gives exactly the
JSON the typemap converter and the writer give for the column's text, for the types listed in
`_rendering`, each with the reason it is exact. Every other value (other types, and dates before
year 1, which `to_json` prints differently) arrives as a marker holding the value's output text,
``\\x01<column index>\\x02<text as a JSON string>\\x03``, and Python converts it with the column's
converter and the writer's serializer: the plain path's own code. No other control character can
occur in the rendered text, because every string in it is JSON-escaped.

A keyed table is read in chunks in key order, as on the plain path: each row also carries its
key's text, the last one being where the next chunk and a resumed run start. A thread reads one
chunk ahead, so that the server renders the next chunk while this one is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import re
import threading
import typing as t
from dataclasses import dataclass
from decimal import Decimal

from tap_pgcdc import typemap
from tap_pgcdc.connector import SDC_DELETED_AT, SDC_LSN
from tap_pgcdc.jsontext import ascii_json, json_string, serialize
from tap_pgcdc.pg.quoting import quote_ident, quote_literal

if t.TYPE_CHECKING:
    from collections.abc import Generator, Iterator, Sequence

    import psycopg2.extensions
    from singer_sdk.metrics import Counter

    from tap_pgcdc.connector import ColumnInfo
    from tap_pgcdc.emit import RecordLines
    from tap_pgcdc.streams import PgCdcStream

_OID = {pg_type.name: oid for oid, pg_type in typemap.BUILTIN_TYPES.items()}
_INTEGERS = frozenset(_OID[name] for name in ("int2", "int4", "int8", "oid"))
_STRINGS = frozenset(_OID[name] for name in ("text", "varchar", "bpchar", "name"))


def _builtin_converter(name: str) -> typemap.Converter:
    return typemap.converter(typemap.BUILTIN_TYPES[_OID[name]])


_DATE = _builtin_converter("date")
_TIMESTAMP = _builtin_converter("timestamp")
_TIMESTAMPTZ = _builtin_converter("timestamptz")
_JSONB = _builtin_converter("jsonb")

_MARKER = re.compile("\x01([0-9]+)\x02(.*?)\x03", re.DOTALL)

# glibc's mallopt parameters, and the values the snapshot wants (see _reuse_freed_memory).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's maximum
_TRIM_THRESHOLD = 128 << 20


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


def _base(pg_type: typemap.PgType) -> typemap.PgType:
    while pg_type.kind == "d" and pg_type.base is not None:
        pg_type = pg_type.base
    return pg_type


def _rendering(col: ColumnInfo, convert: typemap.Converter) -> tuple[str, str | None] | None:
    """SQL for the JSON of a non-NULL value as the plain path writes it, and when it applies.

    Returns (JSON SQL, condition or None for always), or None where no rendering is proven.
    Sessions are pinned to DateStyle=ISO and TimeZone=UTC (connector.SESSION_SETTINGS). A domain
    behaves as its base type: `::text` converts through the base type and `to_json` looks through
    domains. Casts to text are I/O conversions (the output function), except bool's.
    """
    x = quote_ident(col.name)
    base = _base(col.type)
    oid = base.oid
    if oid in _INTEGERS and convert is int:
        return f"{x}::text", None  # canonical digits, as str(int(text))
    if oid == _OID["numeric"] and convert is Decimal:
        return f"{x}::text", None  # see jsontext.fragment; NaN, Infinity as the writer's tokens
    if oid == _OID["numeric"] and convert is str:  # use_singer_decimal: the text, quoted
        return f"'\"' || {x}::text || '\"'", None  # digits, '.', '-', NaN, Infinity
    if oid == _OID["bool"] and convert is typemap.BOOL_CONVERTER:
        return f"{x}::text", None  # the bool-to-text cast spells true/false
    if oid in _STRINGS and convert is str:
        # escape_json: \" \\ \b \f \n \r \t and \u00xx for other controls, as the writer
        # escapes; the non-ASCII characters it leaves are escaped in Python (jsontext.ascii_json).
        return f"to_json({x})::text", None
    if oid == _OID["uuid"] and convert is str:
        return f"'\"' || {x}::text || '\"'", None  # hex digits and dashes
    if base.kind == "e" and convert is str:
        return f"to_json({x}::text)::text", None
    if oid == _OID["jsonb"] and convert is _JSONB:
        return f"{x}::text", None  # see jsontext.fragment: the same JSON value, spaced
    # Dates and times: years before 1 print " BC", which the converters rewrite; those go to
    # Python. From year 1 on, and for the infinities:
    if oid == _OID["date"] and convert is _DATE:
        # the ISO text, unchanged by the converter
        return f"'\"' || {x}::text || '\"'", f"{x} >= '0001-01-01' OR NOT isfinite({x})"
    # to_json prints the ISO text with 'T' and, in UTC, the offset as "+00:00": what the
    # converters make of the text.
    if oid == _OID["timestamp"] and convert is _TIMESTAMP:
        return f"to_json({x})::text", f"{x} >= '0001-01-01 00:00:00' OR NOT isfinite({x})"
    if oid == _OID["timestamptz"] and convert is _TIMESTAMPTZ:
        return f"to_json({x})::text", f"{x} >= '0001-01-01 00:00:00+00' OR NOT isfinite({x})"
    return None


def _marker_sql(col: ColumnInfo, index: int) -> str:
    # concat() calls the output function, as the plain path reads the value (`::text` would trim
    # char(n) and print inet masks); num_nulls, unlike IS NULL, is false for a row of NULLs.
    x = quote_ident(col.name)
    return (
        f"CASE WHEN num_nulls({x}) = 0 THEN "
        f"E'\\x01{index}\\x02' || to_json(concat({x}))::text || E'\\x03' END"
    )


def column_sql(col: ColumnInfo, index: int, convert: typemap.Converter) -> str:
    """SQL for the JSON of one column's value: `null` for NULL, a marker where Python converts."""
    marker = _marker_sql(col, index)
    rendering = _rendering(col, convert)
    if rendering is None:
        value = marker
    else:
        json_sql, condition = rendering
        value = (
            json_sql
            if condition is None
            else f"CASE WHEN {condition} THEN {json_sql} ELSE {marker} END"
        )
    # NULL exactly when the value is NULL (every function above is strict).
    return f"coalesce({value}, 'null')"


def record_sql(fields: Sequence[tuple[str, str]], meta: str) -> str:
    """SQL for a record object: (name, value SQL) pairs, then the constant JSON members `meta`.

    The JSON between values goes in as literals: '{"a":' || a || ',"b":' || b || ',"m":1}'.
    """
    parts: list[str] = []
    text = "{"
    for i, (name, value) in enumerate(fields):
        text += ("," if i else "") + json_string(name) + ":"
        parts.append(quote_literal(text))
        parts.append(value)
        text = ""
    if meta:
        text += ("," if fields else "") + meta
    parts.append(quote_literal(text + "}"))
    return " || ".join(parts)


def resolve_markers(text: str, converters: Sequence[typemap.Converter]) -> str:
    """Replace each marker with the JSON the writer gives the converted value."""

    def value(match: re.Match[str]) -> str:
        convert = converters[int(match.group(1))]
        return serialize(convert(json.loads(match.group(2))))

    return _MARKER.sub(value, text)


class JsonSnapshot:
    """Reads one stream's snapshot as server-rendered records and writes their lines."""

    def __init__(
        self, stream: PgCdcStream, columns: Sequence[ColumnInfo], lines: RecordLines
    ) -> None:
        self.stream = stream
        self.table = stream.table
        self.lines = lines
        self.converters = [stream.converter_for(col.name) for col in columns]
        fields = [
            (col.name, column_sql(col, index, self.converters[index]))
            for index, col in enumerate(columns)
            if lines.selected(col.name)
        ]
        meta = ""
        if not self.table.is_view:  # as PgCdcStream._make_record
            lsn = stream.snapshot_lsn
            values = {SDC_LSN: "null" if lsn is None else str(int(lsn)), SDC_DELETED_AT: "null"}
            meta = ",".join(
                f"{json_string(name)}:{value}"
                for name, value in values.items()
                if lines.selected(name)
            )
        self.record = record_sql(fields, meta)
        _reuse_freed_memory()

    def _write(self, chunk: _Chunk, counter: Counter) -> None:
        head, tail = self.lines.head, chunk.tail
        text = "".join((head, (tail + head).join([row[0] for row in chunk.rows]), tail))
        if "\x01" in text:
            text = resolve_markers(text, self.converters)
        self.lines.write(ascii_json(text))
        counter.increment(len(chunk.rows))

    def read_by_key(
        self,
        conn: psycopg2.extensions.connection,
        progress: dict[str, t.Any],
        chunk_size: int,
        counter: Counter,
    ) -> None:
        """Read in key order, a chunk at a time; STATE after each chunk says where to resume."""
        chunks = self._key_chunks(conn, progress.get("after"), chunk_size)
        for chunk in _prefetched(chunks):
            if chunk.rows:
                self._write(chunk, counter)
                # Every row of this chunk has been written: resume after its last key.
                progress["after"] = list(chunk.rows[-1][1:])
                self.stream.write_state()

    def _key_chunks(
        self, conn: psycopg2.extensions.connection, after: list[str] | None, chunk_size: int
    ) -> Generator[_Chunk, None, None]:
        """The rows in key order from `after` on: (record JSON, key text...) per row."""
        key_cols = [self.table.column(name) for name in self.table.key]
        key_list = ", ".join(f"src.{quote_ident(col.name)}" for col in key_cols)
        # The driver fills in %s placeholders: a '%' in a name must be doubled.
        keys = key_list.replace("%", "%%")
        casts = ", ".join(f"%s::{col.sql_type.replace('%', '%%')}" for col in key_cols)
        select = f"SELECT {self.record}, {key_list} FROM {self.table.quoted_name} AS src"
        select = select.replace("%", "%%")
        while True:
            where = "" if after is None else f" WHERE ({keys}) > ({casts})"
            tail = self.lines.tail()
            with conn.cursor() as cur:
                cur.execute(f"{select}{where} ORDER BY {keys} LIMIT {chunk_size}", after or [])
                rows = cur.fetchall()
            yield _Chunk(rows, tail)
            if len(rows) < chunk_size:
                return
            after = list(rows[-1][1:])

    def read_all(
        self, conn: psycopg2.extensions.connection, chunk_size: int, counter: Counter
    ) -> None:
        """Read a table without key, or a view, in one pass (an interrupted run starts over)."""
        for chunk in _prefetched(self._all_chunks(conn, chunk_size)):
            if chunk.rows:
                self._write(chunk, counter)
                # As the SDK's loop does every so many records: a STATE, hence a flush.
                self.stream.write_state()

    def _all_chunks(
        self, conn: psycopg2.extensions.connection, chunk_size: int
    ) -> Generator[_Chunk, None, None]:
        with conn.cursor(name=f"tap_pgcdc_{self.table.oid}") as cur:
            cur.itersize = chunk_size
            cur.execute(f"SELECT {self.record} FROM {self.table.quoted_name} AS src")
            while True:
                tail = self.lines.tail()
                rows = cur.fetchmany(chunk_size)
                yield _Chunk(rows, tail)
                if len(rows) < chunk_size:
                    return


@dataclass(frozen=True, slots=True)
class _Chunk:
    rows: list[tuple[str, ...]]  # record JSON first
    tail: str  # what follows each record: time_extracted of when the chunk was read


_T = t.TypeVar("_T")
_DONE = object()


def _prefetched(items: Generator[_T, None, None]) -> Iterator[_T]:
    """`items`, produced one ahead by a thread: the next chunk is read while this one is written.

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
        thread.join()


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException
