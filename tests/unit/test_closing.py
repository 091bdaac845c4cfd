"""Which snapshot's last record ends a run's output again (tap_pgcdc/closing.py)."""

from __future__ import annotations

import typing as t

from tap_pgcdc.closing import ClosingRecord
from tap_pgcdc.report import RunReport


class FakeWriter:
    def __init__(self) -> None:
        self.messages: list[t.Any] = []

    def write_message(self, message: t.Any) -> None:
        self.messages.append(message)


class FakeStream:
    """What ClosingRecord uses of a stream: the repeat, and the tap's writer (sdk.py)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.repeated = 0
        self._tap = t.cast("t.Any", type("Tap", (), {"message_writer": FakeWriter()})())

    def repeat_last_snapshot_record(self) -> bool:
        self.repeated += 1
        return True

    @property
    def states(self) -> list[dict[str, t.Any]]:
        return [m.value for m in self._tap.message_writer.messages]


def closing() -> tuple[ClosingRecord, RunReport]:
    run_report = RunReport("slot", "publication")
    return ClosingRecord(run_report), run_report


def test_a_snapshot_that_ends_the_output_is_repeated_once() -> None:
    record, _ = closing()
    stream = FakeStream("public-t")
    record.snapshot_done(t.cast("t.Any", stream), 10)
    record.finish({"bookmarks": {"public-t": {"lsn": "0/10"}}})
    assert stream.repeated == 1
    # The same STATE again after it, even though the SDK's writer would leave it out.
    assert stream.states == [{"bookmarks": {"public-t": {"lsn": "0/10"}}}]


def test_records_from_the_log_after_the_snapshot_need_nothing() -> None:
    record, run_report = closing()
    stream = FakeStream("public-t")
    record.snapshot_done(t.cast("t.Any", stream), 10)
    run_report.stream("public-t", "LOG_BASED").changes = 1
    record.finish({})
    assert (stream.repeated, stream.states) == (0, [])


def test_the_last_snapshot_with_rows_is_the_one_repeated() -> None:
    record, _ = closing()
    first, second = FakeStream("public-a"), FakeStream("public-b")
    record.snapshot_done(t.cast("t.Any", first), 3)
    record.snapshot_done(t.cast("t.Any", second), 2)
    record.snapshot_done(t.cast("t.Any", FakeStream("public-empty")), 0)
    record.finish({})
    assert (first.repeated, second.repeated) == (0, 1)


def test_an_empty_snapshot_after_log_records_forgets_the_earlier_one() -> None:
    record, run_report = closing()
    before = FakeStream("public-a")
    record.snapshot_done(t.cast("t.Any", before), 3)
    run_report.stream("public-a", "LOG_BASED").changes = 2  # the log read, then a re-snapshot
    record.snapshot_done(t.cast("t.Any", FakeStream("public-a")), 0)
    record.finish({})
    assert before.repeated == 0


def test_a_run_without_snapshot_writes_nothing() -> None:
    record, _ = closing()
    record.finish({})  # nothing to repeat, and no stream to write with
