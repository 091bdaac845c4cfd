"""DDL between runs, end to end: `meltano run tap-pgcdc target-postgres`, compared row by row.

A rename, a column added with a default, a rewriting type change and the table dropped and
created again change existing rows without a row change in the log; the tap snapshots the
stream again after an ACTIVATE_VERSION, which target-postgres (MeltanoLabs) applies by dropping
the rows of older versions. After every run the target's live rows are the source's.
"""

from __future__ import annotations

from tests.conftest import TestDb
from tests.e2e.conftest import Pipeline, TargetDb

STEPS = [
    # (DDL and changes before the run, the source's columns after it)
    ("", ["id", "v", "n"]),
    (
        "ALTER TABLE t RENAME COLUMN v TO w; ALTER TABLE t ADD COLUMN d integer DEFAULT 5;"
        "UPDATE t SET n = -1 WHERE id = 3",
        ["id", "w", "n", "d"],
    ),
    (
        "ALTER TABLE t ALTER COLUMN n TYPE bigint USING n * 10; DELETE FROM t WHERE id = 4",
        ["id", "w", "n", "d"],
    ),
    (
        "DROP TABLE t; CREATE TABLE t (id integer PRIMARY KEY, w text, n bigint, d integer);"
        "INSERT INTO t SELECT g, 'new ' || g, g, 1 FROM generate_series(8, 14) g",
        ["id", "w", "n", "d"],
    ),
]


def test_ddl_between_runs_leaves_the_target_equal_to_the_source(
    db: TestDb, target_db: TargetDb, postgres_pipeline: Pipeline
) -> None:
    db.execute(
        "CREATE TABLE t (id integer PRIMARY KEY, v text, n integer);"
        "INSERT INTO t SELECT g, 'v ' || g, g FROM generate_series(1, 10) g"
    )
    for ddl, columns in STEPS:
        if ddl:
            db.execute(ddl)
        run = postgres_pipeline.run()
        expected = db.execute(f"SELECT {', '.join(columns)} FROM t ORDER BY id")
        assert target_db.rows("t", columns, ["id"]) == expected, (ddl, run.stderr_tail())
        if ddl:
            assert "snapshotted again" in run.stderr, ddl
