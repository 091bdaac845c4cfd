"""BATCH files end to end: `meltano run tap-pgcdc target-postgres` with `batch_config`.

The snapshot reaches target-postgres (MeltanoLabs, an SDK target) as BATCH files, one per chunk,
in both encodings; the changes of later runs as RECORD messages. After each run the target's
live rows equal the source's, row by row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TestDb
from tests.e2e.conftest import Pipeline, TargetDb

SCHEMA_SQL = """
CREATE TABLE items (
    id integer PRIMARY KEY, name text, amount numeric(12, 2), at timestamptz, flag boolean
);
INSERT INTO items
SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'item ' || g || ' é "q"' END, g * 1.25,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute', g % 2 = 0
FROM generate_series(1, 2500) AS g;
"""
CHANGES = """
UPDATE items SET name = 'renamed', amount = 0.5 WHERE id IN (3, 2000);
DELETE FROM items WHERE id BETWEEN 10 AND 19;
INSERT INTO items VALUES (3001, 'new', 9.99, '2025-06-01 12:00:00+00', true);
"""
COLUMNS = ["id", "name", "amount", "at", "flag"]


def _assert_target_equals_source(db: TestDb, target: TargetDb) -> int:
    # As target-postgres stores them: numeric (a JSON string) as text, timestamptz in UTC.
    expected = db.execute(
        "SELECT id, name, amount::text, at AT TIME ZONE 'UTC', flag FROM items ORDER BY id"
    )
    got = target.rows("items", COLUMNS, ["id"])
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a == b
    return len(expected)


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_snapshot_as_batch_files_then_changes_into_target_postgres(
    db: TestDb,
    target_db: TargetDb,
    postgres_pipeline: Pipeline,
    tmp_path: Path,
    compression: str,
) -> None:
    db.execute(SCHEMA_SQL)
    root = tmp_path / "batches"
    tap: dict[str, Any] = {
        "snapshot_chunk_size": 1000,
        "batch_config": {
            "encoding": {"format": "jsonl", "compression": compression},
            "storage": {"root": root.as_uri()},
        },
    }
    postgres_pipeline.run(**tap)
    files = sorted(root.iterdir())
    assert len(files) == 3  # 2500 rows, chunks of 1000
    assert _assert_target_equals_source(db, target_db) == 2500
    db.execute(CHANGES)
    postgres_pipeline.run(**tap)
    assert sorted(root.iterdir()) == files  # the changes came as RECORD messages
    assert _assert_target_equals_source(db, target_db) == 2491


def test_target_duckdb_refuses_batch_messages(
    db: TestDb, pipeline: Pipeline, tmp_path: Path
) -> None:
    """docs/targets.md: target-duckdb stops at the first BATCH message (if this fails, update it)."""
    db.execute(SCHEMA_SQL)
    root = tmp_path / "batches"
    batch = {
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": root.as_uri()},
    }
    run = pipeline.run(check=False, batch_config=batch)
    assert run.returncode != 0
    assert "Unknown message type BATCH" in run.stderr
