"""DDL that changes a table's existing rows without a row change: the tap snapshots it again.

Each test runs the tap like a scheduler (the target's state carried from run to run) against a
real server, applies DDL between runs or while a run reads the log, and compares what the
target holds with the source after every run. The log shows row changes only; what it cannot
show (a rename, a column added with a value for existing rows, a rewriting type change, the
table dropped and created again, a partition truncated, attached or detached) is corrected by
a snapshot after an ACTIVATE_VERSION. DDL that leaves the rows as they are must not cost a
snapshot.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.conftest import TestDb
from tests.integration.test_failures import bookmarks, rows
from tests.integration.test_lifecycle import preflight
from tests.memory_target import MemoryTarget
from tests.tap_runner import TapRun, run_tap

TABLE = (
    "CREATE TABLE t (id int PRIMARY KEY, v text, n int);"
    "INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 30) g"
)


def source(db: TestDb, table: str) -> list[dict[str, Any]]:
    return sorted(rows(db, table), key=repr)


def held(target: MemoryTarget, stream: str, columns: list[str]) -> list[dict[str, Any]]:
    """The target's rows as a warehouse shows them: a column a record lacks reads NULL there."""
    return sorted(({c: row.get(c) for c in columns} for row in target.rows(stream)), key=repr)


def sync(db: TestDb, target: MemoryTarget, table: str = "t", **config: Any) -> TapRun:
    """One scheduled run: the target's state in, the output applied, the target compared."""
    run = run_tap(db.config(**config), state=target.state).check()
    target.apply(run.messages)
    expected = source(db, table)
    columns = list(expected[0]) if expected else []
    assert held(target, f"public-{table}", columns) == expected
    return run


def snapshotted_again(run: TapRun, stream: str = "public-t") -> bool:
    return any(m["stream"] == stream for m in run.of_type("ACTIVATE_VERSION"))


# --- between runs -----------------------------------------------------------------------------

REWRITING = {
    "rename a column": ("ALTER TABLE t RENAME COLUMN v TO w", "renamed to w"),
    "rename the key column": ("ALTER TABLE t RENAME COLUMN id TO ident", "renamed to ident"),
    "add a column with a default": (
        "ALTER TABLE t ADD COLUMN d int NOT NULL DEFAULT 5",
        "column d was added",
    ),
    "add a column with a volatile default": (
        "ALTER TABLE t ADD COLUMN r int DEFAULT (random() * 1000)::int",
        "column r was added",
    ),
    "add a generated column": (
        "ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (n * 2) STORED",
        "column g was added",
    ),
    "add an identity column": (
        "ALTER TABLE t ADD COLUMN s bigint GENERATED ALWAYS AS IDENTITY",
        "column s was added",
    ),
    "change a type with a rewrite": (
        "ALTER TABLE t ALTER COLUMN v TYPE int USING length(v)",
        "column v changed type",
    ),
    "drop and create the table again": (
        "DROP TABLE t; CREATE TABLE t (id int PRIMARY KEY, v text, n int);"
        "INSERT INTO t SELECT g, 'new' || g, -g FROM generate_series(20, 40) g",
        "dropped and created again",
    ),
}


@pytest.mark.parametrize("ddl", REWRITING, ids=list(REWRITING))
def test_ddl_the_log_cannot_express_is_snapshotted_again(db: TestDb, ddl: str) -> None:
    statement, reason = REWRITING[ddl]
    db.execute(TABLE)
    target = MemoryTarget()
    sync(db, target)
    db.execute("UPDATE t SET n = 100 WHERE id = 2; DELETE FROM t WHERE id = 3")
    db.execute(statement)
    db.execute("UPDATE t SET n = 200 WHERE n = 4")
    run = sync(db, target)
    assert snapshotted_again(run), run.stderr
    assert reason in run.stderr
    schema = run.of_type("SCHEMA")[-1]
    assert set(schema["key_properties"]) <= set(schema["schema"]["properties"])
    # Converged: the next run has nothing to correct, and changes flow again.
    db.execute("DELETE FROM t WHERE n = 5 OR n = -25")
    again = sync(db, target)
    assert not snapshotted_again(again), again.stderr
    assert again.records("public-t"), "the delete after the DDL was not captured"


PRESERVING = {
    "add a column without a value": "ALTER TABLE t ADD COLUMN e text",
    "drop a column": "ALTER TABLE t DROP COLUMN n",
    "change a type in place": "ALTER TABLE t ALTER COLUMN v TYPE varchar",
    "vacuum full": "VACUUM FULL t",
}


@pytest.mark.parametrize("ddl", PRESERVING, ids=list(PRESERVING))
def test_ddl_that_keeps_the_rows_costs_no_snapshot(db: TestDb, ddl: str) -> None:
    db.execute(TABLE)
    target = MemoryTarget()
    sync(db, target)
    db.execute(PRESERVING[ddl])
    db.execute("UPDATE t SET v = 'after' WHERE id = 7")
    run = sync(db, target)
    assert not snapshotted_again(run), run.stderr
    assert [r["id"] for r in run.records("public-t")] == [7]


def test_preflight_names_the_change_and_what_the_run_does(db: TestDb) -> None:
    db.execute(TABLE)
    target = MemoryTarget()
    sync(db, target)
    db.execute("ALTER TABLE t RENAME COLUMN v TO w")
    report = preflight(db, target.state)
    assert report.returncode == 0, report.stderr
    assert "column v was renamed to w" in report.stderr
    assert "snapshotted again" in report.stderr


# --- during a run -----------------------------------------------------------------------------

TOASTED = (
    "CREATE TABLE t (id int PRIMARY KEY, v text, big text);"
    "ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;"
    "INSERT INTO t SELECT g, 'v' || g, (SELECT string_agg(md5(h::text), '') "
    "FROM generate_series(1, 200) h) FROM generate_series(1, 10) g"
)

DURING = {
    "rename a column": ("ALTER TABLE t RENAME COLUMN v TO w", "renamed to w"),
    "drop and create the table again": (
        "DROP TABLE t; CREATE TABLE t (id int PRIMARY KEY, w text, big text);"
        "INSERT INTO t VALUES (1, 'new', 'x'), (50, 'new', 'y')",
        "dropped and created again",
    ),
}


@pytest.mark.parametrize("ddl", DURING, ids=list(DURING))
def test_ddl_committed_while_the_run_reads_is_snapshotted_before_it_ends(
    db: TestDb, ddl: str
) -> None:
    statement, reason = DURING[ddl]
    db.execute(TOASTED)
    target = MemoryTarget()
    sync(db, target)
    # An update that leaves the TOASTed value unchanged: the run reads that value by key, a
    # SELECT that waits for the lock the DDL below holds until it commits. So the DDL commits
    # while the run reads the log, after the run's checks at its start.
    db.execute("UPDATE t SET v = 'changed' WHERE id = 1")
    ddl_conn = db.connect()
    ddl_conn.autocommit = False
    try:
        with ddl_conn.cursor() as cur:
            cur.execute(statement)
        result: list[TapRun] = []
        tap = threading.Thread(
            target=lambda: result.append(run_tap(db.config(), state=target.state))
        )
        tap.start()
        deadline = time.monotonic() + 120
        while not db.execute("SELECT 1 FROM pg_locks WHERE NOT granted AND locktype = 'relation'"):
            assert tap.is_alive() and time.monotonic() < deadline, "the run never waited"
            time.sleep(0.2)
        ddl_conn.commit()
    finally:
        ddl_conn.close()
    tap.join(timeout=300)
    run = result[0].check()
    target.apply(run.messages)
    assert reason in run.stderr
    assert snapshotted_again(run), run.stderr
    expected = source(db, "t")
    assert held(target, "public-t", list(expected[0])) == expected
    assert not snapshotted_again(sync(db, target))


# --- partitions -------------------------------------------------------------------------------

PARTITIONED = (
    "CREATE TABLE p (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);"
    "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);"
    "CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (10) TO (20);"
    "INSERT INTO p SELECT g, g % 20, 'v' || g FROM generate_series(1, 40) g"
)

PARTITION_DDL = {
    "truncate a partition": ("TRUNCATE p1", True, "p1 was truncated"),
    "detach a partition and drop it": (
        "ALTER TABLE p DETACH PARTITION p2; DROP TABLE p2",
        True,
        "p2 was detached or dropped",
    ),
    "attach a table that has rows": (
        "CREATE TABLE p3 (id int NOT NULL, k int NOT NULL, v text);"
        "INSERT INTO p3 SELECT g, 20 + g % 10, 'attached' FROM generate_series(1, 15) g;"
        "ALTER TABLE p ATTACH PARTITION p3 FOR VALUES FROM (20) TO (30)",
        True,
        "p3 was attached with rows",
    ),
    "detach a partition, change it, attach it again": (
        "ALTER TABLE p DETACH PARTITION p1; UPDATE p1 SET v = 'while detached';"
        "ALTER TABLE p ATTACH PARTITION p1 FOR VALUES FROM (0) TO (10)",
        True,
        "p1 was detached and attached again",
    ),
    "create a partition and fill it through the parent": (
        "CREATE TABLE p4 PARTITION OF p FOR VALUES FROM (30) TO (40)",
        False,
        "",
    ),
}


@pytest.mark.parametrize("ddl", PARTITION_DDL, ids=list(PARTITION_DDL))
def test_partition_changes_the_log_cannot_express_are_snapshotted_again(
    db: TestDb, ddl: str
) -> None:
    statement, resnapshot, reason = PARTITION_DDL[ddl]
    db.execute(PARTITIONED)
    target = MemoryTarget()
    sync(db, target, "p")
    assert len(bookmarks(target.state)["public-p"]["shape"]["files"]) == 2
    db.execute(statement)
    db.execute("INSERT INTO p SELECT g, g % 10, 'new' FROM generate_series(100, 120) g")
    run = sync(db, target, "p")
    assert snapshotted_again(run, "public-p") == resnapshot, run.stderr
    assert reason in run.stderr
    db.execute("UPDATE p SET v = 'later' WHERE id = 5")
    assert not snapshotted_again(sync(db, target, "p"), "public-p")
