"""A table's columns change between and during runs: every SCHEMA is valid and every record fits it.

The catalog is discovered once and reused, as Meltano does when it caches it: ALTER COLUMN TYPE,
RENAME COLUMN of the key, ADD and DROP COLUMN between runs leave it stale. Each run is fed the
state of the one before (tests/tap_runner.py, tests/memory_target.py); every RECORD is validated
against its stream's latest SCHEMA with format checking (tests/conformance.py), every SCHEMA's
key_properties name properties it has, and the target's rows are compared with the source.
DDL that changes existing rows (a rename, a rewrite, a column added with a default) is followed
by a re-snapshot (tests/integration/test_schema_changes.py): the SCHEMA rules hold for it too.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance import schema_violations
from tests.memory_target import MemoryTarget
from tests.tap_runner import TapRun, discover, run_tap, select_streams

STREAM = "public-t"


def checked(run: TapRun) -> TapRun:
    """The run succeeded, its records validate, and its SCHEMAs' keys are properties."""
    run.check()
    assert schema_violations(run.raw_lines) == []
    for message in run.of_type("SCHEMA"):
        properties = message["schema"]["properties"]
        assert set(message["key_properties"]) <= set(properties), message
    return run


def sync(db, target: MemoryTarget, catalog: dict[str, Any], **config: Any) -> TapRun:
    run = checked(run_tap(db.config(**config), catalog=catalog, state=target.state))
    target.apply(run.messages)
    return run


def source(db, sql: str) -> dict[Any, dict[str, Any]]:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            names = [d.name for d in cur.description]
            return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}
    finally:
        conn.close()


def held(target: MemoryTarget, *columns: str) -> dict[Any, dict[str, Any]]:
    """The target's rows by key value, with only `columns`."""
    rows = target.tables[STREAM].rows
    return {key[0]: {c: row.get(c) for c in columns} for key, row in rows.items()}


def warnings(run: TapRun) -> list[str]:
    return [line for line in run.stderr.splitlines() if "WARNING" in line or "warning" in line]


def test_a_type_changed_under_a_cached_catalog(db) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, a int, b int)")
    db.execute("INSERT INTO t VALUES (1, 10, 1), (2, 20, 2)")
    catalog = select_streams(discover(db.config()), {STREAM})
    target = MemoryTarget()
    sync(db, target, catalog)

    # A rewriting ALTER: the stream is snapshotted again, and its strings fit the SCHEMA.
    db.execute("INSERT INTO t VALUES (3, 30, 3)")
    db.execute("ALTER TABLE t ALTER COLUMN a TYPE text USING 'x' || a")
    db.execute("INSERT INTO t VALUES (4, 'forty', 4); UPDATE t SET b = 22 WHERE id = 2")
    run = sync(db, target, catalog)
    assert run.of_type("ACTIVATE_VERSION")
    assert {r["id"]: r["a"] for r in run.records()} == {1: "x10", 2: "x20", 3: "x30", 4: "forty"}
    assert run.of_type("SCHEMA")[-1]["schema"]["properties"]["a"] == {"type": ["string", "null"]}
    (warning,) = [w for w in warnings(run) if "another type" in w]
    assert "a (integer, now text)" in warning and "Fix: run --discover again" in warning

    # A run whose log holds only changes after the ALTER: the SCHEMA at its start says text.
    db.execute("UPDATE t SET a = 'y' WHERE id = 1")
    run = sync(db, target, catalog)
    assert run.records() == [{**run.records()[0], "id": 1, "a": "y"}]
    assert run.of_type("SCHEMA")[0]["schema"]["properties"]["a"] == {"type": ["string", "null"]}
    assert held(target, "a", "b") == {
        k: {"a": v["a"], "b": v["b"]} for k, v in source(db, "SELECT * FROM t").items()
    }

    # A new target fed the stale catalog from scratch: the snapshot's strings fit its SCHEMA.
    fresh = checked(
        run_tap(db.config(slot_name="fresh", publication_name="fresh"), catalog=catalog)
    )
    assert {r["id"]: r["a"] for r in fresh.records()} == {1: "y", 2: "x20", 3: "x30", 4: "forty"}


@pytest.mark.parametrize("identity", ["DEFAULT", "FULL"])
def test_the_key_column_renamed_between_and_during_runs(db, identity: str) -> None:
    """Under FULL the server flags every column: the key is the catalog's primary key."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, a text)")
    db.execute(f"ALTER TABLE t REPLICA IDENTITY {identity}")
    db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')")
    catalog = select_streams(discover(db.config()), {STREAM})
    target = MemoryTarget()
    sync(db, target, catalog)

    # A change before the rename, then a delete and an update after it: the rename is
    # snapshotted again, under the new key (the log path's key after a rename is
    # tests/unit/test_schema_fit.py's).
    db.execute("UPDATE t SET a = 'b2' WHERE id = 2")
    db.execute("ALTER TABLE t RENAME COLUMN id TO id2")
    db.execute("DELETE FROM t WHERE id2 = 1; UPDATE t SET id2 = 30 WHERE id2 = 3")
    run = sync(db, target, catalog)
    assert run.of_type("ACTIVATE_VERSION")
    assert run.of_type("SCHEMA")[-1]["key_properties"] == ["id2"]
    assert {r["id2"]: r["a"] for r in run.records()} == {2: "b2", 4: "d", 30: "c"}
    assert set(target.tables[STREAM].rows) == {(2,), (4,), (30,)}

    # After it, deletes and key changes in the log carry the new key name.
    db.execute("UPDATE t SET id2 = 3 WHERE id2 = 30")
    run = sync(db, target, catalog)
    deletes = [r for r in run.records() if r["_sdc_deleted_at"]]
    carried = ["id2"] if identity == "DEFAULT" else ["a", "id2"]  # FULL: the whole old row
    assert [sorted(k for k in r if not k.startswith("_sdc")) for r in deletes] == [carried]
    assert [r["id2"] for r in deletes] == [30]
    assert set(target.tables[STREAM].rows) == {(2,), (3,), (4,)}

    # Between runs: the stale catalog's key (id) is gone, so the run's first SCHEMA uses id2.
    db.execute("DELETE FROM t WHERE id2 = 4")
    run = sync(db, target, catalog)
    first = run.of_type("SCHEMA")[0]
    assert first["key_properties"] == ["id2"] and "id" not in first["schema"]["properties"]
    assert [(r["id2"], bool(r["_sdc_deleted_at"])) for r in run.records()] == [(4, True)]
    (warning,) = [w for w in warnings(run) if "no longer has" in w]
    assert "key_properties (id)" in warning and "uses the table's key (id2)" in warning
    assert set(target.tables[STREAM].rows) == {(k,) for k in source(db, "SELECT id2 FROM t")}

    # --test reports the stale catalog with its consequence and fix.
    test = run_tap(db.config(), catalog=catalog, state=target.state, args=["--test"])
    assert test.returncode == 0, test.stderr[-3000:]
    notes = [line for line in test.stderr.splitlines() if "no longer has" in line]
    assert len(notes) == 1 and "Fix: run --discover again" in notes[0]


def test_columns_added_and_dropped_between_runs(db) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, a text, b int)")
    db.execute("INSERT INTO t VALUES (1, 'a', 1)")
    catalog = select_streams(discover(db.config()), {STREAM})
    target = MemoryTarget()
    sync(db, target, catalog)

    db.execute("ALTER TABLE t DROP COLUMN b")
    db.execute("ALTER TABLE t ADD COLUMN c date NOT NULL DEFAULT '2024-01-02'")
    db.execute("INSERT INTO t VALUES (2, 'b', '2025-03-04'); UPDATE t SET a = 'a2' WHERE id = 1")
    run = sync(db, target, catalog)
    schema = run.of_type("SCHEMA")[0]["schema"]["properties"]
    assert "b" not in schema
    assert schema["c"] == {"type": ["string"], "format": "date"}  # NOT NULL
    assert held(target, "a", "c") == {
        1: {"a": "a2", "c": "2024-01-02"},
        2: {"a": "b", "c": "2025-03-04"},
    }
    assert not [w for w in warnings(run) if "another type" in w or "no longer has" in w]

    # Added and dropped within one log read: changes from before the DROP carry `a`, those after
    # it do not; the last SCHEMA is the table's (attributes of a column added while the tap
    # reads, which only the catalog lookup gives, are tests/unit/test_schema_fit.py's).
    db.execute("ALTER TABLE t ADD COLUMN d int NOT NULL DEFAULT 5")
    db.execute("INSERT INTO t VALUES (3, 'c', '2025-01-01', 7)")
    db.execute("ALTER TABLE t DROP COLUMN a")
    db.execute("INSERT INTO t VALUES (4, '2025-01-02', 8)")
    run = sync(db, target, catalog)
    schemas = [m["schema"]["properties"] for m in run.of_type("SCHEMA")]
    assert schemas[-1] == {
        "id": {"type": ["integer"]},
        "c": {"type": ["string"], "format": "date"},
        "d": {"type": ["integer"]},
        "_sdc_lsn": {"type": ["integer", "null"]},
        "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
    }
    # A column added with a default: every row took it, so the stream is snapshotted again.
    assert {r["id"]: r.get("d") for r in run.records()} == {1: 5, 2: 5, 3: 7, 4: 8}
