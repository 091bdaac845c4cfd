"""The run report: one JSON line at the end of every run, whose figures are what the server did.

Each run is the real `tap-pgcdc` command against the session's server, with the state carried
run to run; the report's counts are compared with the rows inserted, updated and deleted, its
positions with the slot's, and a failing run (a slot of another plugin, a signal) reports its end.
"""

from __future__ import annotations

import json
import signal
import typing as t
from pathlib import Path

from tap_pgcdc.pg.lsn import parse_lsn
from tests.conftest import TestDb
from tests.integration.test_kill_campaign import KillableRun
from tests.memory_target import MemoryTarget
from tests.tap_runner import TapRun, run_tap

KEY = "tap_pgcdc_run_report"
STREAM = "public-items"


def reports(stderr: str) -> list[dict[str, t.Any]]:
    """Every run report line in a tap's stderr."""
    found = []
    for line in stderr.splitlines():
        if line.startswith('{"' + KEY + '"'):
            found.append(json.loads(line)[KEY])
    return found


def the_report(run: TapRun) -> dict[str, t.Any]:
    found = reports(run.stderr)
    assert len(found) == 1, run.stderr[-3000:]
    return found[0]


def lsn(text: str | None) -> int:
    assert text is not None
    return parse_lsn(text)


def slot_row(db: TestDb, slot: str) -> tuple[int, int]:
    (row,) = db.execute(
        "SELECT confirmed_flush_lsn::text, restart_lsn::text FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (slot,),
    )
    return parse_lsn(row[0]), parse_lsn(row[1])


def test_report_counts_positions_and_reason(db: TestDb, tmp_path: Path) -> None:
    db.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 7) g")
    config = db.config()
    target = MemoryTarget()

    first = run_tap(config, state=target.state).check()
    target.apply(first.messages)
    report = the_report(first)
    assert (report["outcome"], report["reason"], report["error"]) == ("success", "caught_up", None)
    assert report["streams"][STREAM] == {
        "method": "LOG_BASED",
        "records": 7,
        "snapshot_rows": 7,
        "changes": 0,
        "deletes": 0,
        "truncates": 0,
    }
    assert report["slot_before"] is None  # the run created the slot
    assert report["slot_after"]["confirmed_flush_lsn"] is not None

    # What the server does between the runs: 5 inserts, 3 updates, 2 deletes, in 3 transactions.
    db.execute("INSERT INTO items SELECT g, 'n' || g FROM generate_series(8, 12) g")
    db.execute("UPDATE items SET v = 'u' WHERE id IN (1, 2, 3)")
    db.execute("DELETE FROM items WHERE id IN (4, 5)")
    confirmed_before, _ = slot_row(db, config["slot_name"])
    path = tmp_path / "reports.jsonl"

    second = run_tap({**config, "run_report_path": str(path)}, state=target.state).check()
    target.apply(second.messages)
    assert reports(second.stderr) == []  # the file takes it instead
    (line,) = path.read_text().splitlines()
    report = json.loads(line)[KEY]
    assert (report["outcome"], report["reason"]) == ("success", "caught_up")
    assert report["streams"][STREAM] == {
        "method": "LOG_BASED",
        "records": 10,
        "snapshot_rows": 0,
        "changes": 10,
        "deletes": 2,
        "truncates": 0,
    }
    assert len(second.records(STREAM)) == 10
    log = report["log"]
    assert log["transactions"] >= 3
    # The run confirms the input state (what the target stored), reads from there past the stop.
    assert lsn(log["confirmed_lsn"]) == lsn(log["start_lsn"])
    assert lsn(log["start_lsn"]) < lsn(log["stop_lsn"]) <= lsn(log["end_lsn"])
    assert log["wal_bytes"] == lsn(log["end_lsn"]) - lsn(log["start_lsn"])
    assert log["bytes_received"] > 0
    before, after = report["slot_before"], report["slot_after"]
    assert lsn(before["confirmed_flush_lsn"]) == confirmed_before
    assert lsn(after["confirmed_flush_lsn"]) == lsn(log["confirmed_lsn"])
    assert lsn(before["wal_lsn"]) <= lsn(after["wal_lsn"])
    assert before["lag_bytes"] == lsn(before["wal_lsn"]) - confirmed_before > 0
    assert after["retained_wal_bytes"] >= after["lag_bytes"] >= 0
    assert report["duration_seconds"] > 0

    # The third run, with nothing new, appends its line to the same file.
    third = run_tap({**config, "run_report_path": str(path)}, state=target.state).check()
    target.apply(third.messages)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    report = json.loads(lines[1])[KEY]
    assert report["streams"][STREAM]["records"] == 0
    # The slot is now confirmed where the second run ended: what its target stored.
    assert lsn(report["slot_before"]["confirmed_flush_lsn"]) == lsn(log["confirmed_lsn"])
    assert lsn(report["log"]["confirmed_lsn"]) >= lsn(log["stop_lsn"])
    rows = [{"id": i, "v": v} for i, v in db.execute("SELECT id, v FROM items ORDER BY id")]
    assert target.rows(STREAM) == rows


def test_failing_run_reports_its_error(db: TestDb) -> None:
    db.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
    config = db.config()
    db.execute(
        "SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (config["slot_name"],)
    )
    run = run_tap(config)
    assert run.returncode == 1
    report = the_report(run)
    assert (report["outcome"], report["reason"], report["signal"]) == ("failure", "error", None)
    assert report["error"]["class"] == "SlotError"
    assert "test_decoding" in report["error"]["message"]
    assert "Fix:" in report["error"]["message"]
    assert report["streams"][STREAM]["records"] == 0
    assert report["log"]["start_lsn"] is None  # the log was never read


def test_signal_ends_the_run_with_a_report(db: TestDb) -> None:
    db.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g")
    run = KillableRun(db.config(snapshot_chunk_size=1000))  # the chunk size above
    assert run.wait_for(lambda: len(run.stdout) > 5000, timeout=60)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 128 + signal.SIGTERM
    report = the_report(TapRun(0, [], "".join(run.stderr)))
    assert (report["outcome"], report["reason"], report["signal"]) == (
        "failure",
        "signal",
        "SIGTERM",
    )
    assert report["error"] is None
    records = sum(1 for line in run.stdout if line.startswith('{"type":"RECORD"'))
    # The chunks written in full; the signal may have cut the next one short in stdout.
    counted = report["streams"][STREAM]["snapshot_rows"]
    # A chunk can be in stdout in full and not yet counted (the signal came between the two).
    assert 0 < counted <= records <= counted + 1000, (counted, records)
