"""rawlines: a large change's line planned as pieces is the fast path's line (issue 13, item 6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_pgcdc.output.jsontext import fragment, json_string
from tap_pgcdc.output.rawlines import _ESCAPED, line_pieces, plain_string
from tap_pgcdc.output.tuples import tuple_renderer
from tap_pgcdc.replication.messages import UNCHANGED_TOAST, ColumnValue
from tap_pgcdc.typemap import BUILTIN_TYPES, converter
from tests.unit.pgoutput_build import insert

T = {t.name: t for t in BUILTIN_TYPES.values()}
SAMPLES = {
    "int4": ["0", "-2147483648"],
    "numeric": ["1.50", "NaN"],
    "text": ["", 'é"\\\n🐘', "plain", "x" * 300, "del\x7f", "tab\t"],
    "bytea": ["\\x", "\\x00ff10", "\\xdeadbeef" * 50],
    "jsonb": ['{"a": 1.10}', '{"é": "ü"}', "null"],
    "timestamptz": ["2024-01-31 13:14:15.5+00", "infinity"],
}
TYPES = list(SAMPLES)


def text_of(pieces: list[str | memoryview]) -> str:
    return "".join(p if isinstance(p, str) else p.tobytes().decode() for p in pieces)


@st.composite
def rows(draw: st.DrawFn) -> tuple[list[str], list[ColumnValue], list[bool]]:
    names = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=40))
    values: list[ColumnValue] = [
        draw(st.one_of(st.none(), st.sampled_from(SAMPLES[name]))) for name in names
    ]
    selected = draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))
    return names, values, selected


@given(rows())
def test_pieces_are_the_fast_paths_line(
    row: tuple[list[str], list[ColumnValue], list[bool]],
) -> None:
    names, values, selected = row
    converters = [converter(T[name]) for name in names]
    members = [
        (f',"c{i}":' if chosen else None, fragment(convert))
        for i, (convert, chosen) in enumerate(zip(converters, selected, strict=True))
    ]
    message = insert(1, values)
    rendered = tuple_renderer([(None if p is None else p[1:], r) for p, r in members], "{")(
        message, 6
    )
    pieces = line_pieces(members, converters, message, 6)
    assert rendered is not None and pieces is not None
    assert "{" + text_of(pieces)[1:] == rendered[0] or (not pieces and rendered[0] == "{")


def test_plain_values_are_slices_of_the_frame() -> None:
    text, bytea = "a" * 1000, "\\x" + "0f" * 1000
    converters = [converter(T["text"]), converter(T["bytea"]), converter(T["text"])]
    members = [(',"t":', fragment(c)) for c in converters]
    pieces = line_pieces(members, converters, insert(1, [text, bytea, 'q"uote']), 6)
    assert pieces is not None
    slices = [p for p in pieces if isinstance(p, memoryview)]
    assert [len(s) for s in slices] == [1000, 2000]  # the quoted text is rendered instead
    assert text_of(pieces) == f',"t":"{text}","t":"{bytea[2:]}","t":"q\\"uote"'


@pytest.mark.parametrize("values", [[UNCHANGED_TOAST], [b"\x00\x01"], ["x", "y"]])
def test_what_the_fast_path_refuses_is_refused(values: list[ColumnValue]) -> None:
    convert = converter(T["text"])
    members = [(',"c":', fragment(convert))]
    assert line_pieces(members, [convert], insert(1, values), 6) is None


def test_malformed_frames_are_refused() -> None:
    convert = converter(T["text"])
    members = [(',"a":', fragment(convert)), (',"b":', fragment(convert))]
    message = insert(1, ["123", "456"])
    assert line_pieces(members, [convert] * 2, message, 6) is not None
    for cut in range(6, len(message)):
        assert line_pieces(members, [convert] * 2, message[:cut], 6) is None
    assert line_pieces(members, [convert] * 2, message + b"x", 6) is None
    bad = insert(1, ["x", "\u00e9y"]).replace("\u00e9".encode(), b"\xff\xfe")
    assert line_pieces(members, [convert] * 2, bad, 6) is None


def test_a_bad_bytea_raises_as_on_the_fast_path() -> None:
    convert = converter(T["bytea"])
    with pytest.raises(ValueError, match="hex"):
        line_pieces([(',"b":', fragment(convert))], [convert], insert(1, ["zz"]), 6)


def test_plain_means_nothing_to_escape() -> None:
    """Both checks agree with the writer's escaping, character by character."""
    for c in map(chr, [*range(0x300), 0x2028, 0xFFFD, 0x1F418]):
        text = "ab" + c
        plain = json_string(text) == f'"{text}"'
        assert plain_string(text) == plain, repr(c)
        assert (_ESCAPED.search(text.encode()) is None) == plain, repr(c)
