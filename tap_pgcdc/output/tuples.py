"""Record JSON rendered straight from a change's tuple bytes: the log's fast output path.

A compiled renderer reads one relation's TupleData (see
`tap_pgcdc.replication.messages`) and writes the JSON object members of its record, without
building a values tuple first. What it cannot render it leaves to the decoder and the general
path, which then report or handle it.
"""

from __future__ import annotations

import struct
import typing as t
from collections.abc import Callable, Sequence
from typing import TypeAlias

from tap_pgcdc.replication.messages import VALUE_NULL, VALUE_TEXT

_unpack_u32 = struct.Struct(">I").unpack_from

TupleRenderer: TypeAlias = Callable[[bytes, int], "tuple[str, int] | None"]
"""(message, offset of its TupleData) -> (the tuple as JSON text, offset after it), or None."""


def tuple_renderer(
    members: Sequence[tuple[str | None, Callable[[str], str] | None]], opening: str
) -> TupleRenderer:
    """Compile a reader of one relation's TupleData that writes its JSON object members directly.

    The change records' fast path (`tap_pgcdc.output.records`): no values tuple, no per-column dispatch.
    ``members[i]`` is column i's member name as JSON, e.g. ``'"id":'`` (None: the column is left
    out), and the function from its text to its JSON (None: the text is the JSON). The result
    starts with ``opening`` and has the members comma-separated, without the closing brace.

    The function returns None for anything it leaves to `tap_pgcdc.replication.decoder.decode` and the general path: a
    column count other than ``len(members)``, unchanged TOAST or binary values, truncated or
    invalid data (which the decoder then reports). Errors of the rendering functions propagate
    (an IndexError among them is taken for invalid data; the general path raises it again).

    The source is generated per relation because unrolling the column loop takes the per-column
    work down to a few operations; it holds only names and integers, names and renderers being
    passed in as bound variables, never spliced into the source.
    """
    count = len(members)
    scope: dict[str, t.Any] = {"unpack": _unpack_u32, "struct_error": struct.error}
    body = [
        "def render(buf, pos):",
        "    end = len(buf)",
        "    try:",
        f"        if buf[pos] != {count >> 8} or buf[pos + 1] != {count & 0xFF}:",
        "            return None",
        "        pos += 2",
    ]
    out: list[str] = []
    for i, (name, render) in enumerate(members):
        body += [
            "        kind = buf[pos]",
            f"        if kind == {VALUE_TEXT}:",
            "            stop = pos + 5 + unpack(buf, pos + 1)[0]",  # unsigned: never negative
            "            if stop > end:",
            "                return None",
        ]
        if name is None:
            body += [
                "            pos = stop",
                f"        elif kind == {VALUE_NULL}:",
                "            pos += 1",
            ]
        else:
            value = "buf[pos + 5:stop].decode()"
            if render is not None:
                scope[f"render_{i}"] = render
                value = f"render_{i}({value})"
            scope[f"name_{i}"] = ("," if out else opening) + name
            out += [f"name_{i}", f"value_{i}"]
            body += [
                f"            value_{i} = {value}",
                "            pos = stop",
                f"        elif kind == {VALUE_NULL}:",
                f"            value_{i} = 'null'",
                "            pos += 1",
            ]
        body += ["        else:", "            return None"]
    scope["opening"] = opening
    joined = f"''.join(({', '.join(out)},))" if out else "opening"
    body += [
        "    except (IndexError, struct_error, UnicodeDecodeError):",
        "        return None",
        f"    return {joined}, pos",
    ]
    exec("\n".join(body), scope)  # generated from names and integers only
    return t.cast("TupleRenderer", scope["render"])
