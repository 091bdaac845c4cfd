"""Type mapping: PostgreSQL text output -> record value, and type -> JSON Schema.

Values are compared by `repr`, which tells 1 from 1.0 from True, Decimal("1.5") from
Decimal("1.50"), -0.0 from 0.0 and shows nan, so every assertion checks the exact value and type.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_pgcdc.typemap import BUILTIN_TYPES, FLOAT_CONVERTER, PgType, converter, json_schema

T = {t.name: t for t in BUILTIN_TYPES.values()}

# User-defined types, shaped as the catalog query describes them (OIDs above 16384 vary by server).
MOOD = PgType(16385, "mood", kind="e", category="E", enum_labels=("sad", "happy"))
MOODS = PgType(16384, "_mood", category="A", element=MOOD)
POSINT = PgType(16390, "posint", kind="d", category="N", base=T["int4"])
SMALLPOS = PgType(16391, "smallpos", kind="d", category="N", base=POSINT)  # domain over domain
POSINTS = PgType(16392, "_posint", category="A", element=POSINT)
INTLIST = PgType(16393, "intlist", kind="d", category="A", base=T["_int4"])  # domain over array
CODE = PgType(16394, "code", kind="d", category="S", base=T["varchar"])
PAIR = PgType(16395, "pair", kind="c", category="C")
FLOATRANGE = PgType(16396, "floatrange", kind="r", category="R")
FLOATMULTIRANGE = PgType(16397, "floatmultirange", kind="m", category="R")
HSTORE = PgType(16398, "hstore", category="U")
HSTORES = PgType(16399, "_hstore", category="A", element=HSTORE)
CITEXT = PgType(16400, "citext", category="S")
GEOMETRY = PgType(16401, "geometry", category="U")  # PostGIS: by name, no fixed OID


def same(actual: Any, expected: Any) -> None:
    assert repr(actual) == repr(expected)


def convert(t: PgType, text: str, **kwargs: Any) -> Any:
    return converter(t, **kwargs)(text)


HUGE = "123456789012345678901234567890.123456789"

VALUES: list[tuple[PgType, str, Any]] = [
    # integers
    (T["int2"], "-32768", -32768),
    (T["int4"], "2147483647", 2147483647),
    (T["int8"], "-9223372036854775808", -9223372036854775808),
    (T["oid"], "4294967295", 4294967295),
    (T["xid"], "1234", 1234),
    (T["xid8"], "18446744073709551615", 18446744073709551615),
    (T["cid"], "0", 0),
    # numeric: exact, never through float
    (T["numeric"], HUGE, Decimal(HUGE)),
    (T["numeric"], "1.50", Decimal("1.50")),
    (T["numeric"], "-0.000000001", Decimal("-0.000000001")),
    (T["numeric"], "0", Decimal("0")),
    (T["numeric"], "1" + "0" * 1000, Decimal("1" + "0" * 1000)),
    # NaN and the infinities: strings (JSON has no such numbers)
    (T["numeric"], "NaN", "NaN"),
    (T["numeric"], "Infinity", "Infinity"),
    (T["numeric"], "-Infinity", "-Infinity"),
    # floats (extra_float_digits=3 prints the shortest text that round-trips)
    (T["float8"], "0.1", 0.1),
    (T["float8"], "-0", -0.0),
    (T["float8"], "1e+100", 1e100),
    (T["float8"], "1.7976931348623157e+308", 1.7976931348623157e308),
    (T["float8"], "5e-324", 5e-324),
    (T["float8"], "NaN", "NaN"),
    (T["float8"], "Infinity", "Infinity"),
    (T["float8"], "-Infinity", "-Infinity"),
    (T["float4"], "3.4028235e+38", 3.4028235e38),
    (T["float4"], "NaN", "NaN"),
    # money with lc_monetary=C
    (T["money"], "$1,234.56", Decimal("1234.56")),
    (T["money"], "-$1,234.56", Decimal("-1234.56")),
    (T["money"], "$0.00", Decimal("0.00")),
    (T["money"], "-$92,233,720,368,547,758.08", Decimal("-92233720368547758.08")),
    (T["money"], "($5.00)", Decimal("-5.00")),
    (T["bool"], "t", True),
    (T["bool"], "f", False),
    # character types keep their text exactly, char(n) padding included
    (T["text"], "", ""),
    (T["text"], "ünïcödé 🙂\nline\ttab \\ \"'", "ünïcödé 🙂\nline\ttab \\ \"'"),
    (T["bpchar"], "ab   ", "ab   "),
    (T["varchar"], "abc", "abc"),
    (T["name"], "pg_class", "pg_class"),
    (T["char"], "a", "a"),
    (CITEXT, "MiXeD", "MiXeD"),
    (T["bytea"], "\\x0a0bff", "0a0bff"),
    (T["bytea"], "\\x", ""),
    # date: ISO; outside years 1..9999 (RFC 3339's range) the nearest end of it
    (T["date"], "2024-01-31", "2024-01-31"),
    (T["date"], "0001-01-01", "0001-01-01"),
    (T["date"], "9999-12-31", "9999-12-31"),
    (T["date"], "0044-03-15 BC", "0001-01-01"),
    (T["date"], "0001-12-31 BC", "0001-01-01"),
    (T["date"], "4714-11-24 BC", "0001-01-01"),
    (T["date"], "10000-01-01", "9999-12-31"),
    (T["date"], "5874897-12-31", "9999-12-31"),
    (T["date"], "infinity", "9999-12-31"),
    (T["date"], "-infinity", "0001-01-01"),
    # timestamp: 'T' separator, fraction digits as given, read as UTC
    (T["timestamp"], "2024-01-31 13:14:15.123456", "2024-01-31T13:14:15.123456+00:00"),
    (T["timestamp"], "2024-01-31 13:14:15.5", "2024-01-31T13:14:15.5+00:00"),
    (T["timestamp"], "2024-01-31 00:00:00", "2024-01-31T00:00:00+00:00"),
    (T["timestamp"], "0044-03-15 12:00:00 BC", "0001-01-01T00:00:00+00:00"),
    (T["timestamp"], "294276-12-31 23:59:59.999999", "9999-12-31T23:59:59.999+00:00"),
    (T["timestamp"], "infinity", "9999-12-31T23:59:59.999+00:00"),
    (T["timestamp"], "-infinity", "0001-01-01T00:00:00+00:00"),
    # timestamptz: offsets completed to +HH:MM; historic offsets with seconds kept
    (T["timestamptz"], "2024-01-31 13:14:15.123456+00", "2024-01-31T13:14:15.123456+00:00"),
    (T["timestamptz"], "2024-01-31 13:14:15-05", "2024-01-31T13:14:15-05:00"),
    (T["timestamptz"], "2024-01-31 13:14:15+05:30", "2024-01-31T13:14:15+05:30"),
    (T["timestamptz"], "1890-01-01 12:19:32+00:19:32", "1890-01-01T12:19:32+00:19:32"),
    (T["timestamptz"], "1880-01-01 07:03:58-04:56:02", "1880-01-01T07:03:58-04:56:02"),
    (T["timestamptz"], "0044-03-15 12:00:00+00 BC", "0001-01-01T00:00:00+00:00"),
    (T["timestamptz"], "10000-01-01 00:00:00+00", "9999-12-31T23:59:59.999+00:00"),
    (T["timestamptz"], "infinity", "9999-12-31T23:59:59.999+00:00"),
    (T["timestamptz"], "-infinity", "0001-01-01T00:00:00+00:00"),
    (T["time"], "13:14:15.5", "13:14:15.5"),
    (T["time"], "24:00:00", "24:00:00"),
    (T["timetz"], "13:14:15+05:30", "13:14:15+05:30"),
    (T["timetz"], "13:14:15+05", "13:14:15+05:00"),
    (T["timetz"], "13:14:15.5-08", "13:14:15.5-08:00"),
    (T["timetz"], "10:00:00+05:30:15", "10:00:00+05:30:15"),
    (T["interval"], "P1Y2M3DT4H5M6.5S", "P1Y2M3DT4H5M6.5S"),
    (T["interval"], "PT0S", "PT0S"),
    (T["interval"], "P-1DT-2H", "P-1DT-2H"),
    (T["uuid"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    # json/jsonb: parsed, with exact numbers
    (
        T["jsonb"],
        '{"a": 1.10, "b": [1, 2.5e10, null, true, false], "c": {"d": "é"}}',
        {"a": Decimal("1.10"), "b": [1, Decimal("2.5e10"), None, True, False], "c": {"d": "é"}},
    ),
    (T["json"], '[1, "two"]', [1, "two"]),
    (T["json"], '"just a string"', "just a string"),
    (T["jsonb"], "null", None),
    (T["jsonb"], "12345678901234567890", 12345678901234567890),
    (T["jsonb"], "1" + "0" * 5000, Decimal("1" + "0" * 5000)),  # beyond Python's int() limit
    # kept as text
    (T["inet"], "192.168.0.1/24", "192.168.0.1/24"),
    (T["cidr"], "10.0.0.0/8", "10.0.0.0/8"),
    (T["macaddr"], "08:00:2b:01:02:03", "08:00:2b:01:02:03"),
    (T["macaddr8"], "08:00:2b:01:02:03:04:05", "08:00:2b:01:02:03:04:05"),
    (T["bit"], "101", "101"),
    (T["varbit"], "", ""),
    (T["int4range"], "[1,5)", "[1,5)"),
    (T["int4range"], "empty", "empty"),
    (T["tstzrange"], '["2024-01-01 00:00:00+00",)', '["2024-01-01 00:00:00+00",)'),
    (T["int4multirange"], "{[1,3),[5,7)}", "{[1,3),[5,7)}"),
    (T["xml"], "<a>b</a>", "<a>b</a>"),
    (T["tsvector"], "'a':1 'b':2", "'a':1 'b':2"),
    (T["tsquery"], "'a' & 'b'", "'a' & 'b'"),
    (T["pg_lsn"], "16/B374D848", "16/B374D848"),
    (T["txid_snapshot"], "10:20:10,14,15", "10:20:10,14,15"),
    (T["pg_snapshot"], "10:20:", "10:20:"),
    (T["point"], "(1,2)", "(1,2)"),
    (T["line"], "{1,2,3}", "{1,2,3}"),
    (T["lseg"], "[(1,2),(3,4)]", "[(1,2),(3,4)]"),
    (T["box"], "(3,4),(1,2)", "(3,4),(1,2)"),
    (T["path"], "((1,2),(3,4))", "((1,2),(3,4))"),
    (T["polygon"], "((0,0),(1,1),(1,0))", "((0,0),(1,1),(1,0))"),
    (T["circle"], "<(1,2),3>", "<(1,2),3>"),
    (T["regclass"], "pg_class", "pg_class"),  # reg* types print names, not numbers
    (T["tid"], "(0,1)", "(0,1)"),
    (T["int2vector"], "1 2", "1 2"),
    (T["oidvector"], "23 25", "23 25"),
    (MOOD, "happy", "happy"),
    (PAIR, '(1,"a b")', '(1,"a b")'),
    (FLOATRANGE, "[1.5,2.5)", "[1.5,2.5)"),
    (FLOATMULTIRANGE, "{[1.5,2.5)}", "{[1.5,2.5)}"),
    (GEOMETRY, "0101000000000000000000F03F", "0101000000000000000000F03F"),
    # domains convert as their base
    (POSINT, "42", 42),
    (SMALLPOS, "7", 7),
    (CODE, "AB", "AB"),
    (INTLIST, "{1,2}", [1, 2]),
    # hstore
    (HSTORE, '"a"=>"1", "b"=>NULL', {"a": "1", "b": None}),
    (HSTORE, "", {}),
    (HSTORE, '"k"=>""', {"k": ""}),
    (HSTORE, '"n"=>"NULL"', {"n": "NULL"}),
    (HSTORE, r'"q\"k"=>"v\\", "=>, "=>"é"', {'q"k': "v\\", "=>, ": "é"}),
    # arrays
    (T["_int4"], "{}", []),
    (T["_int4"], "{1,2,3}", [1, 2, 3]),
    (T["_int4"], "{1,NULL,3}", [1, None, 3]),
    (T["_int4"], "{{1,2},{3,4}}", [[1, 2], [3, 4]]),
    (T["_int4"], "{{{1}},{{NULL}}}", [[[1]], [[None]]]),
    (T["_int4"], "[0:1]={1,2}", [1, 2]),
    (T["_int4"], "[1:1][-2:-1]={{1,2}}", [[1, 2]]),
    (
        T["_text"],
        r'{a,"NULL",NULL,null,"null","","b c","\"x\\","{brace}","a,b",ünï,"🙂 x"}',
        ["a", "NULL", None, None, "null", "", "b c", '"x\\', "{brace}", "a,b", "ünï", "🙂 x"],
    ),
    (T["_text"], '{"tab\there","nl\n"," lead"}', ["tab\there", "nl\n", " lead"]),
    (T["_text"], '{{a,"b c"},{NULL,""}}', [["a", "b c"], [None, ""]]),
    (T["_text"], '{""}', [""]),
    (T["_bpchar"], '{"a  ",b}', ["a  ", "b"]),
    (T["_box"], "{(1,1),(0,0);(3,3),(2,2)}", ["(1,1),(0,0)", "(3,3),(2,2)"]),
    (
        T["_numeric"],
        "{1.50,NaN,-Infinity}",
        [Decimal("1.50"), "NaN", "-Infinity"],
    ),
    (T["_float8"], "{NaN,-0,1e+100,-Infinity}", ["NaN", -0.0, 1e100, "-Infinity"]),
    (T["_bool"], "{t,f,NULL}", [True, False, None]),
    (T["_money"], '{$1.00,"-$1,234.56"}', [Decimal("1.00"), Decimal("-1234.56")]),
    (T["_bytea"], r'{"\\x0a",NULL,"\\x"}', ["0a", None, ""]),
    (
        T["_date"],
        '{2024-01-01,"0044-03-15 BC",infinity}',
        ["2024-01-01", "0001-01-01", "9999-12-31"],
    ),
    (
        T["_timestamptz"],
        '{"2024-01-01 12:00:00+00","0044-03-15 12:00:00+00 BC"}',
        ["2024-01-01T12:00:00+00:00", "0001-01-01T00:00:00+00:00"],
    ),
    (T["_interval"], "{P1D,PT0S}", ["P1D", "PT0S"]),
    (
        T["_jsonb"],
        r'{"{\"a\": [1, 2.5]}",NULL,null,"null"}',
        [{"a": [1, Decimal("2.5")]}, None, None, None],
    ),
    (T["_int4range"], '{"[1,5)",empty}', ["[1,5)", "empty"]),
    (T["_int2vector"], '{"1 2","3"}', ["1 2", "3"]),
    (HSTORES, r'{"\"a\"=>\"1\"",NULL,""}', [{"a": "1"}, None, {}]),
    (MOODS, "{happy,sad}", ["happy", "sad"]),
    (POSINTS, "{1,NULL}", [1, None]),
    (PgType(16402, "_pair", category="A", element=PAIR), r'{"(1,\"a b\")"}', ['(1,"a b")']),
]


@pytest.mark.parametrize(
    ("t", "text", "expected"), VALUES, ids=[f"{t.name}:{x[:30]}" for t, x, _ in VALUES]
)
def test_converts_text_output(t: PgType, text: str, expected: Any) -> None:
    same(convert(t, text), expected)


@pytest.mark.parametrize(
    ("t", "text", "expected"),
    [
        (T["numeric"], HUGE, HUGE),
        (T["numeric"], "NaN", "NaN"),
        (T["money"], "-$1,234.56", "-1234.56"),
        (T["_numeric"], "{1.50,NULL}", ["1.50", None]),
        (POSINT, "3", 3),
        (T["float8"], "0.1", 0.1),  # floats are exact as JSON numbers already
    ],
)
def test_singer_decimal_keeps_decimal_text(t: PgType, text: str, expected: Any) -> None:
    same(convert(t, text, use_singer_decimal=True), expected)


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (T["bool"], "true"),
        (T["bytea"], "\\001"),  # escape format: the session is not pinned to hex
        (T["_int4"], "1,2"),
        (T["_int4"], "{1,2"),
        (T["_int4"], "{1,,2}"),
        (T["_text"], "{a,}"),
        (T["_text"], "{a}b}"),
        (T["_text"], "{,a}"),
        (T["_text"], '{"a}'),
        (T["_text"], '{"a"b}'),
        (T["_text"], "{{a},b}"),
        (T["_text"], "{a,{b}}"),
        (T["_text"], '{{"a"},{{b}}}'),
        (T["_text"], "{{a}}{b}"),
        (T["_text"], "{{a}"),
        (T["_text"], "{a}}"),
        (HSTORE, '"a"=>"1",'),
        (HSTORE, '"a"=>"1", '),
        (HSTORE, '"a"=>1'),
        (HSTORE, "a=>b"),
    ],
)
def test_rejects_text_no_output_function_prints(t: PgType, text: str) -> None:
    with pytest.raises(ValueError, match=r"bool|bytea|malformed"):
        convert(t, text)


def test_converters_for_integers_and_text_are_the_builtins() -> None:
    assert converter(T["int4"]) is int
    assert converter(T["int8"]) is int
    assert converter(T["float8"]) is FLOAT_CONVERTER  # float(), NaN and infinities as strings
    assert converter(T["text"]) is str
    assert converter(POSINT) is int


def test_an_array_type_without_element_resolves_through_the_builtin_table() -> None:
    bare = PgType(1020, "_box", category="A")
    same(convert(bare, "{(1,1),(0,0);(2,2),(1,1)}"), ["(1,1),(0,0)", "(2,2),(1,1)"])
    assert json_schema(bare, nullable=False) == {
        "type": ["array"],
        "items": {"type": ["string", "null"]},
    }


def test_builtin_table_covers_the_common_oids() -> None:
    assert {
        oid: BUILTIN_TYPES[oid].name
        for oid in (16, 17, 20, 23, 25, 114, 1043, 1184, 1700, 2950, 3802)
    } == {
        16: "bool",
        17: "bytea",
        20: "int8",
        23: "int4",
        25: "text",
        114: "json",
        1043: "varchar",
        1184: "timestamptz",
        1700: "numeric",
        2950: "uuid",
        3802: "jsonb",
    }
    assert BUILTIN_TYPES[1007] == PgType(1007, "_int4", "b", "A", element=BUILTIN_TYPES[23])
    assert BUILTIN_TYPES[1020].delimiter == ";"
    assert BUILTIN_TYPES[3904].kind == "r"
    assert BUILTIN_TYPES[4451].kind == "m"
    arrays = [t for t in BUILTIN_TYPES.values() if t.element is not None]
    assert all(t.name == "_" + t.element.name for t in arrays if t.element is not None)
    assert all(t.element is None for t in BUILTIN_TYPES.values() if not t.name.startswith("_"))


def schema(type_: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"type": [type_] if isinstance(type_, str) else type_, **extra}


# A number, or one of the strings JSON has no number for.
NON_FINITE = schema(["number", "string"], pattern="^(NaN|Infinity|-Infinity)$")
TIME_PATTERN = "^[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?$"
TIMETZ_PATTERN = "^[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?[+-][0-9]{2}:[0-9]{2}(:[0-9]{2})?$"


def numeric_typmod(precision: int, scale: int) -> int:
    return ((precision << 16) | (scale & 0x7FF)) + 4


SCHEMAS: list[tuple[PgType, dict[str, Any], dict[str, Any]]] = [
    (T["int2"], {}, schema("integer")),
    (T["int8"], {}, schema("integer")),
    (T["oid"], {}, schema("integer")),
    (T["numeric"], {}, NON_FINITE),
    (T["numeric"], {"typmod": numeric_typmod(10, 2)}, NON_FINITE),
    (T["float4"], {}, NON_FINITE),
    (T["float8"], {}, NON_FINITE),
    (T["money"], {}, schema("number")),
    (T["bool"], {}, schema("boolean")),
    (T["text"], {}, schema("string")),
    (T["varchar"], {}, schema("string")),
    (T["varchar"], {"typmod": 14}, schema("string", maxLength=10)),
    (T["bpchar"], {"typmod": 5}, schema("string", maxLength=1)),
    (T["name"], {}, schema("string")),
    (T["char"], {}, schema("string")),
    (CITEXT, {}, schema("string")),
    (T["bytea"], {}, schema("string", contentEncoding="base16")),
    (T["date"], {}, schema("string", format="date")),
    (T["timestamp"], {"typmod": 3}, schema("string", format="date-time")),
    (T["timestamptz"], {}, schema("string", format="date-time")),
    (T["time"], {}, {"type": ["string"], "pattern": TIME_PATTERN}),
    (T["timetz"], {}, {"type": ["string"], "pattern": TIMETZ_PATTERN}),
    (T["interval"], {}, schema("string", format="duration")),
    (T["uuid"], {}, schema("string", format="uuid")),
    (T["json"], {}, schema(["object", "array", "string", "number", "boolean", "null"])),
    (T["jsonb"], {}, schema(["object", "array", "string", "number", "boolean", "null"])),
    (HSTORE, {}, schema("object", additionalProperties={"type": ["string", "null"]})),
    (T["inet"], {}, schema("string")),
    (T["macaddr8"], {}, schema("string")),
    (T["bit"], {"typmod": 3}, schema("string")),
    (T["int4range"], {}, schema("string")),
    (T["datemultirange"], {}, schema("string")),
    (T["xml"], {}, schema("string")),
    (T["point"], {}, schema("string")),
    (T["regclass"], {}, schema("string")),
    (T["int2vector"], {}, schema("string")),
    (MOOD, {}, schema("string")),
    (PAIR, {}, schema("string")),
    (FLOATRANGE, {}, schema("string")),
    (GEOMETRY, {}, schema("string", contentEncoding="base16", **{"x-sql-datatype": "geometry"})),
    (POSINT, {}, schema("integer")),
    (SMALLPOS, {}, schema("integer")),
    (CODE, {"typmod": 7}, schema("string", maxLength=3)),
    (INTLIST, {}, schema("array", items=schema(["integer", "null"]))),
    (T["_int4"], {}, schema("array", items=schema(["integer", "null"]))),
    (
        T["_varchar"],
        {"typmod": 14},
        schema("array", items=schema(["string", "null"], maxLength=10)),
    ),
    (
        T["_timestamptz"],
        {},
        schema("array", items=schema(["string", "null"], format="date-time")),
    ),
    (
        T["_jsonb"],
        {},
        schema("array", items=schema(["object", "array", "string", "number", "boolean", "null"])),
    ),
    (
        HSTORES,
        {},
        schema(
            "array",
            items=schema(["object", "null"], additionalProperties={"type": ["string", "null"]}),
        ),
    ),
    (MOODS, {}, schema("array", items=schema(["string", "null"]))),
    (POSINTS, {}, schema("array", items=schema(["integer", "null"]))),
    # use_singer_decimal
    (T["numeric"], {"use_singer_decimal": True}, schema("string", format="x-singer.decimal")),
    (
        T["numeric"],
        {"use_singer_decimal": True, "typmod": numeric_typmod(10, 2)},
        schema("string", format="x-singer.decimal", precision=10, scale=2),
    ),
    (
        T["numeric"],
        {"use_singer_decimal": True, "typmod": numeric_typmod(5, 0)},
        schema("string", format="x-singer.decimal", precision=5, scale=0),
    ),
    (  # numeric(3,-2) holds up to 99900
        T["numeric"],
        {"use_singer_decimal": True, "typmod": numeric_typmod(3, -2)},
        schema("string", format="x-singer.decimal", precision=5, scale=0),
    ),
    (  # numeric(2,5) holds up to 0.00099
        T["numeric"],
        {"use_singer_decimal": True, "typmod": numeric_typmod(2, 5)},
        schema("string", format="x-singer.decimal", precision=5, scale=5),
    ),
    (
        T["money"],
        {"use_singer_decimal": True},
        schema("string", format="x-singer.decimal", precision=19, scale=2),
    ),
    (
        T["_numeric"],
        {"use_singer_decimal": True, "typmod": numeric_typmod(4, 1)},
        schema(
            "array",
            items=schema(["string", "null"], format="x-singer.decimal", precision=4, scale=1),
        ),
    ),
    (T["float8"], {"use_singer_decimal": True}, NON_FINITE),
    (T["int4"], {"use_singer_decimal": True}, schema("integer")),
]


@pytest.mark.parametrize(
    ("t", "kwargs", "expected"),
    SCHEMAS,
    ids=[f"{t.name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for t, kw, _ in SCHEMAS],
)
def test_schema(t: PgType, kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    assert json_schema(t, nullable=False, **kwargs) == expected


@pytest.mark.parametrize(("t", "kwargs", "expected"), SCHEMAS[:6] + SCHEMAS[40:46])
def test_nullable_schema_adds_null_at_the_top_only(
    t: PgType, kwargs: dict[str, Any], expected: dict[str, Any]
) -> None:
    nullable = json_schema(t, nullable=True, **kwargs)
    assert nullable == {**expected, "type": [*expected["type"], "null"]}


def test_schemas_are_fresh_dicts() -> None:
    first = json_schema(T["int4"], nullable=True)
    first["type"].append("string")
    assert json_schema(T["int4"], nullable=False) == {"type": ["integer"]}
    assert json_schema(T["jsonb"], nullable=True)["type"].count("null") == 1


# Round trips: the text PostgreSQL prints for a value converts back to exactly that value.


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_text_round_trips(value: float) -> None:
    same(convert(T["float8"], repr(value)), value)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_numeric_text_round_trips(value: Decimal) -> None:
    same(convert(T["numeric"], str(value)), value)
    assert convert(T["numeric"], str(value), use_singer_decimal=True) == str(value)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int8_text_round_trips(value: int) -> None:
    same(convert(T["int8"], str(value)), value)


def test_a_finite_date_outside_the_range_is_logged_once_infinity_is_not(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tap_pgcdc.typemap as typemap

    monkeypatch.setattr(typemap, "_warned_clamped", False)
    caplog.set_level("WARNING", logger="tap_pgcdc.typemap")
    assert converter(T["date"])("infinity") == "9999-12-31"
    assert converter(T["timestamp"])("-infinity") == "0001-01-01T00:00:00+00:00"
    assert caplog.records == []  # the usual convention for infinity: no warning
    assert converter(T["date"])("0044-03-15 BC") == "0001-01-01"
    assert converter(T["date"])("10000-01-01") == "9999-12-31"
    [warning] = caplog.records
    assert "'0044-03-15 BC'" in warning.getMessage() and "as text in a view" in warning.getMessage()
