"""Every kind of table with the catalog discovery offers, end to end into target-postgres.

A keyed table and a table keyed by its replica identity index (LOG_BASED), a keyless table, a
view and a materialized view (FULL_TABLE, each sync a table version that ACTIVATE_VERSION makes
the only one): `meltano run tap-pgcdc target-postgres` (discovery on every run, as Meltano does)
through inserts, updates and deletes over several runs. After each run every target table holds
exactly the source's rows, and the FULL_TABLE ones no row besides (no copy of an earlier run, no
row deleted from a base table).
"""

from __future__ import annotations

from typing import Any

from tests.conftest import TestDb
from tests.e2e.conftest import Pipeline, TargetDb

SCHEMA_SQL = """
CREATE TABLE accounts (id integer PRIMARY KEY, name text NOT NULL, balance integer);
CREATE TABLE codes (id integer PRIMARY KEY, code text NOT NULL, label text);
CREATE UNIQUE INDEX codes_code ON codes (code);
ALTER TABLE codes REPLICA IDENTITY USING INDEX codes_code;
CREATE TABLE events (kind text, n integer);
CREATE VIEW rich AS SELECT id, name FROM accounts WHERE balance >= 100;
CREATE MATERIALIZED VIEW even_balances AS SELECT id, balance FROM accounts WHERE id % 2 = 0;
INSERT INTO accounts SELECT g, 'acct ' || g, g * 20 FROM generate_series(1, 10) AS g;
INSERT INTO codes SELECT g, 'C' || g, 'label ' || g FROM generate_series(1, 5) AS g;
INSERT INTO events VALUES ('open', 1), ('open', 1), ('close', 2), ('audit', NULL);
REFRESH MATERIALIZED VIEW even_balances;
"""

# table -> (columns compared, order); keyed tables' deletes stay as soft deletes in the target.
TABLES: dict[str, tuple[list[str], bool]] = {
    "accounts": (["id", "name", "balance"], False),
    "codes": (["id", "code", "label"], False),
    "events": (["kind", "n"], True),
    "rich": (["id", "name"], True),
    "even_balances": (["id", "balance"], True),
}

CHANGES = [
    # Run 2: every kind of change in every base table.
    """
    INSERT INTO accounts VALUES (11, 'acct 11', 500), (12, 'acct 12', 5);
    UPDATE accounts SET balance = 1 WHERE id IN (5, 6);
    DELETE FROM accounts WHERE id IN (9, 10);
    DELETE FROM codes WHERE code = 'C1';
    UPDATE codes SET code = 'C22' WHERE code = 'C2';
    UPDATE codes SET label = 'relabelled' WHERE code = 'C3';
    INSERT INTO codes VALUES (6, 'C6', 'label 6');
    INSERT INTO events VALUES ('open', 1);
    DELETE FROM events WHERE kind = 'close';
    UPDATE events SET n = 7 WHERE kind = 'audit';
    REFRESH MATERIALIZED VIEW even_balances;
    """,
    # Run 3: no change at all: the FULL_TABLE streams are read again, and nothing is doubled.
    "",
    # Run 4: deletes in the views' base table, a keyless table emptied and refilled.
    """
    DELETE FROM accounts WHERE id <= 4;
    UPDATE accounts SET name = 'renamed' WHERE id = 7;
    DELETE FROM events;
    INSERT INTO events VALUES ('replay', 1), ('replay', 1), ('replay', 1);
    UPDATE codes SET code = 'C33', label = 'both' WHERE code = 'C3';
    REFRESH MATERIALIZED VIEW even_balances;
    """,
    # Run 5: the materialized view not refreshed: the target follows it, not its base table.
    """
    INSERT INTO accounts VALUES (20, 'acct 20', 2000);
    DELETE FROM accounts WHERE id = 8;
    DELETE FROM events WHERE ctid IN (SELECT ctid FROM events LIMIT 1);
    """,
]


def _source_rows(db: TestDb, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    order = ", ".join(f"{c} NULLS FIRST" for c in columns)
    return db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")


def _assert_target_equals_source(db: TestDb, target: TargetDb) -> dict[str, int]:
    counts = {}
    for table, (columns, read_in_full) in TABLES.items():
        expected = _source_rows(db, table, columns)
        got = sorted(
            target.rows(table, columns, columns),
            key=lambda row: tuple((v is not None, v) for v in row),
        )
        assert got == expected, table
        if read_in_full:
            # Earlier versions are deleted by ACTIVATE_VERSION (hard_delete): no row besides.
            assert target.count(table) == len(expected), table
        counts[table] = len(expected)
    return counts


def test_every_kind_of_table_replicates_exactly_with_the_discovered_catalog(
    db: TestDb, target_db: TargetDb, postgres_pipeline: Pipeline
) -> None:
    db.execute(SCHEMA_SQL)
    figures = []
    first = postgres_pipeline.run()
    # The keyless table is read in full, with a warning that says how to make it LOG_BASED.
    assert "Stream public-events is read in full every run (FULL_TABLE)" in first.stderr
    figures.append(_assert_target_equals_source(db, target_db))
    for changes in CHANGES:
        if changes:
            db.execute(changes)
        postgres_pipeline.run()
        figures.append(_assert_target_equals_source(db, target_db))
    assert figures == [
        {"accounts": 10, "codes": 5, "events": 4, "rich": 6, "even_balances": 5},
        {"accounts": 10, "codes": 5, "events": 4, "rich": 3, "even_balances": 5},
        {"accounts": 10, "codes": 5, "events": 4, "rich": 3, "even_balances": 5},
        {"accounts": 6, "codes": 5, "events": 3, "rich": 3, "even_balances": 3},
        {"accounts": 6, "codes": 5, "events": 2, "rich": 3, "even_balances": 3},
    ]
    # The identity index is the key: the deleted and the re-keyed rows are gone by code.
    state = postgres_pipeline.state()["singer_state"]["bookmarks"]
    assert "full_table_version" in state["public-events"]
    assert target_db.rows("codes", ["code"], ["code"]) == [
        ("C22",),
        ("C33",),
        ("C4",),
        ("C5",),
        ("C6",),
    ]


def test_target_duckdb_appends_full_table_streams_documented_limitation(
    db: TestDb, pipeline: Pipeline
) -> None:
    """target-duckdb 0.8.0 ignores ACTIVATE_VERSION: each run appends a keyless stream again.

    docs/targets.md says so and what to do instead. If this fails, the target (or the pin)
    changed: update docs/targets.md.
    """
    db.execute(
        "CREATE TABLE events (kind text, n integer); INSERT INTO events VALUES ('a', 1), ('b', 2);"
        " CREATE TABLE base (id integer PRIMARY KEY, v text);"
        " INSERT INTO base VALUES (1, 'one'), (2, 'two');"
        " CREATE VIEW base_view AS SELECT id, v FROM base"
    )
    pipeline.run()
    db.execute("DELETE FROM events WHERE kind = 'b'; DELETE FROM base WHERE id = 2")
    pipeline.run()
    with pipeline.duckdb() as ddb:
        events = ddb.execute("SELECT kind, n FROM public.events ORDER BY kind, n").fetchall()
        view = ddb.execute("SELECT id, v FROM public.base_view ORDER BY id, v").fetchall()
    # Two runs, two copies; the deleted rows stay.
    assert events == [("a", 1), ("a", 1), ("b", 2)]
    assert view == [(1, "one"), (1, "one"), (2, "two")]
