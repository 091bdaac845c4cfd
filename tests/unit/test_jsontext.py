"""Value by value, the fast paths' JSON is the writer's JSON of the converted value.

`fragment(convert)(text)` (or the text itself where `fragment` returns None) must parse to the
same value as `serialize(convert(text))`, the plain path: the same type, digits and exponent,
NaN and the infinities as strings. Where the writer's own encoding is used it is byte for byte
the same (a numeric keeps Postgres' spelling of the same decimal). A compiled `tuple_renderer` must give, column by column, what decoding the tuple and
rendering each value gives.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_pgcdc.output.jsontext import ascii_json, fragment, json_string, serialize
from tap_pgcdc.output.tuples import tuple_renderer
from tap_pgcdc.replication.decoder import decode
from tap_pgcdc.replication.messages import UNCHANGED_TOAST, ColumnValue
from tap_pgcdc.typemap import BUILTIN_TYPES, NUMERIC_CONVERTER, converter
from tests.unit.pgoutput_build import insert
from tests.unit.test_typemap import VALUES

T = {t.name: t for t in BUILTIN_TYPES.values()}


def _integer(text: str) -> int | Decimal:
    return int(text) if len(text.lstrip("-")) <= 4300 else Decimal(text)  # int()'s digit limit


def parsed(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=_integer)


def fast_json(convert: Any, text: str) -> str:
    render = fragment(convert)
    return ascii_json(text if render is None else render(text))


@pytest.mark.parametrize(("t", "text", "expected"), [(t, s, e) for t, s, e in VALUES])
def test_fragment_is_the_writers_json_of_the_value(t: Any, text: str, expected: Any) -> None:
    for singer_decimal in (False, True):
        convert = converter(t, use_singer_decimal=singer_decimal)
        plain = serialize(convert(text))
        fast = fast_json(convert, text)
        assert repr(parsed(fast)) == repr(parsed(plain))
        if fragment(convert) is not None and convert is not NUMERIC_CONVERTER:
            assert fast == plain  # the writer's own encoding: the same bytes


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("jsonb", '{"a": [1.10, 1e-7, -0.0, "é\\u0001"], "b": {}}'),
        ("jsonb", '"x"'),
    ],
)
def test_text_that_already_is_the_json(name: str, text: str) -> None:
    convert = converter(T[name])
    assert fragment(convert) is None
    assert repr(parsed(ascii_json(text))) == repr(parsed(serialize(convert(text))))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0000001", "0.0000001"),  # str(Decimal) writes 1E-7: the same value
        ("-0.000000000", "-0.000000000"),
        ("100000000000000000000", "100000000000000000000"),
        ("NaN", '"NaN"'),
        ("Infinity", '"Infinity"'),
        ("-Infinity", '"-Infinity"'),
    ],
)
def test_numeric_text_is_its_json_unless_non_finite(text: str, expected: str) -> None:
    convert = converter(T["numeric"])
    render = fragment(convert)
    assert render is not None and render(text) == expected
    assert repr(parsed(expected)) == repr(parsed(serialize(convert(text))))


def test_the_writer_refuses_non_finite_floats() -> None:
    """Strict JSON: a float NaN reaching the writer is an error, never a bare NaN token."""
    for value in (float("nan"), float("inf"), Decimal("NaN")):
        with pytest.raises(ValueError):
            serialize({"x": value})


@given(st.text(st.characters(blacklist_characters="\x00")))
def test_strings_escape_like_the_writer(text: str) -> None:
    assert fast_json(str, text) == serialize(text)
    # Postgres' to_json leaves DEL and non-ASCII as they are; ascii_json finishes the job.
    raw = json.dumps(text, ensure_ascii=False)
    assert ascii_json(raw) == serialize(text)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_floats_spell_like_the_writer(value: float) -> None:
    text = repr(value) if value == value else "NaN"
    text = {"inf": "Infinity", "-inf": "-Infinity"}.get(text, text)
    convert = converter(T["float8"])
    assert fast_json(convert, text) == serialize(convert(text))
    json.loads(serialize(convert(text)), parse_constant=_no_constant)


def _no_constant(name: str) -> None:
    raise AssertionError(f"bare {name} in the output")


def test_bool_rejects_what_the_converter_rejects() -> None:
    render = fragment(converter(T["bool"]))
    assert render is not None
    assert (render("t"), render("f")) == ("true", "false")
    with pytest.raises(ValueError, match="neither"):
        render("x")


def test_json_string_is_the_writers() -> None:
    assert json_string('a"\\\x7fé🐘') == serialize('a"\\\x7fé🐘')


# --- tuple_renderer --------------------------------------------------------------------------

TYPES = ["int4", "int8", "numeric", "float8", "bool", "text", "timestamptz", "jsonb", "_int4"]
SAMPLES = {
    "int4": ["0", "-2147483648"],
    "int8": ["9223372036854775807"],
    "numeric": ["1.50", "NaN", "0.0000001"],
    "float8": ["0.1", "-Infinity", "1e+16"],
    "bool": ["t", "f"],
    "text": ["", 'é"\\\n🐘', "plain", "x" * 300],
    "timestamptz": ["2024-01-31 13:14:15.5+00", "0044-03-15 12:00:00+00 BC", "infinity"],
    "jsonb": ['{"a": 1.10}', "null"],
    "_int4": ["{1,NULL,3}", "{}"],
}
OPENING = '{"type":"RECORD","stream":"s","record":{'


@st.composite
def rows(draw: st.DrawFn) -> tuple[list[str], list[ColumnValue], list[bool]]:
    names = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=300))
    values: list[ColumnValue] = [
        draw(st.one_of(st.none(), st.sampled_from(SAMPLES[name]))) for name in names
    ]
    selected = draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))
    return names, values, selected


@given(rows())
def test_tuple_renderer_matches_decoding_then_rendering(
    row: tuple[list[str], list[ColumnValue], list[bool]],
) -> None:
    names, values, selected = row
    members = [
        (f'"c{i}":' if chosen else None, fragment(converter(T[name])))
        for i, (name, chosen) in enumerate(zip(names, selected, strict=True))
    ]
    message = insert(1, values)
    rendered = tuple_renderer(members, OPENING)(message, 6)
    assert rendered is not None and rendered[1] == len(message)
    new = decode(message).new  # type: ignore[union-attr]
    expected = [
        name + ("null" if value is None else value if render is None else render(value))
        for (name, render), value in zip(members, new, strict=True)
        if name is not None and isinstance(value, str | None)
    ]
    assert rendered[0] == OPENING + ",".join(expected)


@pytest.mark.parametrize(
    "values",
    [[UNCHANGED_TOAST], ["1", UNCHANGED_TOAST], [b"\x00\x01"]],
)
def test_tuple_renderer_leaves_missing_and_binary_values_to_the_general_path(
    values: list[ColumnValue],
) -> None:
    render = tuple_renderer([('"c":', None)] * len(values), "{")
    assert render(insert(1, values), 6) is None


def test_tuple_renderer_leaves_malformed_tuples_to_the_decoder() -> None:
    message = insert(1, ["123", "456"])
    render = tuple_renderer([('"a":', None), ('"b":', None)], "{")
    assert render(message, 6) == ('{"a":123,"b":456', len(message))
    assert tuple_renderer([('"a":', None)], "{")(message, 6) is None  # column count differs
    for cut in range(6, len(message)):
        rendered = render(message[:cut], 6)
        assert rendered is None or rendered[1] != len(message)
    assert render(insert(1, ["x", "y"]).replace(b"y", b"\xff"), 6) is None  # not UTF-8
    huge = message[:9] + b"\xff\xff\xff\xff" + message[13:]  # a length of 4 GiB
    assert render(huge, 6) is None


def test_tuple_renderer_names_are_data_not_code() -> None:
    evil = '"x"); import os; os._exit(3) #":'
    render = tuple_renderer([(evil, None)], "{")
    assert render(insert(1, ["1"]), 6) == ("{" + evil + "1", len(insert(1, ["1"])))
