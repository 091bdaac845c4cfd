"""The run report's content and where it goes (docs/monitoring.md), without a server."""

from __future__ import annotations

import json
import typing as t

import pytest

from tap_pgcdc import report
from tap_pgcdc.errors import SlotError

if t.TYPE_CHECKING:
    from pathlib import Path


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def filled() -> report.RunReport:
    clock = Clock()
    run = report.RunReport("slot", "pub", clock=clock)
    counts = run.stream("public-a", "LOG_BASED")
    counts.snapshot_rows, counts.changes, counts.deletes = 3, 5, 2
    run.stream("public-b", "FULL_TABLE").snapshot_rows = 4
    run.start_lsn, run.stop_lsn, run.end_lsn, run.confirmed_lsn = 0x100, 0x180, 0x200, 0x100
    run.bytes_received, run.transactions = 77, 2
    run.reason = report.CAUGHT_UP
    clock.now += 2.5
    return run


def test_a_finished_run_reports_every_count_and_position() -> None:
    content = filled().as_dict()
    assert content["outcome"] == "success"
    assert (content["reason"], content["error"], content["signal"]) == ("caught_up", None, None)
    assert content["duration_seconds"] == 2.5
    assert content["streams"] == {
        "public-a": {
            "method": "LOG_BASED",
            "records": 8,
            "snapshot_rows": 3,
            "changes": 5,
            "deletes": 2,
            "truncates": 0,
        },
        "public-b": {
            "method": "FULL_TABLE",
            "records": 4,
            "snapshot_rows": 4,
            "changes": 0,
            "deletes": 0,
            "truncates": 0,
        },
    }
    assert content["log"] == {
        "start_lsn": "0/100",
        "stop_lsn": "0/180",
        "end_lsn": "0/200",
        "confirmed_lsn": "0/100",
        "wal_bytes": 0x100,
        "bytes_received": 77,
        "transactions": 2,
    }


def test_an_error_is_reported_with_its_class_and_message_on_one_line() -> None:
    run = filled()
    run.failed(SlotError("Slot x is\n  taken. Fix: wait."))
    content = run.as_dict()
    assert (content["outcome"], content["reason"]) == ("failure", "error")
    assert content["error"] == {"class": "SlotError", "message": "Slot x is taken. Fix: wait."}


def test_a_signal_stays_the_reason_when_its_exit_unwinds_the_run() -> None:
    run = filled()
    run.stopped_by("SIGTERM")
    run.failed(SystemExit(143))  # what the signal handler's exit raises through the run
    content = run.as_dict()
    assert (content["outcome"], content["reason"], content["signal"]) == (
        "failure",
        "signal",
        "SIGTERM",
    )
    assert content["error"] is None


def test_the_line_goes_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    filled().write(None)
    out, err = capsys.readouterr()
    assert out == ""  # stdout is the Singer stream
    (line,) = err.splitlines()
    assert json.loads(line)[report.REPORT_KEY]["reason"] == "caught_up"


def test_the_file_collects_one_line_per_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "runs.jsonl"
    filled().write(str(path))
    filled().write(str(path))
    assert [
        json.loads(line)[report.REPORT_KEY]["reason"] for line in path.read_text().splitlines()
    ] == [
        "caught_up",
        "caught_up",
    ]
    assert capsys.readouterr().err == ""


def test_an_unwritable_file_leaves_the_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filled().write(str(tmp_path / "missing" / "runs.jsonl"))
    (line,) = capsys.readouterr().err.splitlines()
    assert report.REPORT_KEY in json.loads(line)
