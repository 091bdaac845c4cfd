"""Parallel snapshot readers (snapshot_workers) against a real server: the one-reader output."""

from __future__ import annotations

import typing as t

import pytest

from tests.tap_runner import TapRun, run_tap

if t.TYPE_CHECKING:
    from tests.conftest import TestDb

# An uneven composite key: most rows under a = 0, a few under each of the others.
UNEVEN = """
CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));
INSERT INTO pairs SELECT 0, 'k' || lpad(g::text, 5, '0'), md5(g::text) FROM generate_series(1, 900) g;
INSERT INTO pairs SELECT g % 40 + 1, 'x' || g, repeat('y', g % 50) FROM generate_series(1, 300) g;
INSERT INTO pairs SELECT 1000 + g, 'z', NULL FROM generate_series(1, 7) g;
"""


def _records(run: TapRun, stream: str) -> list[dict[str, t.Any]]:
    # The snapshot's consistent point differs from run to run; nothing else may.
    return [{k: v for k, v in r.items() if k != "_sdc_lsn"} for r in run.records(stream)]


def _progress(run: TapRun, stream: str) -> list[t.Any]:
    return [
        s["bookmarks"][stream]["snapshot"]["after"]
        for s in run.states
        if "snapshot" in s.get("bookmarks", {}).get(stream, {})
    ]


def _kinds(run: TapRun) -> list[str]:
    return [m["type"] for m in run.messages]


def _keys(db: TestDb, sql: str) -> list[tuple[int, str]]:
    return [(a, b) for a, b in db.execute(sql)]


def test_three_workers_write_what_one_writes(db: TestDb) -> None:
    db.execute(UNEVEN)
    one = run_tap(db.config(snapshot_chunk_size=37)).check()
    three = run_tap(db.config(snapshot_chunk_size=37, snapshot_workers=3)).check()
    assert _records(three, "public-pairs") == _records(one, "public-pairs")
    assert len(_records(one, "public-pairs")) == 1207
    keys = [(r["a"], r["b"]) for r in three.records("public-pairs")]
    assert keys == _keys(db, "SELECT a, b FROM pairs ORDER BY a, b")
    assert _kinds(three) == _kinds(one)
    assert _progress(three, "public-pairs") == _progress(one, "public-pairs")
    assert len(_progress(one, "public-pairs")) == 1207 // 37 + 1
    assert "snapshot" not in three.final_state["bookmarks"]["public-pairs"]


def test_resumed_with_workers_reads_exactly_the_rest(db: TestDb) -> None:
    db.execute(UNEVEN)
    config = db.config(snapshot_chunk_size=37, snapshot_workers=3)
    full = run_tap(config).check()
    ids = [(r["a"], r["b"]) for r in full.records("public-pairs")]
    interrupted = next(
        s
        for s in full.states
        if s.get("bookmarks", {}).get("public-pairs", {}).get("snapshot", {}).get("after")
        == _progress(full, "public-pairs")[5]
    )
    resumed = run_tap(config, state=interrupted).check()
    assert [(r["a"], r["b"]) for r in resumed.records("public-pairs")] == ids[6 * 37 :]
    assert _progress(resumed, "public-pairs") == _progress(full, "public-pairs")[6:]
    assert "snapshot" not in resumed.final_state["bookmarks"]["public-pairs"]


@pytest.mark.parametrize("rows", [0, 5, 40])  # none, less than a chunk, a multiple of it
def test_small_tables_and_exact_multiples(db: TestDb, rows: int) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute(f"INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, {rows}) g")
    one = run_tap(db.config(snapshot_chunk_size=10)).check()
    four = run_tap(db.config(snapshot_chunk_size=10, snapshot_workers=4)).check()
    assert [r["id"] for r in four.records("public-t")] == list(range(1, rows + 1))
    assert _records(four, "public-t") == _records(one, "public-t")
    assert _progress(four, "public-t") == _progress(one, "public-t")
    assert _kinds(four) == _kinds(one)


def test_row_filter_and_keyless_table_with_workers(db: TestDb) -> None:
    db.execute(UNEVEN)
    db.execute(
        "CREATE TABLE logs (n int, msg text); ALTER TABLE logs REPLICA IDENTITY FULL;"
        "INSERT INTO logs SELECT g, 'm' || g FROM generate_series(1, 95) g"
    )
    if int(db.execute("SHOW server_version_num")[0][0]) < 150000:
        pytest.skip("row filters need PostgreSQL 15")
    config = db.config(
        snapshot_chunk_size=37, snapshot_workers=3, row_filters={"public-pairs": "a <> 0"}
    )
    run = run_tap(config).check()
    keys = [(r["a"], r["b"]) for r in run.records("public-pairs")]
    assert keys == _keys(db, "SELECT a, b FROM pairs WHERE a <> 0 ORDER BY a, b")
    assert sorted(r["n"] for r in run.records("public-logs")) == list(range(1, 96))
