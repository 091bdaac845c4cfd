"""Every built-in type family: a SQL literal and the exact JSON value the tap must emit for it.

Shared by the snapshot and log round-trip tests: the same row must come out identically from
either path. Expected values are what `json.loads(line, parse_float=Decimal)` gives.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# (column name, SQL type, SQL literal, expected value)
CASES: list[tuple[str, str, str, Any]] = [
    ("c_smallint", "smallint", "-32768", -32768),
    ("c_int", "integer", "2147483647", 2147483647),
    ("c_bigint", "bigint", "-9223372036854775808", -9223372036854775808),
    (
        "c_numeric",
        "numeric",
        "123456789012345678901234567890.123456789",
        Decimal("123456789012345678901234567890.123456789"),
    ),
    ("c_numeric_scale", "numeric(12,2)", "-0.50", Decimal("-0.50")),
    # JSON has no NaN or infinity: the strings, which the schema admits beside numbers
    ("c_numeric_nan", "numeric", "'NaN'", "NaN"),
    ("c_real", "real", "3.14159", 3.14159),
    ("c_real_nan", "real", "'NaN'", "NaN"),
    ("c_real_inf", "real", "'Infinity'", "Infinity"),
    ("c_double", "double precision", "0.1", 0.1),
    ("c_double_inf", "double precision", "'-Infinity'", "-Infinity"),
    ("c_double_pinf", "double precision", "'Infinity'", "Infinity"),
    ("c_double_nan", "double precision", "'NaN'", "NaN"),
    ("c_bool", "boolean", "true", True),
    (
        "c_text",
        "text",
        "E'multi\\nline \\t tab \"quote\" \\\\ back ünïcødé 🐘'",
        'multi\nline \t tab "quote" \\ back ünïcødé 🐘',
    ),
    ("c_varchar", "varchar(20)", "'short'", "short"),
    ("c_char", "char(5)", "'ab'", "ab   "),
    ("c_bytea", "bytea", "'\\x00ff10'::bytea", "00ff10"),
    ("c_date", "date", "'2024-02-29'", "2024-02-29"),
    # outside years 1..9999 (RFC 3339's range): the nearest end of it
    ("c_date_inf", "date", "'infinity'", "9999-12-31"),
    ("c_date_minf", "date", "'-infinity'", "0001-01-01"),
    ("c_date_bc", "date", "'0001-01-01 BC'", "0001-01-01"),
    ("c_date_far", "date", "'10000-01-01'", "9999-12-31"),
    ("c_date_first", "date", "'0001-01-01'", "0001-01-01"),
    ("c_time", "time", "'13:14:15.123456'", "13:14:15.123456"),
    ("c_time_end", "time", "'24:00:00'", "24:00:00"),
    ("c_timetz", "timetz", "'13:14:15+05:30'", "13:14:15+05:30"),
    ("c_timetz_west", "timetz", "'23:59:59.5-08'", "23:59:59.5-08:00"),
    # a timestamp without time zone is read as UTC
    ("c_timestamp", "timestamp", "'2024-01-31 23:59:59.5'", "2024-01-31T23:59:59.5+00:00"),
    ("c_timestamp_inf", "timestamp", "'infinity'", "9999-12-31T23:59:59.999+00:00"),
    ("c_timestamp_bc", "timestamp", "'0044-03-15 12:00:00 BC'", "0001-01-01T00:00:00+00:00"),
    (
        "c_timestamp_last",
        "timestamp",
        "'9999-12-31 23:59:59.999999'",
        "9999-12-31T23:59:59.999+00:00",
    ),
    (
        "c_timestamptz",
        "timestamptz",
        "'2024-01-31 23:59:59.123456+02'",
        "2024-01-31T21:59:59.123456+00:00",
    ),
    ("c_timestamptz_inf", "timestamptz", "'-infinity'", "0001-01-01T00:00:00+00:00"),
    ("c_timestamptz_pinf", "timestamptz", "'infinity'", "9999-12-31T23:59:59.999+00:00"),
    (
        "c_timestamptz_far",
        "timestamptz",
        "'20000-01-01 00:00:00+00'",
        "9999-12-31T23:59:59.999+00:00",
    ),
    ("c_interval", "interval", "'1 year 2 mons 3 days 04:05:06.5'", "P1Y2M3DT4H5M6.5S"),
    ("c_interval_neg", "interval", "'-1 year -2 days -00:00:00.000001'", "P-1Y-2DT-0.000001S"),
    ("c_interval_mixed", "interval", "'1 mon -1 day 01:00'", "P1M-1DT1H"),
    ("c_interval_zero", "interval", "'0'", "PT0S"),
    (
        "c_uuid",
        "uuid",
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ),
    (
        "c_json",
        "json",
        '\'{"a": [1, 2.50, null], "b": "x"}\'',
        {"a": [1, Decimal("2.50"), None], "b": "x"},
    ),
    ("c_jsonb", "jsonb", '\'{"n": 1.10, "t": true}\'', {"n": Decimal("1.10"), "t": True}),
    ("c_int_array", "integer[]", "'{1,NULL,3}'", [1, None, 3]),
    (
        "c_text_array",
        "text[]",
        "ARRAY['a,b', 'NULL', NULL, 'quo\"te', '']",
        ["a,b", "NULL", None, 'quo"te', ""],
    ),
    ("c_2d_array", "integer[][]", "'{{1,2},{3,4}}'", [[1, 2], [3, 4]]),
    ("c_numeric_array", "numeric[]", "'{1.5,NaN}'", [Decimal("1.5"), "NaN"]),
    ("c_float_array", "float8[]", "'{0.5,-Infinity,NaN}'", [0.5, "-Infinity", "NaN"]),
    ("c_date_array", "date[]", "'{2024-01-01,infinity}'", ["2024-01-01", "9999-12-31"]),
    ("c_enum", "mood", "'happy'", "happy"),
    ("c_domain", "positive_int", "42", 42),
    ("c_inet", "inet", "'192.168.0.1/24'", "192.168.0.1/24"),
    ("c_cidr", "cidr", "'10.0.0.0/8'", "10.0.0.0/8"),
    ("c_macaddr", "macaddr", "'08:00:2b:01:02:03'", "08:00:2b:01:02:03"),
    ("c_int4range", "int4range", "'[1,10)'", "[1,10)"),
    (
        "c_tstzrange",
        "tstzrange",
        "'[2024-01-01 00:00:00+00,infinity)'",
        '["2024-01-01 00:00:00+00",infinity)',
    ),
    ("c_money", "money", "'-1234.56'", Decimal("-1234.56")),
    ("c_bit", "bit(4)", "B'1010'", "1010"),
    ("c_varbit", "varbit", "B'101'", "101"),
    ("c_xml", "xml", "'<a>1</a>'", "<a>1</a>"),
    ("c_point", "point", "'(1.5,2)'", "(1.5,2)"),
    ("c_box", "box", "'((0,0),(1,1))'", "(1,1),(0,0)"),
    ("c_circle", "circle", "'<(0,0),2>'", "<(0,0),2>"),
    (
        "c_hstore",
        "hstore",
        '\'a=>1, b=>NULL, "c d"=>"e\\"f"\'',
        {"a": "1", "b": None, "c d": 'e"f'},
    ),
]

SETUP_SQL = """
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
"""


def create_types_table(execute: Any, table: str = "all_types") -> None:
    """Create the all-types table with one full row (id 1) and one all-NULL row (id 2)."""
    execute(SETUP_SQL)
    columns = ", ".join(f"{name} {sql_type}" for name, sql_type, _, _ in CASES)
    execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, {columns})")
    insert_types_row(execute, table, 1)
    execute(f"INSERT INTO {table} (id) VALUES (2)")


def insert_types_row(execute: Any, table: str, row_id: int) -> None:
    names = ", ".join(name for name, _, _, _ in CASES)
    values = ", ".join(literal for _, _, literal, _ in CASES)
    execute(f"INSERT INTO {table} (id, {names}) VALUES ({row_id}, {values})")


def same_value(actual: Any, expected: Any) -> bool:
    """Equality that keeps bool apart from int and reads a float as the decimal it prints."""
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(same_value(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(same_value(actual[k], v) for k, v in expected.items())
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, float) and isinstance(actual, Decimal):
        # JSON has one number type; the line was parsed with parse_float=Decimal.
        return actual == Decimal(repr(expected))
    if isinstance(expected, str) or isinstance(actual, str):
        return type(actual) is type(expected) and actual == expected
    return bool(actual == expected)


def mismatches(record: dict[str, Any]) -> list[str]:
    """Columns of the full row whose emitted value differs from the expected one."""
    return [
        f"{name}: got {record.get(name)!r}, expected {expected!r}"
        for name, _, _, expected in CASES
        if not same_value(record.get(name), expected)
    ]
