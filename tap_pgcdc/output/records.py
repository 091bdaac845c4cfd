"""RECORD lines written straight to stdout, when the SDK's per-record work would change nothing.

The SDK writes a record by popping deselected properties, conforming types, passing it through
every stream map, building a RecordMessage and serializing its dict. With no stream map, no
flattening and no nested selection in effect, all of that amounts to one JSON line. Each stream
therefore gets its emitter once (:func:`record_lines`):

- ``None``: the SDK's path, ``stream.write_record(record)``, which does everything the
  SDK does (stream maps, flattening, selection, BATCH, dry-run limits).
- a :class:`RecordLines`: writes that same line itself, from values already rendered as JSON.

A line from :class:`RecordLines` has the SDK's fields ("type", "stream", "record", "version" when
the stream has one, "time_extracted"), only the selected properties, and for every value the JSON
value the writer produces for the converter's result (see `tap_pgcdc.output.jsontext.fragment`).
`TAP_PGCDC_FAST_OUTPUT=0` in the environment forces the SDK's path, for comparisons.
"""

from __future__ import annotations

import datetime
import io
import os
import sys
import typing as t
from dataclasses import dataclass

from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.streams.core import Stream

from tap_pgcdc import sdk
from tap_pgcdc.output.fields import SDC_DELETED_AT, SDC_LSN
from tap_pgcdc.output.jsontext import json_string, serialize
from tap_pgcdc.output.rawlines import LARGE_FRAME, line_pieces, plain_string
from tap_pgcdc.output.tuples import TupleRenderer, tuple_renderer
from tap_pgcdc.output.writer import PgCdcWriter

if t.TYPE_CHECKING:
    # The SDK's stream class, not the tap's: the tap's stream module imports this one.
    from singer_sdk.sql import SQLStream

    from tap_pgcdc.output.jsontext import Fragment
    from tap_pgcdc.output.rawlines import Piece
    from tap_pgcdc.output.relations import RelationPlan
    from tap_pgcdc.replication.messages import Begin, TupleData
    from tap_pgcdc.replication.protocol import Frame

FAST_OUTPUT_ENV = "TAP_PGCDC_FAST_OUTPUT"

# --- one stream: the emitter ---------------------------------------------------------------------

# One entry per stream object for the life of the process (a tap has a handful of streams); a
# plain dict, because the log reader asks once per change.
_chosen: dict[SQLStream, RecordLines | None] = {}


def record_lines(stream: SQLStream) -> RecordLines | None:
    """The stream's fast emitter, or None where records must take the SDK's path.

    Chosen once per stream: what decides it (stream maps, flattening, selection, the writer) is
    fixed for the run.
    """
    try:
        return _chosen[stream]
    except KeyError:
        lines = RecordLines(stream) if _sdk_would_copy(stream) else None
        _chosen[stream] = lines
        if lines is None:
            stream.logger.info(
                "Records of %s go through the SDK's record path (stream maps, flattening or "
                "nested selection in effect, or %s=0).",
                stream.name,
                FAST_OUTPUT_ENV,
            )
        else:
            stream.logger.info("Records of %s are written directly.", stream.name)
        return lines


def snapshot_lines(stream: SQLStream) -> RecordLines | None:
    """Like `record_lines`, for records the SDK's own sync loop would otherwise write.

    That loop also enforces the dry-run record limit, runs `post_process` and syncs child
    streams; the fast path is only taken when none of these is in play. Under `batch_config`
    the caller may send the lines to BATCH files instead (`output.batch_files`).
    """
    if (
        stream.ABORT_AT_RECORD_COUNT is not None
        or type(stream).post_process is not Stream.post_process
        or stream.child_streams
    ):
        return None
    return record_lines(stream)


def _sdk_would_copy(stream: SQLStream) -> bool:
    """True if the SDK would write every record as is, apart from deselected properties."""
    if os.environ.get(FAST_OUTPUT_ENV, "1") == "0":
        return False
    maps = stream.stream_maps
    if len(maps) != 1:
        return False
    only = maps[0]
    return (
        type(only) is SameRecordTransform
        and only.stream_alias == stream.name
        and not only.flattening_enabled
        and stream.TYPE_CONFORMANCE_LEVEL == TypeConformanceLevel.NONE
        and isinstance(sdk.message_writer(stream), PgCdcWriter)
        # Selection below the top level (inside object values) is the SDK's to apply.
        and all(selected for crumb, selected in stream.mask.items() if len(crumb) > 2)
    )


# time_extracted of log records is refreshed at each transaction and after this many records.
TIME_REFRESH_RECORDS = 1000


Member: t.TypeAlias = "tuple[str | None, Fragment | None]"
"""One column of a layout: its member prefix ',"name":' (None: left out) and its fragment."""


@dataclass(frozen=True, slots=True)
class _Layout:
    """How a relation's tuples become record members, one entry per column in tuple order."""

    new: tuple[Member, ...]  # a whole row: the selected columns
    key: tuple[Member, ...]  # an old key ('K'): the selected replica identity columns only
    render_new: TupleRenderer  # the same, compiled: TupleData bytes -> the line up to the members
    render_key: TupleRenderer


class RecordLines:
    """Writes one stream's RECORD messages as JSON lines, exactly as the SDK would frame them."""

    def __init__(self, stream: SQLStream) -> None:
        self.stream = stream
        self.head = '{"type":"RECORD","stream":' + json_string(stream.name) + ',"record":'
        self._open = self.head + "{"
        self._mask = stream.mask
        self._layouts: dict[RelationPlan, _Layout] = {}
        self._begin: Begin | None = None
        self._state = stream.state_manager
        self._version: int | None = None
        self._count = 0
        self._tail = ""
        self._ends = ("", "")

    def selected(self, name: str) -> bool:
        """Whether the property is in the output (the SDK pops deselected ones)."""
        return bool(self._mask[("properties", name)])

    def tail(self) -> str:
        """What follows the record object, for records extracted now (newline included).

        The SDK stamps each record with the clock when it writes it; here records read together
        (a snapshot chunk, a transaction or a thousand of its changes) share one stamp.
        """
        version = sdk.table_version(self.stream)
        now = datetime.datetime.now(datetime.UTC).isoformat()
        if version is None:
            return f',"time_extracted":"{now}"}}\n'
        return f',"version":{int(version)},"time_extracted":"{now}"}}\n'

    def write(self, text: str) -> None:
        """Write complete lines; a STATE written later tells the SDK they need covering."""
        sys.stdout.write(text)
        self.stream.state_manager.is_flushed = False

    # --- log changes ---------------------------------------------------------------------------

    def _refresh(self, begin: Begin) -> None:
        """A new transaction, or many records since the last stamp: new time, new metadata."""
        self._begin = begin
        self._count = 0
        self._state = self.stream.state_manager
        self._version = sdk.table_version(self.stream)
        self._tail = tail = self.tail()
        lsn = f"{json_string(SDC_LSN)}:{begin.final_lsn}"
        deleted_at = json_string(SDC_DELETED_AT)
        ends = []
        for deleted in (False, True):
            meta = [lsn] if self.selected(SDC_LSN) else []
            if self.selected(SDC_DELETED_AT):
                at = json_string(begin.commit_time.isoformat()) if deleted else "null"
                meta.append(f"{deleted_at}:{at}")
            ends.append("".join("," + member for member in meta) + "}" + tail)
        self._ends = (ends[0], ends[1])

    def _stamp(self, begin: Begin) -> None:
        if (
            begin is not self._begin
            or self._count >= TIME_REFRESH_RECORDS
            or sdk.table_version(self.stream) != self._version  # TRUNCATE: a new version follows
        ):
            self._refresh(begin)
        self._count += 1

    def dict_line(self, record: dict[str, t.Any], begin: Begin) -> None:
        """Write a change record built as a dict (metadata included), serialized by the writer."""
        self._stamp(begin)
        selected = self.selected
        kept = {name: value for name, value in record.items() if selected(name)}
        if sum(len(v) for v in kept.values() if isinstance(v, str)) < LARGE_FRAME:
            self.write(self.head + serialize(kept) + self._tail)
            return
        # A large record: written a member at a time, a long plain string as it is, so that no
        # copy of the whole line (or of the record's JSON) is ever made.
        write = self.write
        write(self._open)
        for i, (name, value) in enumerate(kept.items()):
            write(("," if i else "") + json_string(name) + ":")
            if isinstance(value, str) and len(value) >= LARGE_FRAME and plain_string(value):
                write('"')
                write(value)
                write('"')
            else:
                write(serialize(value))
        write("}" + self._tail)

    def change_line(
        self, plan: RelationPlan, values: TupleData, begin: Begin, *, deleted: bool, key: bool
    ) -> bool:
        """Write the record of a decoded tuple; False (nothing written) if a value is missing.

        `key`: the tuple is an old key ('K'), which holds only the replica identity columns (its
        other values are placeholders). A value the server did not send (unchanged TOAST) makes
        this return False: the caller knows how to complete the row.
        """
        layout = self._layouts.get(plan) or self._layout(plan)
        members = layout.key if key else layout.new
        if len(values) != len(members):
            return False
        parts: list[str] = []
        append = parts.append
        for (prefix, render), value in zip(members, values, strict=True):
            if prefix is None:
                continue
            if value is None:
                append(prefix + "null")
            elif isinstance(value, str):
                append(prefix + (value if render is None else render(value)))
            else:
                return False
        self._write_members(parts, begin, deleted)
        return True

    def tuple_line(
        self,
        plan: RelationPlan,
        message: Frame,
        pos: int,
        begin: Begin,
        *,
        deleted: bool,
        key: bool,
    ) -> bool:
        """Write the record of the tuple that ends `message` at `pos`, rendered from its bytes.

        False (nothing written) where `tuples.tuple_renderer` leaves the tuple to the general
        path, or if bytes follow the tuple.
        """
        layout = self._layouts.get(plan) or self._layout(plan)
        if len(message) >= LARGE_FRAME:
            raw = _raw_stdout()
            if raw is not None:
                members = layout.key if key else layout.new
                pieces = line_pieces(members, plan.converters, message, pos)
                if pieces is None:
                    return False
                self._write_pieces(raw, pieces, begin, deleted)
                return True
        if not isinstance(message, bytes):  # a large frame, not written above: as bytes here
            message = bytes(message)
        rendered = (layout.render_key if key else layout.render_new)(message, pos)
        if rendered is None or rendered[1] != len(message):
            return False
        self._stamp(begin)
        line, end = rendered[0], self._ends[deleted]
        if line[-1] == "{":  # no column selected: the metadata loses its leading comma
            end = end[1:] if end[0] == "," else end
        sys.stdout.write(line + end)
        self._state.is_flushed = False
        return True

    def _write_pieces(
        self, raw: _BinaryOut, pieces: list[Piece], begin: Begin, deleted: bool
    ) -> None:
        """Write a large record's line from its pieces, straight to stdout's binary buffer.

        Text already written to stdout goes first (a flush), then the pieces: the frame's slices
        as they are (ASCII), the rest encoded as stdout encodes.
        """
        self._stamp(begin)
        end = self._ends[deleted]
        out = sys.stdout
        out.flush()
        if pieces:
            first = t.cast("str", pieces[0])  # a member's prefix: its leading comma dropped
            pieces[0] = self._open + first[1:]
        else:
            pieces.append(self._open)
            end = end[1:] if end[0] == "," else end
        pieces.append(end)
        encoding, errors = out.encoding, out.errors or "strict"
        for piece in pieces:
            raw.write(piece.encode(encoding, errors) if isinstance(piece, str) else piece)
        self._state.is_flushed = False

    def _write_members(self, parts: list[str], begin: Begin, deleted: bool) -> None:
        self._stamp(begin)
        end = self._ends[deleted]
        # Every member comes with a leading comma, which the first one drops.
        if parts:
            parts[0] = self._open + parts[0][1:]
        else:
            parts.append(self._open)
            end = end[1:] if end[0] == "," else end
        parts.append(end)
        sys.stdout.write("".join(parts))
        self._state.is_flushed = False

    def _layout(self, plan: RelationPlan) -> _Layout:
        prefixes = [
            "," + json_string(name) + ":" if self.selected(name) else None for name in plan.names
        ]
        identity = set(plan.identity_positions)
        new = tuple(zip(prefixes, plan.fragments, strict=True))
        key = tuple(
            (prefix if i in identity else None, render) for i, (prefix, render) in enumerate(new)
        )
        layout = _Layout(
            new=new,
            key=key,
            render_new=tuple_renderer(_names(new), self._open),
            render_key=tuple_renderer(_names(key), self._open),
        )
        self._layouts[plan] = layout
        return layout


def _raw_stdout() -> _BinaryOut | None:
    """stdout's binary layer, if stdout is a text stream over one (not a test's capture)."""
    raw = getattr(sys.stdout, "buffer", None)
    if isinstance(raw, io.BufferedIOBase):
        return raw
    if isinstance(raw, io.RawIOBase):  # PYTHONUNBUFFERED: the file itself
        return _WholeWrites(raw)
    return None


class _BinaryOut(t.Protocol):
    def write(self, data: bytes | memoryview, /) -> int | None: ...


@dataclass(frozen=True, slots=True)
class _WholeWrites:
    """A raw file whose writes are retried until all is written (a pipe may take part)."""

    raw: io.RawIOBase

    def write(self, data: bytes | memoryview, /) -> int:
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += self.raw.write(view[done:]) or 0
        return done


def _names(members: tuple[Member, ...]) -> list[tuple[str | None, Fragment | None]]:
    """Members with their names as `tuple_renderer` takes them: '"name":', no comma."""
    return [(None if prefix is None else prefix[1:], render) for prefix, render in members]
