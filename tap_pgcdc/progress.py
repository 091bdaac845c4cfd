"""Progress and lag reporting: what a long run is doing, in periodic log lines.

Pure bookkeeping with an injected clock; the snapshot and the log reader call `tick` with their
counters, and this module decides when a line is due and what it says.
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


@dataclass
class SnapshotProgress:
    """Rows read of a table's estimated size, logged every `interval` seconds."""

    stream: str
    estimate: int
    logger: logging.Logger
    interval: float = DEFAULT_INTERVAL_SECONDS
    clock: Callable[[], float] = time.monotonic
    rows: int = 0
    started: float = field(init=False)
    _last_log: float = field(init=False)
    _last_rows: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.started = self._last_log = self.clock()

    def add(self, rows: int) -> None:
        """Count rows emitted; logs a line when one is due."""
        self.rows += rows
        now = self.clock()
        if now - self._last_log >= self.interval:
            rate = (self.rows - self._last_rows) / max(now - self._last_log, 1e-9)
            self.logger.info("Snapshot %s: %s, %.0f rows/s.", self.stream, self._done(), rate)
            self._last_log = now
            self._last_rows = self.rows

    def _done(self) -> str:
        if self.estimate > 0:
            pct = min(100.0, 100.0 * self.rows / self.estimate)
            return f"{self.rows} of ~{self.estimate} rows ({pct:.0f}%)"
        return f"{self.rows} rows"

    def finish(self) -> None:
        elapsed = max(self.clock() - self.started, 1e-9)
        self.logger.info(
            "Snapshot %s done: %d rows in %.1f s (%.0f rows/s).",
            self.stream,
            self.rows,
            elapsed,
            self.rows / elapsed,
        )


@dataclass
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
