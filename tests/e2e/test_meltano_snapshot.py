"""A first `meltano run tap-pgcdc target-duckdb` copies every table exactly (the snapshot)."""

from __future__ import annotations

import pytest

from tests.conftest import TestDb
from tests.e2e.conftest import Pipeline

# target-duckdb loads a stream every BATCH rows; `events` spans several batches so that a loader
# that loses a row per batch (target-duckdb with duckdb >= 1.1) fails the row count.
BATCH = 250
EVENTS = 1_203
KEY_VALUES = 2 * BATCH + 17

SCHEMA_SQL = """
CREATE TABLE customers (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    email       varchar(200),
    created_at  timestamptz,
    birthday    date,
    balance     numeric(12, 2),
    score       double precision,
    ratio       real,
    active      boolean,
    visits      integer,
    tags        text[],
    profile     jsonb,
    note        text
);

CREATE TABLE events (
    id          bigint PRIMARY KEY,
    kind        text NOT NULL,
    happened_at timestamp,
    amount      smallint,
    payload     json,
    ref         uuid
);

CREATE TABLE "Order Items" (
    "OrderId"   integer,
    "Line No"   integer,
    "SKU"       text,
    qty         smallint NOT NULL,
    unit_price  numeric(10, 2),
    PRIMARY KEY ("OrderId", "Line No")
);

-- Only text columns: the shape in which duckdb >= 1.1 takes a batch's first row for a CSV header.
CREATE TABLE key_values (
    k           text PRIMARY KEY,
    v           text
);

-- No primary key: tap-pgcdc requires REPLICA IDENTITY FULL for such a table.
CREATE TABLE audit_log (
    at          timestamptz NOT NULL,
    actor       text,
    action      text
);
ALTER TABLE audit_log REPLICA IDENTITY FULL;
"""

DATA_SQL = [
    # 300 customers: every nullable column NULL on some rows, values of every type otherwise.
    """
    INSERT INTO customers (name, email, created_at, birthday, balance, score, ratio, active,
                           visits, tags, profile, note)
    SELECT
        'Customer ' || g,
        CASE WHEN g % 7 = 0 THEN NULL ELSE 'c' || g || '@example.com' END,
        CASE WHEN g % 11 = 0 THEN NULL
             ELSE timestamptz '2023-01-01 00:00:00+00'
                  + g * interval '7 hours 13.123456 seconds' END,
        CASE WHEN g % 13 = 0 THEN NULL ELSE date '1950-01-01' + g * 53 END,
        CASE WHEN g % 5 = 0 THEN NULL ELSE round((g * 37.13 - 4000)::numeric, 2) END,
        CASE WHEN g % 9 = 0 THEN NULL ELSE g / 7.0::double precision END,
        CASE WHEN g % 10 = 0 THEN NULL ELSE (g % 100) / 8.0::real END,
        CASE WHEN g % 3 = 0 THEN NULL ELSE g % 2 = 0 END,
        CASE WHEN g % 4 = 0 THEN NULL ELSE g * 1000 END,
        CASE WHEN g % 6 = 0 THEN NULL
             WHEN g % 6 = 1 THEN ARRAY[]::text[]
             ELSE ARRAY['tag' || g % 3, 'b,c', 'quote"d'] END,
        CASE WHEN g % 8 = 0 THEN NULL
             ELSE jsonb_build_object('n', g, 'nested', jsonb_build_object('ok', g % 2 = 0),
                                     'list', jsonb_build_array(1, 'two', 3.5)) END,
        CASE WHEN g % 2 = 0 THEN NULL ELSE 'note ' || g END
    FROM generate_series(1, 300) AS g
    """,
    # Strings a CSV-based loader could mangle.
    """
    INSERT INTO customers (name, note) VALUES
        ('Zoë Ünïcode 😀', 'line one' || chr(10) || 'line two'),
        ('Comma, "Quote" Person', 'tab' || chr(9) || 'and \\N backslash'),
        ('  padded  ', 'NULL'),
        ('crlf', 'a' || chr(13) || chr(10) || 'b')
    """,
    f"""
    INSERT INTO events (id, kind, happened_at, amount, payload, ref)
    SELECT
        g,
        (ARRAY['click', 'view', 'purchase'])[1 + g % 3],
        CASE WHEN g % 17 = 0 THEN NULL
             ELSE timestamp '2024-02-29 12:00:00' + g * interval '1 minute 0.5 second' END,
        CASE WHEN g % 19 = 0 THEN NULL ELSE (g % 30000) - 15000 END,
        CASE WHEN g % 23 = 0 THEN NULL ELSE json_build_object('g', g, 's', repeat('x', g % 5)) END,
        md5(g::text)::uuid
    FROM generate_series(1, {EVENTS}) AS g
    """,
    """
    INSERT INTO "Order Items" ("OrderId", "Line No", "SKU", qty, unit_price)
    SELECT o, l, CASE WHEN (o + l) % 9 = 0 THEN NULL ELSE 'SKU-' || o || '-' || l END,
           (o * l) % 50 + 1, CASE WHEN l = 3 THEN NULL ELSE (o * 3.25 + l)::numeric(10, 2) END
    FROM generate_series(1, 80) AS o, generate_series(1, 3) AS l
    """,
    f"""
    INSERT INTO key_values (k, v)
    SELECT 'key-' || g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'value ' || g END
    FROM generate_series(1, {KEY_VALUES}) AS g
    """,
    # No primary key, with exact duplicate rows: a mirror keeps both.
    """
    INSERT INTO audit_log (at, actor, action)
    SELECT timestamptz '2024-06-01 08:00:00+02' + (g % 50) * interval '1 second',
           CASE WHEN g % 4 = 0 THEN NULL ELSE 'user' || g % 10 END,
           'action ' || g % 25
    FROM generate_series(1, 200) AS g
    """,
]


@pytest.fixture
def source(db: TestDb) -> TestDb:
    db.execute(SCHEMA_SQL)
    for statement in DATA_SQL:
        db.execute(statement)
    return db


def test_snapshot_copies_every_row(source: TestDb, pipeline: Pipeline) -> None:
    pipeline.target_config["batch_size_rows"] = BATCH

    pipeline.run()

    report = pipeline.assert_mirrors()
    counts = {t.pg_table: t.duckdb_count for t in report.tables}
    assert counts == {
        "public.customers": 304,
        "public.events": EVENTS,
        "public.Order Items": 240,
        "public.key_values": KEY_VALUES,
        "public.audit_log": 200,
    }
    with pipeline.duckdb() as ddb:
        for table in ("customers", "events", "order items", "key_values", "audit_log"):
            columns = {
                r[0]
                for r in ddb.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = ?",
                    [table],
                ).fetchall()
            }
            assert {"_sdc_lsn", "_sdc_deleted_at"} <= columns, table
            deleted = ddb.execute(
                f'SELECT count(*) FROM public."{table}" WHERE _sdc_deleted_at IS NOT NULL'
            ).fetchone()
            assert deleted == (0,), table


def test_snapshot_of_an_empty_table_creates_it(db: TestDb, pipeline: Pipeline) -> None:
    db.execute("CREATE TABLE empty_one (id int PRIMARY KEY, v text)")

    pipeline.run()

    report = pipeline.assert_mirrors()
    assert [(t.pg_table, t.duckdb_count) for t in report.tables] == [("public.empty_one", 0)]


def test_second_run_resumes_from_state_and_changes_nothing(
    source: TestDb, pipeline: Pipeline
) -> None:
    loaded = "SELECT count(*), max(_sdc_batched_at) FROM public.customers"
    pipeline.run()
    streams = set(pipeline.state()["singer_state"]["bookmarks"])
    assert streams == {
        "public-customers",
        "public-events",
        "public-Order Items",
        "public-key_values",
        "public-audit_log",
    }
    with pipeline.duckdb() as ddb:
        before = ddb.execute(loaded).fetchone()

    pipeline.run()

    assert set(pipeline.state()["singer_state"]["bookmarks"]) == streams
    pipeline.assert_mirrors()
    with pipeline.duckdb() as ddb:
        assert ddb.execute(loaded).fetchone() == before  # no row was loaded again
