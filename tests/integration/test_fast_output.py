"""The fast output paths write exactly the records the SDK's path writes, for every type.

Each test runs the real tap twice over the same data, once with TAP_PGCDC_FAST_OUTPUT=0 (every
record through the SDK: selection, stream maps, RecordMessage, the writer) and once as shipped,
and compares the RECORD messages, parsed with Decimal for JSON numbers: the same records in the
same order, with the same properties, value types and values (Decimal digits and exponent
included, NaN and the infinities as strings). Only time_extracted may differ.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import simplejson
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_pgcdc import typemap
from tap_pgcdc.output.jsontext import ascii_json, serialize
from tap_pgcdc.pg.casters import raw_text_casters
from tap_pgcdc.pg.catalog import load_tables
from tap_pgcdc.pg.connect import connect
from tap_pgcdc.snapshot.render import column_sql, resolve_markers
from tests.tap_runner import TapRun, discover, run_tap, select_streams
from tests.type_cases import create_types_table, insert_types_row

PLAIN = {"TAP_PGCDC_FAST_OUTPUT": "0"}

# Values the converters rewrite or that sit on an edge of a SQL rendering: BC dates, the
# infinities, decimals Python prints with an exponent, control and non-ASCII characters,
# char(n) padding, a row of NULLs, JSON documents with spacing, numbers and escapes.
EDGE_SETUP = """
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE TYPE tone AS ENUM ('a"b', 'é', 'plain');
CREATE TYPE pair AS (n int, s text);
CREATE DOMAIN label AS text;
CREATE DOMAIN amount AS numeric(20, 8);
CREATE TABLE edge (
    "Id" integer,
    k text,
    c_text text, c_char char(6), c_varchar varchar(12), c_name name, c_label label,
    c_uuid uuid, c_tone tone, c_bool boolean,
    c_int2 smallint, c_int8 bigint, c_oid oid,
    c_numeric numeric, c_amount amount, c_float8 double precision, c_float4 real,
    c_date date, c_ts timestamp, c_tstz timestamptz, c_time time, c_timetz timetz,
    c_interval interval, c_jsonb jsonb, c_json json, c_bytea bytea, c_inet inet,
    c_money money, c_ints integer[], c_texts text[], c_pair pair, c_hstore hstore,
    "we""ird %s col" text, "ключ" integer,
    PRIMARY KEY ("Id", k)
);
"""
EDGE_VALUES: dict[str, list[str]] = {
    "c_text": [
        "'plain'",
        "E'ctl \\x01 \\x1f \\x7f tab\\t nl\\n cr\\r bs\\\\ q\" /'",
        "'ünïcødé 🐘 ✓'",
        "''",
    ],
    "c_char": ["'ab'", "'é'", "'abcdef'"],
    "c_varchar": ["'v'", "'\"quoted\"'"],
    "c_name": ["'a name'"],
    "c_label": ["'domain text é'"],
    "c_uuid": ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"],
    "c_tone": ["'a\"b'", "'é'", "'plain'"],
    "c_bool": ["true", "false"],
    "c_int2": ["-32768", "32767", "0"],
    "c_int8": ["-9223372036854775808", "9223372036854775807"],
    "c_oid": ["4294967295"],
    "c_numeric": [
        "0.0000001",
        "-0.000000000",
        "'NaN'",
        "'Infinity'",
        "'-Infinity'",
        "123.4500",
        "1e20",
        "-12345678901234567890.123456789",
    ],
    "c_amount": ["0.00000001", "12.5"],
    "c_float8": ["1e16", "123456789", "'-0'", "1e-7", "'NaN'", "'Infinity'", "0.1", "1e300"],
    "c_float4": ["3.14159", "'-Infinity'", "1e-30"],
    "c_date": ["'0044-03-15 BC'", "'infinity'", "'-infinity'", "'2024-02-29'", "'0001-01-01'"],
    "c_ts": [
        "'0044-03-15 12:00:00 BC'",
        "'infinity'",
        "'2024-01-31 23:59:59.5'",
        "'12345-06-07 08:09:10'",
        "'0001-01-01 00:00:00'",
    ],
    "c_tstz": [
        "'0001-12-31 23:59:59.999999+00 BC'",
        "'0001-01-01 00:00:00+00'",
        "'-infinity'",
        "'2024-01-31 23:59:59.123456+02'",
        "'infinity'",
    ],
    "c_time": ["'13:14:15.123456'"],
    "c_timetz": ["'13:14:15+05:30'"],
    "c_interval": ["'1 year 2 mons 3 days 04:05:06.5'"],
    "c_jsonb": [
        '\'{"b": [1.10, 1e-7, 1E+2, null, true, -0.0], "a": "ünï \\u0001 🐘 \\"", "c": {}}\'',
        "'\"just a string\"'",
        "'null'",
        "'12345678901234567890123'",
        "'[]'",
    ],
    "c_json": ['\'{"a": 1,\n "a": 2.50, "b": [ ] }\''],
    "c_bytea": ["'\\x00ff10'::bytea"],
    "c_inet": ["'192.168.0.1'", "'10.0.0.0/8'"],
    "c_money": ["'-1234.56'"],
    "c_ints": ["'{1,NULL,3}'", "'{}'"],
    "c_texts": ["ARRAY['a,b', 'NULL', NULL, 'é\"']"],
    "c_pair": ["ROW(NULL, NULL)::pair", "ROW(1, 'x y')::pair"],
    "c_hstore": ["'a=>1, b=>NULL'"],
    '"we""ird %s col"': ["'w'"],
    '"ключ"': ["7"],
}
EDGE_ROWS = 9  # row i takes value i mod len of each column's list; one more row is all NULL


def create_edge_table(db: Any) -> None:
    db.execute(EDGE_SETUP)
    insert_edge_rows(db, 1)


def insert_edge_rows(db: Any, first: int) -> None:
    columns = list(EDGE_VALUES)
    for i in range(EDGE_ROWS):
        values = [EDGE_VALUES[c][i % len(EDGE_VALUES[c])] for c in columns]
        db.execute(
            f'INSERT INTO edge ("Id", k, {", ".join(columns)}) '
            f"VALUES ({first + i}, 'k\"é{i}', {', '.join(values)})"
        )
    db.execute(f"INSERT INTO edge (\"Id\", k) VALUES ({first + EDGE_ROWS}, 'nulls')")


def records(run: TapRun, *, snapshot: bool) -> list[dict[str, Any]]:
    """RECORD messages without time_extracted, in output order, without the closing repeat.

    Two runs that each snapshot a LOG_BASED table do so at their own consistent point, so
    `snapshot` masks the position a snapshot record carries in `_sdc_lsn`, and the version of a
    FULL_TABLE sync (the time it started).
    """
    out = []
    repeat = run.closing_repeat  # only the fast path keeps a large last record (closing.py)
    for message in run.messages:
        if message["type"] == "RECORD":
            # Masked alike, the repeat included: `closing_repeat` compares what they carry.
            assert message.pop("time_extracted", None) is not None or message is repeat
            if snapshot and isinstance(message["record"].get("_sdc_lsn"), int):
                message["record"]["_sdc_lsn"] = "consistent point"
            if snapshot and isinstance(message.get("version"), int):
                message["version"] = "sync version"
            if message is not repeat:
                out.append(message)
    return out


def assert_same_records(fast: TapRun, plain: TapRun, *, snapshot: bool = False) -> None:
    got, expected = records(fast, snapshot=snapshot), records(plain, snapshot=snapshot)
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected, strict=True):
        # repr tells 1 from 1.0 from True, Decimal("1.10") from Decimal("1.1"), and shows nan.
        assert repr(a) == repr(b), f"\nfast:  {a}\nplain: {b}"
    # The final positions are where each run caught up (the server's WAL moves on between
    # runs); what the states record is the same.
    assert fast.final_state is not None and plain.final_state is not None
    assert fast.final_state.keys() == plain.final_state.keys()
    assert fast.final_state["bookmarks"].keys() == plain.final_state["bookmarks"].keys()


def both(config: dict[str, Any], *, sdk: bool = False, **kwargs: Any) -> tuple[TapRun, TapRun]:
    """The tap as shipped, then on the SDK's path; `sdk`: the config itself needs the SDK."""
    fast = run_tap(config, **kwargs).check()
    plain = run_tap(config, env=PLAIN, **kwargs).check()
    assert ("are written directly" in fast.stderr) is not sdk
    assert "are written directly" not in plain.stderr
    return fast, plain


def full_table(catalog: dict[str, Any]) -> dict[str, Any]:
    catalog = json.loads(json.dumps(catalog))
    for stream in catalog["streams"]:
        stream["replication_method"] = "FULL_TABLE"
    return catalog


# --- snapshot -------------------------------------------------------------------------------------


def test_snapshot_of_every_type(db) -> None:
    create_types_table(db.execute)
    fast, plain = both(db.config())
    assert_same_records(fast, plain, snapshot=True)


def test_snapshot_of_edge_values_in_small_chunks(db) -> None:
    create_edge_table(db)
    fast, plain = both(db.config(snapshot_chunk_size=3))
    assert_same_records(fast, plain, snapshot=True)
    # Values only the Python side renders, checked against their meaning as well: BC dates are
    # before RFC 3339's first year, written as its first day.
    by_id = {m["record"]["Id"]: m["record"] for m in fast.of_type("RECORD")}
    assert by_id[1]["c_date"] == "0001-01-01" and by_id[1]["c_tstz"] == "0001-01-01T00:00:00+00:00"
    assert by_id[1]["c_numeric"] == Decimal("1E-7") and by_id[1]["c_pair"] == "(,)"
    assert by_id[1]["c_char"] == "ab    " and by_id[1]["c_inet"] == "192.168.0.1"
    assert by_id[10]["c_text"] is None and by_id[10]["c_pair"] is None
    # The resume points are the keys' own text, as on the plain path.
    chunks = [
        s["bookmarks"]["public-edge"]["snapshot"]["after"]
        for s in fast.states
        if "snapshot" in s["bookmarks"].get("public-edge", {})
    ]
    assert chunks[:2] == [["3", 'k"é2'], ["6", 'k"é5']]


def test_snapshot_full_table_views_and_keyless_tables(db) -> None:
    create_edge_table(db)
    db.execute(
        "CREATE TABLE nokey AS SELECT * FROM edge; ALTER TABLE nokey REPLICA IDENTITY FULL;"
        " CREATE VIEW edge_view AS SELECT * FROM edge;"
        ' CREATE MATERIALIZED VIEW edge_mat AS SELECT "Id", c_jsonb, c_tstz FROM edge'
    )
    catalog = full_table(discover(db.config()))
    fast, plain = both(db.config(snapshot_chunk_size=4), catalog=catalog)
    assert_same_records(fast, plain, snapshot=True)
    streams = {m["stream"] for m in fast.of_type("RECORD")}
    assert streams == {"public-edge", "public-nokey", "public-edge_view", "public-edge_mat"}


def test_snapshot_with_deselected_columns(db) -> None:
    create_edge_table(db)
    catalog = select_streams(discover(db.config()), {"public-edge"})
    for item in catalog["streams"][0]["metadata"]:
        if item["breadcrumb"] in (["properties", "c_text"], ["properties", "_sdc_lsn"]):
            item["metadata"]["selected"] = False
    fast, plain = both(db.config(), catalog=catalog)
    assert_same_records(fast, plain, snapshot=True)
    record = fast.records()[0]
    # _sdc_lsn is `inclusion: automatic` (deletes and ordering depend on it): kept anyway.
    assert "c_text" not in record and "_sdc_lsn" in record and "c_tstz" in record


def test_flattening_and_stream_maps_take_the_sdk_path(db) -> None:
    db.execute("CREATE TABLE docs (id int PRIMARY KEY, doc jsonb, secret text)")
    db.execute("""INSERT INTO docs VALUES (1, '{"a": {"b": 1.50}}', 's')""")
    config = db.config(
        flattening_enabled=True,
        flattening_max_depth=2,
        stream_maps={"public-docs": {"secret": None}},
    )
    fast, plain = both(config, sdk=True)
    assert_same_records(fast, plain, snapshot=True)
    (record,) = fast.records()
    # Flattening turned the object into its JSON text (the schema gives it no properties).
    assert record["doc"] == '{"a":{"b":1.50}}' and "secret" not in record


# --- log --------------------------------------------------------------------------------------


def test_log_changes_of_every_type(db) -> None:
    create_types_table(db.execute)
    first = run_tap(db.config()).check()
    insert_types_row(db.execute, "all_types", 3)
    db.execute("INSERT INTO all_types (id) VALUES (4)")
    db.execute("UPDATE all_types SET c_text = 'changed' WHERE id = 3")
    db.execute("DELETE FROM all_types WHERE id = 4")
    fast, plain = both(db.config(), state=first.final_state)
    assert_same_records(fast, plain)


def test_log_changes_of_edge_values(db) -> None:
    create_edge_table(db)
    db.execute(
        "CREATE TABLE edge_full AS SELECT * FROM edge; ALTER TABLE edge_full REPLICA IDENTITY FULL"
    )
    first = run_tap(db.config()).check()
    insert_edge_rows(db, 100)
    db.execute(
        """
        UPDATE edge SET c_text = c_text || '!' WHERE "Id" % 2 = 0;
        UPDATE edge SET k = k || '-moved' WHERE "Id" = 3;
        DELETE FROM edge WHERE "Id" IN (5, 104);
        INSERT INTO edge_full SELECT * FROM edge WHERE "Id" >= 100;
        UPDATE edge_full SET c_int2 = 1 WHERE "Id" % 2 = 1;
        DELETE FROM edge_full WHERE "Id" = 2;
        BEGIN; TRUNCATE edge_full; INSERT INTO edge_full ("Id", k) VALUES (1, 'after'); COMMIT;
        """
    )
    fast, plain = both(db.config(), state=first.final_state)
    assert_same_records(fast, plain)
    kinds = [m["type"] for m in fast.messages]
    assert "ACTIVATE_VERSION" in kinds
    assert any("version" in m for m in fast.of_type("RECORD"))


def test_log_unchanged_toast_and_deselected_columns(db) -> None:
    db.execute(
        """
        CREATE TABLE docs (id int PRIMARY KEY, title text, body text, meta jsonb);
        ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
        """
    )
    db.execute(
        "INSERT INTO docs SELECT g, 't' || g, repeat('x', 20000) || g, '{\"k\": 1}'"
        " FROM generate_series(1, 5) g"
    )
    catalog = select_streams(discover(db.config()), {"public-docs"})
    for item in catalog["streams"][0]["metadata"]:
        if item["breadcrumb"] == ["properties", "meta"]:
            item["metadata"]["selected"] = False
    first = run_tap(db.config(), catalog=catalog).check()
    db.execute("UPDATE docs SET title = 'changed' WHERE id <= 3; DELETE FROM docs WHERE id = 5")
    fast, plain = both(db.config(), catalog=catalog, state=first.final_state)
    assert_same_records(fast, plain)
    bodies = {r["id"]: r.get("body") for r in fast.records() if not r["_sdc_deleted_at"]}
    assert bodies == {i: "x" * 20000 + str(i) for i in (1, 2, 3)}
    assert all("meta" not in r for r in fast.records())


# --- the SQL renderings, value by value ---------------------------------------------------------

AD_OR_BC = st.tuples(
    st.integers(1, 4700), st.integers(1, 12), st.integers(1, 28), st.booleans()
).map(lambda d: (f"{d[0]:04d}-{d[1]:02d}-{d[2]:02d}", " BC" if d[3] else ""))
TIMES = st.tuples(
    st.integers(0, 23), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999_999)
).map(lambda t: f"{t[0]:02d}:{t[1]:02d}:{t[2]:02d}.{t[3]:06d}")
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.decimals(allow_nan=False, allow_infinity=False, places=6)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)

# (SQL type, strategy for a literal's text, the server's type name)
RENDERED = [
    ("smallint", st.integers(-(2**15), 2**15 - 1).map(str)),
    ("integer", st.integers(-(2**31), 2**31 - 1).map(str)),
    ("bigint", st.integers(-(2**63), 2**63 - 1).map(str)),
    ("oid", st.integers(0, 2**32 - 1).map(str)),
    (
        "numeric",
        st.decimals(allow_nan=True, allow_infinity=True).map(
            lambda d: "NaN" if d.is_nan() else str(d)
        ),
    ),
    ("boolean", st.booleans().map(str)),
    ("text", TEXT),
    (
        "varchar(20)",
        st.text(
            st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20
        ),
    ),
    ("char(8)", st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), max_size=8)),
    ("name", st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)),
    ("uuid", st.uuids().map(str)),
    ("tone", st.sampled_from(['a"b', "é", "plain"])),
    ("label", TEXT),
    ("amount", st.decimals(-(10**11), 10**11, places=8).map(str)),
    ("jsonb", JSON_VALUES.map(lambda v: simplejson.dumps(v, use_decimal=True))),
    ("date", AD_OR_BC.map(lambda d: d[0] + d[1]) | st.sampled_from(["infinity", "-infinity"])),
    (
        "timestamp",
        st.tuples(AD_OR_BC, TIMES).map(lambda v: f"{v[0][0]} {v[1]}{v[0][1]}")
        | st.sampled_from(["infinity", "-infinity"]),
    ),
    (
        "timestamptz",
        st.tuples(AD_OR_BC, TIMES, st.integers(-12, 14)).map(
            lambda v: f"{v[0][0]} {v[1]}{v[2]:+03d}{v[0][1]}"
        )
        | st.sampled_from(["infinity", "-infinity"]),
    ),
]


@pytest.mark.parametrize(("sql_type", "values"), RENDERED, ids=[r[0] for r in RENDERED])
def test_sql_rendering_is_the_writers_json_of_the_value(db, sql_type: str, values: Any) -> None:
    """For random values: the snapshot's SQL JSON == serialize(converter(output text))."""
    db.execute(
        "CREATE TYPE tone AS ENUM ('a\"b', 'é', 'plain'); CREATE DOMAIN label AS text;"
        " CREATE DOMAIN amount AS numeric(20, 8);"
        f" CREATE TABLE v (x {sql_type})"
    )
    conn = connect(db.config())
    conn.autocommit = True
    try:
        (table,) = [t for t in load_tables(conn) if t.name == "v"]
        (column,) = table.columns
        convert = typemap.converter(column.type)
        raw_text_casters(conn, [column.type.oid])
        sql = (
            f"SELECT {column_sql(column, 0, convert)}, x FROM (SELECT %s::{column.sql_type} AS x) s"
        )

        @settings(max_examples=60, deadline=None)
        @given(values)
        def check(literal: str) -> None:
            with conn.cursor() as cur:
                cur.execute(sql.replace("%", "%%").replace("%%s::", "%s::"), [literal])
                rendered, text = cur.fetchone()
            fast = ascii_json(resolve_markers(rendered, [convert]))
            plain = serialize(None if text is None else convert(text))
            assert repr(parsed(fast)) == repr(parsed(plain)), (literal, text, fast, plain)
            if sql_type not in ("numeric", "amount", "jsonb"):  # the writer's own spelling
                assert fast == plain

        check()
    finally:
        conn.close()


def _integer(text: str) -> int | Decimal:
    return int(text) if len(text.lstrip("-")) <= 4300 else Decimal(text)


def parsed(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=_integer)
