"""The converters against what a real server prints, in the session settings the tap pins.

Each value is read as the raw text of its type's output function (a psycopg2 typecaster that
returns the string untouched, for every type in the catalog), which is what both the snapshot and
pgoutput hand the tap. The column's type is loaded from the catalog the way the connector does, so
domains, enums, composites, ranges and extension types resolve as they would in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_pgcdc.typemap import PgType, converter
from tests.pgserver import PgServer

PINNED_SETTINGS = {
    "DateStyle": "ISO, MDY",
    "TimeZone": "UTC",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "client_encoding": "UTF8",
    "standard_conforming_strings": "on",
}

SETUP_SQL = """
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TYPE pair AS (n int, s text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE DOMAIN smallpos AS posint CHECK (VALUE < 100);
CREATE DOMAIN intlist AS int[];
CREATE DOMAIN code AS varchar(3);
CREATE TYPE floatrange AS RANGE (subtype = float8);
"""

TYPE_SQL = """
SELECT t.typname, t.typtype, t.typcategory, t.typdelim,
       CASE WHEN e.typarray = t.oid THEN e.oid ELSE 0 END, t.typbasetype
FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem
WHERE t.oid = %s
"""


class Session:
    """A connection with the pinned settings that returns every value as its output text."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._types: dict[int, PgType] = {}

    def pg_type(self, oid: int) -> PgType:
        if oid not in self._types:
            with self.conn.cursor() as cur:
                cur.execute(TYPE_SQL, (oid,))
                name, kind, category, delimiter, element, base = cur.fetchone()
            element_type = self.pg_type(int(element)) if int(element) else None
            self._types[oid] = PgType(
                oid,
                name,
                kind,
                category,
                element=element_type,
                base=self.pg_type(int(base)) if int(base) else None,
                delimiter=element_type.delimiter if element_type else delimiter,
            )
        return self._types[oid]

    def output(self, expression: str, params: Any = None) -> tuple[PgType, str | None]:
        """The type and output text of one expression."""
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT pg_typeof(x)::oid, x FROM (SELECT {expression} AS x) s", params)
            oid, text = cur.fetchone()
        return self.pg_type(int(oid)), text

    def value(self, expression: str, params: Any = None, **kwargs: Any) -> Any:
        t, text = self.output(expression, params)
        return None if text is None else converter(t, **kwargs)(text)


@pytest.fixture(scope="module")
def session(pg: PgServer) -> Iterator[Session]:
    pg.create_database("typemap_server")
    conn = pg.connect("typemap_server")
    try:
        with conn.cursor() as cur:
            cur.execute(SETUP_SQL)
            for name, value in PINNED_SETTINGS.items():
                cur.execute("SELECT set_config(%s, %s, false)", (name, value))
            cur.execute("SELECT array_agg(oid::int) FROM pg_type")
            (oids,) = cur.fetchone()
        raw = psycopg2.extensions.new_type(tuple(int(o) for o in oids), "RAW", lambda v, _: v)
        psycopg2.extensions.register_type(raw, conn)
        yield Session(conn)
    finally:
        conn.close()
        pg.execute('DROP DATABASE IF EXISTS "typemap_server"')


HUGE = "123456789012345678901234567890.123456789"

CASES: list[tuple[str, Any]] = [
    ("1::int2", 1),
    ("2147483647::int4", 2147483647),
    ("(-9223372036854775808)::int8", -9223372036854775808),
    ("4294967295::oid", 4294967295),
    ("'1234'::xid", 1234),
    ("'18446744073709551615'::xid8", 18446744073709551615),
    ("'0'::cid", 0),
    (f"{HUGE}::numeric", Decimal(HUGE)),
    ("1.50::numeric", Decimal("1.50")),
    ("1.5::numeric(10,3)", Decimal("1.500")),
    ("'-0.000000001'::numeric", Decimal("-0.000000001")),
    ("'NaN'::numeric", "NaN"),
    ("'Infinity'::numeric", "Infinity"),
    ("'-Infinity'::numeric", "-Infinity"),
    ("0.1::float8", 0.1),
    ("'-0'::float8", -0.0),
    ("1e100::float8", 1e100),
    ("'5e-324'::float8", 5e-324),
    ("'1.7976931348623157e308'::float8", 1.7976931348623157e308),
    ("'NaN'::float8", "NaN"),
    ("'Infinity'::float8", "Infinity"),
    ("'-Infinity'::float8", "-Infinity"),
    ("0.1::float4", 0.1),
    ("'-Infinity'::float4", "-Infinity"),
    ("'1234.56'::money", Decimal("1234.56")),
    ("'-1234.56'::money", Decimal("-1234.56")),
    ("'-92233720368547758.08'::money", Decimal("-92233720368547758.08")),
    ("true", True),
    ("false", False),
    ("$$ünïcödé 🙂\nline\ttab \\ \"'$$::text", "ünïcödé 🙂\nline\ttab \\ \"'"),
    ("''::text", ""),
    ("'ab'::char(5)", "ab   "),
    ("'abc'::varchar(5)", "abc"),
    ("'pg_class'::name", "pg_class"),
    ("'a'::\"char\"", "a"),
    ("'MiXeD'::citext", "MiXeD"),
    ("'\\x0a0BFF'::bytea", "0a0bff"),
    ("''::bytea", ""),
    ("'2024-01-31'::date", "2024-01-31"),
    ("'0044-03-15 BC'::date", "0001-01-01"),
    ("'0001-01-01 BC'::date", "0001-01-01"),
    ("'4714-11-24 BC'::date", "0001-01-01"),
    ("'5874897-12-31'::date", "9999-12-31"),
    ("'infinity'::date", "9999-12-31"),
    ("'-infinity'::date", "0001-01-01"),
    ("'2024-01-31 13:14:15.123456'::timestamp", "2024-01-31T13:14:15.123456+00:00"),
    ("'2024-01-31 13:14:15.5'::timestamp", "2024-01-31T13:14:15.5+00:00"),
    ("'2024-01-31'::timestamp", "2024-01-31T00:00:00+00:00"),
    ("'0044-03-15 12:00 BC'::timestamp", "0001-01-01T00:00:00+00:00"),
    ("'294276-12-31 23:59:59.999999'::timestamp", "9999-12-31T23:59:59.999+00:00"),
    ("'infinity'::timestamp", "9999-12-31T23:59:59.999+00:00"),
    ("'-infinity'::timestamp", "0001-01-01T00:00:00+00:00"),
    ("'2024-01-31 13:14:15.123456+00'::timestamptz", "2024-01-31T13:14:15.123456+00:00"),
    ("'2024-01-31 13:14:15.5+05:30'::timestamptz", "2024-01-31T07:44:15.5+00:00"),
    ("'1890-01-01 12:00 Europe/Amsterdam'::timestamptz", "1890-01-01T11:40:28+00:00"),
    ("'0044-03-15 12:00+00 BC'::timestamptz", "0001-01-01T00:00:00+00:00"),
    ("'infinity'::timestamptz", "9999-12-31T23:59:59.999+00:00"),
    ("'-infinity'::timestamptz", "0001-01-01T00:00:00+00:00"),
    ("'13:14:15.5'::time", "13:14:15.5"),
    ("'24:00'::time", "24:00:00"),
    ("'13:14:15+05:30'::timetz", "13:14:15+05:30"),
    ("'13:14:15+05'::timetz", "13:14:15+05:00"),
    ("'13:14:15.5-08'::timetz", "13:14:15.5-08:00"),
    ("'10:00:00+05:30:15'::timetz", "10:00:00+05:30:15"),
    ("'1 year 2 months 3 days 4 hours 5 minutes 6.5 seconds'::interval", "P1Y2M3DT4H5M6.5S"),
    ("'0'::interval", "PT0S"),
    ("'-1 day -2 hours'::interval", "P-1DT-2H"),
    (
        "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ),
    # json keeps the input text; jsonb prints its normalised form (2.5e10 becomes an integer).
    (
        """'{"a": 1.10, "b": [1, 2.5e10, null, true], "a": "dup"}'::json""",
        {"a": "dup", "b": [1, Decimal("2.5e10"), None, True]},
    ),
    (
        """'{"a": 1.10, "b": [1, 2.5e10, null, true], "c": {"d": "é"}}'::jsonb""",
        {"a": Decimal("1.10"), "b": [1, 25000000000, None, True], "c": {"d": "é"}},
    ),
    ("'null'::jsonb", None),
    ("'\"s\"'::jsonb", "s"),
    ("'192.168.0.1/24'::inet", "192.168.0.1/24"),
    ("'10.0.0.0/8'::cidr", "10.0.0.0/8"),
    ("'08:00:2b:01:02:03'::macaddr", "08:00:2b:01:02:03"),
    ("'08:00:2b:01:02:03:04:05'::macaddr8", "08:00:2b:01:02:03:04:05"),
    ("B'101'::bit(3)", "101"),
    ("B''::varbit", ""),
    ("'[1,5)'::int4range", "[1,5)"),
    ("'empty'::int4range", "empty"),
    ("'(1.5,2.5]'::numrange", "(1.5,2.5]"),
    ("'[2024-01-01,2024-02-01)'::daterange", "[2024-01-01,2024-02-01)"),
    ("'[2024-01-01 00:00+00,)'::tstzrange", '["2024-01-01 00:00:00+00",)'),
    ("'{[1,3),[5,7)}'::int4multirange", "{[1,3),[5,7)}"),
    ("'<a>b</a>'::xml", "<a>b</a>"),
    ("'b a'::tsvector", "'a' 'b'"),
    ("'a & b'::tsquery", "'a' & 'b'"),
    ("'16/B374D848'::pg_lsn", "16/B374D848"),
    ("'10:20:10,14,15'::txid_snapshot", "10:20:10,14,15"),
    ("'10:20:10,14,15'::pg_snapshot", "10:20:10,14,15"),
    ("'(1,2)'::point", "(1,2)"),
    ("'{1,2,3}'::line", "{1,2,3}"),
    ("'[(1,2),(3,4)]'::lseg", "[(1,2),(3,4)]"),
    ("'(1,2),(3,4)'::box", "(3,4),(1,2)"),
    ("'((1,2),(3,4))'::path", "((1,2),(3,4))"),
    ("'((0,0),(1,1),(1,0))'::polygon", "((0,0),(1,1),(1,0))"),
    ("'<(1,2),3>'::circle", "<(1,2),3>"),
    ("'pg_class'::regclass", "pg_class"),
    ("'(0,1)'::tid", "(0,1)"),
    ("'happy'::mood", "happy"),
    ("row(1, 'a b')::pair", '(1,"a b")'),
    ("42::posint", 42),
    ("7::smallpos", 7),
    ("'{1,2}'::intlist", [1, 2]),
    ("'AB'::code", "AB"),
    ("'[1.5,2.5)'::floatrange", "[1.5,2.5)"),
    ("'{[1.5,2.5)}'::floatmultirange", "{[1.5,2.5)}"),
    (
        """'"a"=>"1", "b"=>NULL, "c"=>"", "d"=>"NULL"'::hstore""",
        {"a": "1", "b": None, "c": "", "d": "NULL"},
    ),
    ("hstore(ARRAY['q\"k', '=>, '], ARRAY['v\\', 'é'])", {'q"k': "v\\", "=>, ": "é"}),
    ("''::hstore", {}),
    ("'{}'::int[]", []),
    ("ARRAY[1, NULL, 3]", [1, None, 3]),
    ("'{{1,2},{3,4}}'::int[]", [[1, 2], [3, 4]]),
    ("'[0:1]={1,2}'::int[]", [1, 2]),
    ("'[1:1][-2:-1]={{1,2}}'::int[]", [[1, 2]]),
    (
        "ARRAY['a', 'NULL', NULL, 'null', '', 'b c', '\"x\\', '{brace}', 'a,b', 'ünï', E'tab\\t']",
        ["a", "NULL", None, "null", "", "b c", '"x\\', "{brace}", "a,b", "ünï", "tab\t"],
    ),
    ("ARRAY[ARRAY['a', 'b c'], ARRAY[NULL, '']]", [["a", "b c"], [None, ""]]),
    ("'{a,b}'::char(3)[]", ["a  ", "b  "]),
    ("ARRAY['x'::citext, NULL]", ["x", None]),
    ("ARRAY['(1,1),(0,0)'::box, '(2,2),(3,3)']", ["(1,1),(0,0)", "(3,3),(2,2)"]),
    (
        "ARRAY[1.50, 'NaN', '-Infinity']::numeric[]",
        [Decimal("1.50"), "NaN", "-Infinity"],
    ),
    ("ARRAY['NaN', '-0', 1e100, 0.1]::float8[]", ["NaN", -0.0, 1e100, 0.1]),
    ("ARRAY[true, false, NULL]", [True, False, None]),
    ("ARRAY['1.00', '-1234.56']::money[]", [Decimal("1.00"), Decimal("-1234.56")]),
    ("ARRAY['\\x0a'::bytea, NULL, '']", ["0a", None, ""]),
    (
        "ARRAY['2024-01-01'::date, '0044-03-15 BC', 'infinity']",
        ["2024-01-01", "0001-01-01", "9999-12-31"],
    ),
    (
        "ARRAY['2024-01-01 12:00+00'::timestamptz, '0044-03-15 12:00+00 BC']",
        ["2024-01-01T12:00:00+00:00", "0001-01-01T00:00:00+00:00"],
    ),
    ("ARRAY['1 day'::interval, '0']", ["P1D", "PT0S"]),
    ("""ARRAY['{"a": [1, 2.5]}'::jsonb, NULL, 'null']""", [{"a": [1, Decimal("2.5")]}, None, None]),
    ("ARRAY['[1,5)'::int4range, 'empty']", ["[1,5)", "empty"]),
    ("""ARRAY['"a"=>"1"'::hstore, NULL, '']""", [{"a": "1"}, None, {}]),
    ("ARRAY['happy'::mood, 'sad']", ["happy", "sad"]),
    ("ARRAY[1::posint, NULL]", [1, None]),
    ("ARRAY[row(1, 'a b')::pair]", ['(1,"a b")']),
    (
        "ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]",
        ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
    ),
    ("ARRAY['x'::\"char\", 'y']", ["x", "y"]),
    ("NULL::int", None),
]


@pytest.mark.parametrize(("expression", "expected"), CASES, ids=[e[:40] for e, _ in CASES])
def test_converts_server_output(session: Session, expression: str, expected: Any) -> None:
    assert repr(session.value(expression)) == repr(expected)


def test_singer_decimal_reads_the_decimal_text(session: Session) -> None:
    assert session.value(f"{HUGE}::numeric(39,9)", use_singer_decimal=True) == HUGE
    assert session.value("'-1234.56'::money", use_singer_decimal=True) == "-1234.56"
    assert session.value("ARRAY['NaN', 1.5]::numeric[]", use_singer_decimal=True) == ["NaN", "1.5"]


def test_server_prints_the_settings_we_pin(session: Session) -> None:
    with session.conn.cursor() as cur:
        for name, value in PINNED_SETTINGS.items():
            cur.execute("SELECT current_setting(%s)", (name,))
            assert cur.fetchone() == (value,)


# Property tests: whatever psycopg2 sends, the converter gives back exactly, via the server.

safe_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
element = st.none() | safe_text | st.sampled_from(["", "NULL", "null", "a,b", "{", "}", '"', "\\"])


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=3).flatmap(
        lambda width: st.lists(st.lists(element, min_size=width, max_size=width), max_size=3)
    ),
    st.booleans(),
)
def test_text_arrays_round_trip(session: Session, rows: list[list[str | None]], flat: bool) -> None:
    value: list[Any] = [item for row in rows for item in row] if flat else rows
    if not value:
        assert session.value("%s::text[]", ([],)) == []
        return
    assert session.value("%s::text[]", (value,)) == value


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(safe_text, st.none() | safe_text, max_size=5))
def test_hstore_round_trips(session: Session, value: dict[str, str | None]) -> None:
    keys, values = list(value), list(value.values())
    assert session.value("hstore(%s::text[], %s::text[])", (keys, values)) == value


@settings(max_examples=150, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float8_round_trips(session: Session, value: float) -> None:
    converted = session.value("%s::float8", (value,))
    assert repr(converted) == repr(value)
    assert isinstance(converted, float)


@settings(max_examples=150, deadline=None)
@given(st.decimals(Decimal("-1e40"), Decimal("1e40"), allow_nan=False, allow_infinity=False))
def test_numeric_round_trips(session: Session, value: Decimal) -> None:
    converted = session.value("%s::numeric", (value,))
    assert isinstance(converted, Decimal)
    assert converted == value


@settings(max_examples=150, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_timestamps_are_iso_8601(session: Session, value: datetime) -> None:
    aware = value.replace(tzinfo=UTC)
    assert datetime.fromisoformat(session.value("%s::timestamptz", (aware,))) == aware
    # a timestamp without time zone is read as UTC
    assert datetime.fromisoformat(session.value("%s::timestamp", (value,))) == aware


def test_nan_and_infinities_are_distinguished(session: Session) -> None:
    values = session.value("ARRAY['NaN', 'Infinity', '-Infinity']::float8[]")
    assert values == ["NaN", "Infinity", "-Infinity"]
