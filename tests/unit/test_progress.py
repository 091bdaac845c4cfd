"""Progress lines: when they are due and what they say (fake clock, captured log)."""

from __future__ import annotations

import logging

import pytest

from tap_pgcdc.replication.progress import LogProgress, human_bytes


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (5 * 1024**3, "5.0 GiB"),
        (2**50, "1024.0 TiB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_log_progress_reports_lag_and_rates(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = LogProgress(logging.getLogger("test.log"), interval=10, clock=clock)
    assert not progress.due()
    clock.now += 10
    assert progress.due()
    with caplog.at_level(logging.INFO, logger="test.log"):
        progress.log(
            position=0x1000000, server_lsn=0x1000000 + 3 * 1024**2, transactions=50, records=2000
        )
    assert caplog.messages == [
        "Log at 0/1000000, 3.0 MiB behind the server: 5 transactions/s, 200 records/s "
        "(50 transactions, 2000 records so far)."
    ]
    clock.now += 10
    summary = progress.summary(
        start=0x1000000 - 2048,
        position=0x1000000,
        server_lsn=0x1000000,
        transactions=60,
        records=2100,
    )
    assert summary == (
        "read 2.0 KiB of WAL from 0/FFF800 to 0/1000000 in 20.0 s: 60 transactions, 2100 records "
        "(105 records/s); 0 B behind the server at the end"
    )
