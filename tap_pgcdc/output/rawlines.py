"""A large change's RECORD line written from the tuple's bytes, without copies of its values.

The fast path (`tap_pgcdc.output.tuples`) decodes each value into a str, renders its JSON and
joins the line: for a row of 70 MB, several copies of it at once. For a frame of at least
`LARGE_FRAME` bytes, `line_pieces` plans the same line as pieces instead: the bytes of a value
that is its own JSON (an ASCII number or document), or whose JSON string is the bytes between
quotes (ASCII text without a character to escape; a bytea's hex digits), are slices of the
frame, written as they are; every other value is rendered as on the fast path. Nothing is
written until every piece is ready, so a value the fast path would refuse leaves nothing
written here either.
"""

from __future__ import annotations

import re
import typing as t

from tap_pgcdc import typemap
from tap_pgcdc.output.jsontext import json_string
from tap_pgcdc.replication.messages import VALUE_NULL, VALUE_TEXT

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from tap_pgcdc.output.jsontext import Fragment
    from tap_pgcdc.replication.protocol import Frame

LARGE_FRAME = 1 << 20  # frames from this size are written in pieces

Piece: t.TypeAlias = "str | memoryview"

_BYTEA = typemap.converter(next(p for p in typemap.BUILTIN_TYPES.values() if p.name == "bytea"))
_NOT_ASCII = re.compile(rb"[^\x00-\x7e]")  # JSON text written as it is must be ASCII (no DEL)
_ESCAPED = re.compile(rb"[^\x20\x21\x23-\x5b\x5d-\x7e]")  # what a JSON string escapes, or not ASCII
_QUOTE = '"'
_ESCAPED_TEXT = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def plain_string(text: str) -> bool:
    """True if the JSON string of `text` is `text` between quotes (nothing to escape)."""
    return _ESCAPED_TEXT.search(text) is None


def line_pieces(
    members: Sequence[tuple[str | None, Fragment | None]],
    converters: Sequence[typemap.Converter],
    frame: Frame,
    pos: int,
) -> list[Piece] | None:
    """The members of the record of the TupleData at `pos` (ending `frame`), as pieces.

    `members` are the layout's (prefix ',"name":' or None for a column left out, fragment).
    Returns None where the fast path's renderer returns None: a column count other than
    `len(members)`, unchanged TOAST or binary values, truncated data, bytes after the tuple,
    text that is not UTF-8. Errors of the fragments propagate, as there.
    """
    end = len(frame)
    if end < pos + 2 or int.from_bytes(frame[pos : pos + 2], "big") != len(members):
        return None
    pos += 2
    view = memoryview(frame)
    pieces: list[Piece] = []
    for (prefix, render), convert in zip(members, converters, strict=True):
        if pos >= end:
            return None
        kind = frame[pos]
        if kind == VALUE_NULL:
            pos += 1
            if prefix is not None:
                pieces += (prefix, "null")
            continue
        if kind != VALUE_TEXT or pos + 5 > end:
            return None
        start = pos + 5
        stop = start + int.from_bytes(frame[pos + 1 : start], "big")
        if stop > end:
            return None
        pos = stop
        if prefix is None:
            continue
        value = _piece(view[start:stop], render, convert)
        if value is None:
            return None
        pieces.append(prefix)
        pieces += value
    return pieces if pos == end else None


def _piece(
    value: memoryview, render: Fragment | None, convert: typemap.Converter
) -> tuple[Piece, ...] | None:
    """One value's JSON: slices of the frame where they are the JSON, else the rendered text."""
    if render is None and _NOT_ASCII.search(value) is None:
        return (value,)
    if render is json_string and _ESCAPED.search(value) is None:
        return (_QUOTE, value, _QUOTE)
    if convert is _BYTEA and value[:2].tobytes() == b"\\x" and _ESCAPED.search(value, 2) is None:
        return (_QUOTE, value[2:], _QUOTE)
    try:
        text = str(value, "utf-8")
    except UnicodeDecodeError:
        return None
    return (text if render is None else render(text),)
