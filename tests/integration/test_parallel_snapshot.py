"""Parallel snapshot readers (snapshot_workers) against a real server: the one-reader output."""

from __future__ import annotations

import signal
import time
import typing as t

import pytest

from tests.integration.test_batch import EDGE, assert_same, batch, file_records
from tests.integration.test_failures import bookmarks
from tests.integration.test_fast_output import create_edge_table, insert_edge_rows
from tests.integration.test_kill_campaign import KillableRun
from tests.memory_target import MemoryTarget
from tests.tap_runner import TapRun, discover, run_tap, select_streams

if t.TYPE_CHECKING:
    from pathlib import Path

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
    """The messages' types, a run of STATEs as one: the log read writes one more STATE when the
    server's WAL moved meanwhile (its own running-transactions records), whatever the readers."""
    kinds: list[str] = []
    for message in run.messages:
        if not (message["type"] == "STATE" and kinds and kinds[-1] == "STATE"):
            kinds.append(message["type"])
    return kinds


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


def _readers_in_the_exported_snapshot(db: TestDb, run: KillableRun) -> int:
    """Sessions that ran a chunk query in the snapshot the walsender exported (tap stopped)."""
    seen = 0
    for _ in range(100):  # each worker queries at once; a few tries in case one was not yet
        run.kill(signal.SIGSTOP)
        rows = db.execute(
            "SELECT count(*) FROM pg_stat_activity AS c JOIN pg_stat_activity AS w"
            " ON w.backend_type = 'walsender' AND w.datname = c.datname"
            " AND w.query LIKE 'CREATE_REPLICATION_SLOT%%EXPORT_SNAPSHOT'"
            " AND c.backend_xmin = w.backend_xmin"
            " WHERE c.datname = current_database() AND c.backend_type = 'client backend'"
            " AND c.query LIKE 'SELECT ''{%%' AND c.state IN ('active', 'idle in transaction')"
        )
        seen = int(rows[0][0])
        if seen >= 3:
            return seen
        run.kill(signal.SIGCONT)
        time.sleep(0.02)
    return seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_parallel_snapshot_resumes_without_a_gap(db: TestDb, sig: int) -> None:
    db.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 30000) g"
    )
    config = db.config(snapshot_chunk_size=50, snapshot_workers=3)
    run = KillableRun(config, None)
    assert run.wait_for(lambda: len(run.stdout) > 500, 60)
    if sig == signal.SIGKILL:  # held still first: the server shows its 3 readers
        assert _readers_in_the_exported_snapshot(db, run) == 3
    run.kill(sig)
    code = run.finish()
    assert code == (128 + signal.SIGINT if sig == signal.SIGINT else -signal.SIGKILL)
    stored = run.stored_messages()
    after = bookmarks(run.stored_state())["public-t"]["snapshot"]["after"]
    # What the target stored is the key-ordered prefix up to the resume marker: no gap.
    written = [m["record"]["id"] for m in stored if m["type"] == "RECORD"]
    assert written == list(range(1, int(after[0]) + 1))
    assert int(after[0]) < 30000
    target = MemoryTarget()
    target.apply(stored)
    resumed = run_tap(config, state=target.state).check()
    assert [r["id"] for r in resumed.records("public-t")] == list(range(int(after[0]) + 1, 30001))
    target.apply(resumed.messages)
    assert len(target.rows("public-t")) == 30000


def test_edge_types_as_batch_files_with_workers(db: TestDb, tmp_path: Path) -> None:
    """Every edge type, a composite key with text; as BATCH files: what one reader writes."""
    create_edge_table(db)
    insert_edge_rows(db, 100)
    catalog = select_streams(discover(db.config()), {EDGE})
    one = run_tap(db.config(snapshot_chunk_size=4), catalog=catalog).check()
    three = run_tap(db.config(snapshot_chunk_size=4, snapshot_workers=3), catalog=catalog).check()
    assert repr(_records(three, EDGE)) == repr(_records(one, EDGE))
    config = db.config(
        snapshot_chunk_size=4, snapshot_workers=3, batch_config=batch(tmp_path, "none")
    )
    files = run_tap(config, catalog=catalog).check()
    assert_same(file_records(files)[0], one.records(EDGE))
    assert _progress(files, EDGE) == _progress(one, EDGE)
