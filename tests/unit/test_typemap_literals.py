"""Round trips for the array and hstore parsers against renderers written from PostgreSQL's rules.

The renderers follow the documented output rules (array_out and hstore_out), independently of the
parsers: an array element is double-quoted when it is empty, spells NULL in any case, or holds the
delimiter, a brace, a double quote, a backslash or white space; inside quotes a double quote or a
backslash is preceded by a backslash; NULL is the bare word NULL. hstore quotes every key and
value the same way, writes NULL values bare and separates pairs with ", ".
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tap_pgcdc.types.literals import array_parser, parse_hstore

ARRAY_SPACE = " \t\n\r\v\f"

# PostgreSQL text cannot hold NUL; everything else goes, surrogates aside.
texts = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
tricky = st.sampled_from(
    ["", "NULL", "null", "NuLl", "a,b", "a;b", "{", "}", '"', "\\", " ", "\\x0a"]
)
leaves = st.none() | texts | tricky


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_element(value: str | None, delimiter: str) -> str:
    if value is None:
        return "NULL"
    needs_quotes = (
        value == ""
        or value.upper() == "NULL"
        or any(ch in value for ch in delimiter + '{}"\\' + ARRAY_SPACE)
    )
    return quote(value) if needs_quotes else value


def render_array(value: list[Any], delimiter: str) -> str:
    parts = (
        render_array(item, delimiter) if isinstance(item, list) else render_element(item, delimiter)
        for item in value
    )
    return "{" + delimiter.join(parts) + "}"


@st.composite
def arrays(draw: st.DrawFn, elements: st.SearchStrategy[Any] = leaves) -> list[Any]:
    """Nested lists whose elements all sit at the same depth, as in a PostgreSQL array."""
    depth = draw(st.integers(min_value=1, max_value=3))

    def level(remaining: int) -> st.SearchStrategy[list[Any]]:
        if remaining == 1:
            return st.lists(elements, max_size=6)
        return st.lists(level(remaining - 1), min_size=1, max_size=3)

    return draw(level(depth))


def decoration(value: list[Any], lower: int) -> str:
    """The "[lb:ub]..." prefix array_out writes when a lower bound is not 1, one per dimension."""
    bounds = ""
    dimension: Any = value
    while isinstance(dimension, list):
        bounds += f"[{lower}:{lower + len(dimension) - 1}]"
        dimension = dimension[0] if dimension else None
    return bounds + "="


@given(arrays(), st.none() | st.integers(min_value=-5, max_value=5))
def test_text_array_round_trips(value: list[Any], lower_bound: int | None) -> None:
    literal = render_array(value, ",")
    if lower_bound is not None:
        literal = decoration(value, lower_bound) + literal
    assert array_parser(str)(literal) == value


@given(arrays(), st.sampled_from([",", ";"]))
def test_array_round_trips_with_either_delimiter(value: list[Any], delimiter: str) -> None:
    assert array_parser(str, delimiter)(render_array(value, delimiter)) == value


@given(arrays(st.none() | st.integers()))
def test_integer_array_round_trips(value: list[Any]) -> None:
    literal = render_array(as_text(value), ",")
    assert array_parser(int)(literal) == value


def as_text(value: list[Any]) -> list[Any]:
    return [
        as_text(item) if isinstance(item, list) else None if item is None else str(item)
        for item in value
    ]


def test_element_converter_sees_unquoted_text() -> None:
    seen: list[str] = []

    def element(text: str) -> str:
        seen.append(text)
        return text

    parse = array_parser(element)
    assert parse(r'{"a\"b","c\\d",e,NULL}') == ['a"b', "c\\d", "e", None]
    assert seen == ['a"b', "c\\d", "e"]


def render_hstore(value: dict[str, str | None]) -> str:
    return ", ".join(
        f"{quote(key)}=>{'NULL' if item is None else quote(item)}" for key, item in value.items()
    )


@given(st.dictionaries(texts | tricky, st.none() | texts | tricky))
def test_hstore_round_trips(value: dict[str, str | None]) -> None:
    assert parse_hstore(render_hstore(value)) == value


@given(st.lists(st.dictionaries(texts, st.none() | texts, max_size=3) | st.none(), max_size=4))
def test_hstore_array_round_trips(value: list[dict[str, str | None] | None]) -> None:
    rendered = [None if item is None else render_hstore(item) for item in value]
    assert array_parser(parse_hstore)(render_array(rendered, ",")) == value
