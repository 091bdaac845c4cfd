"""Progress and lag reporting of the log read: what a long read is doing, in periodic log lines.

Pure bookkeeping with an injected clock: the read loop asks `LogProgress.due` whether a line is
due and hands `LogProgress.log` its counters; `LogProgress.summary` is the end-of-read line.
"""

from __future__ import annotations

import logging
import time
import typing as t
from dataclasses import dataclass, field

from tap_pgcdc.pg.lsn import format_lsn

if t.TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_INTERVAL_SECONDS = 30.0


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(slots=True)
class LogProgress:
    """Position, lag behind the server, and rates while reading the slot."""

    logger: logging.Logger
    interval: float = DEFAULT_INTERVAL_SECONDS
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    _last_log: float = field(init=False)
    _last_transactions: int = field(init=False, default=0)
    _last_records: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.started = self._last_log = self.clock()

    def due(self) -> bool:
        """Whether `interval` seconds have passed since the last line (or the start)."""
        return self.clock() - self._last_log >= self.interval

    def log(self, *, position: int, server_lsn: int, transactions: int, records: int) -> None:
        """One progress line; `server_lsn` is the server's current WAL position."""
        now = self.clock()
        span = max(now - self._last_log, 1e-9)
        self.logger.info(
            "Log at %s, %s behind the server: %.0f transactions/s, %.0f records/s "
            "(%d transactions, %d records so far).",
            format_lsn(position),
            human_bytes(max(server_lsn - position, 0)),
            (transactions - self._last_transactions) / span,
            (records - self._last_records) / span,
            transactions,
            records,
        )
        self._last_log = now
        self._last_transactions = transactions
        self._last_records = records

    def summary(
        self, *, start: int, position: int, server_lsn: int, transactions: int, records: int
    ) -> str:
        """The end-of-run line."""
        elapsed = max(self.clock() - self.started, 1e-9)
        return (
            f"read {human_bytes(max(position - start, 0))} of WAL from {format_lsn(start)} to "
            f"{format_lsn(position)} in {elapsed:.1f} s: {transactions} transactions, {records} "
            f"records ({records / elapsed:.0f} records/s); "
            f"{human_bytes(max(server_lsn - position, 0))} behind the server at the end"
        )
