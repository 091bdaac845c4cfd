"""The fast-loading settings of target-postgres load exactly what its slow defaults load.

meltano.yml gives target-postgres `use_copy: true` (COPY instead of INSERT) and
`validate_records: false` (the tap's records conform to their SCHEMA: tests/conformance.py), the
settings docs/targets.md ("Fast loading") measured. Both pipelines read the same source, one with
the SDK's defaults (INSERT, every record validated), one as configured, through a snapshot of every
type the snapshot test has and a round of updates, inserts and deletes; the two target databases
must hold the same tables, column for column (types included) and row for row, metadata columns
that hold load times (and the slot position of snapshot records) aside.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg2 import sql

from tests.conftest import TestDb
from tests.e2e.conftest import Pipeline, target_postgres_config
from tests.e2e.test_meltano_snapshot import DATA_SQL, SCHEMA_SQL
from tests.pgserver import PgServer

# Columns whose values are the time of the load, not data, and `_sdc_lsn`: a snapshot record
# carries its pipeline's slot position (each pipeline has its own slot).
LOAD_TIME_COLUMNS = {
    "_sdc_lsn",
    "_sdc_sequence",  # the SDK: milliseconds since the epoch when the record arrived
    "_sdc_extracted_at",
    "_sdc_batched_at",
    "_sdc_received_at",
    "_sdc_sync_started_at",
}
SLOW_DEFAULTS = {"use_copy": False, "validate_records": True}
CHANGES_SQL = """
UPDATE customers SET note = NULL, tags = ARRAY['x,y', 'z"'], balance = balance * 3 WHERE id % 5 = 1;
UPDATE customers SET name = 'Back' || chr(92) || 'slash ' || chr(9) || id WHERE id % 7 = 2;
DELETE FROM customers WHERE id % 11 = 3;
INSERT INTO customers (name, profile) VALUES ('new', '{"a": [1, null, "x"]}');
DELETE FROM events WHERE id % 4 = 0;
UPDATE key_values SET v = NULL WHERE k LIKE 'key-1%';
INSERT INTO audit_log (at, actor, action) VALUES ('2024-07-01 00:00:00+00', NULL, 'late');
"""


def _tables(db: TestDb) -> dict[str, list[tuple[str, str]]]:
    """Each loaded table's columns (name, type), load-time columns left out."""
    rows = db.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, column_name"
    )
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in rows:
        if column not in LOAD_TIME_COLUMNS:
            tables.setdefault(table, []).append((column, data_type))
    return tables


def _content(db: TestDb) -> dict[str, Any]:
    """Every table's columns and its rows as text, sorted."""
    content: dict[str, Any] = {}
    for table, columns in _tables(db).items():
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c, _ in columns),
            sql.Identifier("public", table),
        )
        conn = db.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                rows = cur.fetchall()
        finally:
            conn.close()
        content[table] = (columns, sorted(rows, key=repr))
    return content


def _target(pg: PgServer, name: str) -> TestDb:
    target = TestDb(pg, name)
    pg.create_database(name)
    return target


@pytest.fixture
def two_targets(pg: PgServer, db: TestDb) -> Iterator[list[TestDb]]:
    targets = [_target(pg, f"{db.name[:45]}_{kind}") for kind in ("slow", "fast")]
    try:
        yield targets
    finally:
        for target in targets:
            target.drop()


def _pipeline(db: TestDb, meltano: Path, workdir: Path, target: TestDb, **config: Any) -> Pipeline:
    workdir.mkdir()
    return Pipeline(
        db=db,
        meltano=meltano,
        workdir=workdir,
        state_id_suffix=target.name,
        loader="target-postgres",
        target_config={**target_postgres_config(target, "public"), **config},
    )


def test_copy_without_validation_loads_what_insert_with_validation_loads(
    db: TestDb, two_targets: list[TestDb], meltano_bin: Path, tmp_path: Path
) -> None:
    db.execute(SCHEMA_SQL)
    for statement in DATA_SQL:
        db.execute(statement)
    slow_target, fast_target = two_targets
    slow = _pipeline(db, meltano_bin, tmp_path / "slow", slow_target, **SLOW_DEFAULTS)
    fast = _pipeline(db, meltano_bin, tmp_path / "fast", fast_target)
    # Each pipeline its own slot and publication.
    slots = {
        name: {"slot_name": f"slot_{name}_{db.name}", "publication_name": f"pub_{name}_{db.name}"}
        for name in ("slow", "fast")
    }

    for round_ in ("snapshot", "changes"):
        slow.run(**slots["slow"])
        fast.run(**slots["fast"])
        slow_content, fast_content = _content(slow_target), _content(fast_target)
        assert set(fast_content) == {
            "customers",
            "events",
            "Order Items",
            "key_values",
            "audit_log",
        }
        for table, (columns, rows) in fast_content.items():
            assert (columns, rows) == slow_content[table], (round_, table)
        live = fast_target.execute(
            "SELECT count(*) FROM public.customers WHERE _sdc_deleted_at IS NULL"
        )
        assert live == db.execute("SELECT count(*) FROM customers"), round_
        db.execute(CHANGES_SQL)
