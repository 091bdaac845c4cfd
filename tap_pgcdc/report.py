"""The run report: one JSON line at the end of every run, for monitoring (docs/monitoring.md).

The run fills a `RunReport` as it goes (counters it already keeps, read once at the end: nothing
is counted per row here); the tap writes it once the run ends, however it ends: caught up, out
of time, an error, a signal. The line is `{"tap_pgcdc_run_report": {...}}` on stderr, or the
same line appended to the file named by `run_report_path`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import sys
import time
import typing as t
from dataclasses import dataclass, field

import psycopg2

from tap_pgcdc.pg import wal
from tap_pgcdc.pg.lsn import format_lsn
from tap_pgcdc.replication.slot import get_slot

if t.TYPE_CHECKING:
    import psycopg2.extensions

    from tap_pgcdc.replication.reader import ReadSummary

REPORT_KEY = "tap_pgcdc_run_report"
REPORT_VERSION = 1

# Why a run ended (`reason`).
CAUGHT_UP = "caught_up"  # the log read passed the WAL position flushed when the run started
OUT_OF_TIME = "max_run_seconds"  # the log read stopped at max_run_seconds
NO_LOG_READ = "completed"  # no LOG_BASED stream: the FULL_TABLE reads are done
NO_STREAMS = "no_streams"  # nothing selected
ERROR = "error"
SIGNAL = "signal"

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamCounts:
    """What one stream sent in this run."""

    method: str  # LOG_BASED or FULL_TABLE
    snapshot_rows: int = 0  # records of a snapshot or a read in full
    changes: int = 0  # records from the log, deletions included
    deletes: int = 0  # records from the log that are deletions (_sdc_deleted_at set)
    truncates: int = 0  # TRUNCATEs read from the log (each an ACTIVATE_VERSION)

    def as_dict(self) -> dict[str, t.Any]:
        """The stream's entry in the report."""
        return {
            "method": self.method,
            "records": self.snapshot_rows + self.changes,
            "snapshot_rows": self.snapshot_rows,
            "changes": self.changes,
            "deletes": self.deletes,
            "truncates": self.truncates,
        }


def slot_sample(conn: psycopg2.extensions.connection, slot_name: str) -> dict[str, t.Any] | None:
    """The slot's positions against the server's WAL position, now (None: no such slot).

    `lag_bytes`: WAL written since the slot's confirmed position (what a next run would read);
    `retained_wal_bytes`: WAL the server keeps for the slot (from its restart_lsn).
    """
    slot = get_slot(conn, slot_name)
    if slot is None:
        return None
    current = wal.current_wal_lsn(conn)
    confirmed, restart = slot.confirmed_flush_lsn, slot.restart_lsn
    return {
        "wal_lsn": format_lsn(current),
        "confirmed_flush_lsn": None if confirmed is None else format_lsn(confirmed),
        "restart_lsn": None if restart is None else format_lsn(restart),
        "lag_bytes": None if confirmed is None else max(current - confirmed, 0),
        "retained_wal_bytes": None if restart is None else max(current - restart, 0),
        "wal_status": slot.wal_status,
    }


@dataclass(slots=True)
class RunReport:
    """What one run did, filled as it goes; `as_dict` is the report's content."""

    slot_name: str
    publication_name: str
    clock: t.Callable[[], float] = time.monotonic
    started: float = field(init=False)
    started_at: str = field(init=False)
    streams: dict[str, StreamCounts] = field(default_factory=dict)
    slot_before: dict[str, t.Any] | None = None
    slot_after: dict[str, t.Any] | None = None
    start_lsn: int | None = None  # where the log read started (the lowest bookmark)
    stop_lsn: int | None = None  # the WAL flush position the read had to pass
    end_lsn: int | None = None  # the last transaction boundary the read reached
    confirmed_lsn: int | None = None  # what this run confirmed to the slot (the input state)
    bytes_received: int = 0  # replication protocol bytes the slot sent
    transactions: int = 0
    reason: str = ""
    error: dict[str, str] | None = None
    signal: str | None = None

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.started_at = _now()

    def stream(self, name: str, method: str) -> StreamCounts:
        """The counts of stream `name`, created on first use."""
        counts = self.streams.get(name)
        if counts is None:
            counts = self.streams[name] = StreamCounts(method)
        return counts

    def sample_after(
        self,
        control: psycopg2.extensions.connection,
        streams: t.Sequence[t.Any],
        *,
        reads_log: bool,
    ) -> None:
        """The streams' snapshot counts and the slot's positions at the end of a run.

        Best effort: a broken connection, or a signal that asks for a prompt exit, leaves the
        slot's sample out. `streams` are the run's (each with `name`, `replication_method`
        and `snapshot_rows`); `reads_log`: whether the run reads the slot at all.
        """
        for stream in streams:
            counts = self.stream(stream.name, stream.replication_method)
            counts.snapshot_rows = stream.snapshot_rows
        if self.reason == SIGNAL or not reads_log:
            return
        with contextlib.suppress(psycopg2.Error):
            self.slot_after = slot_sample(control, self.slot_name)

    def read_range(self, start: int, stop_lsn: int, confirm_lsn: int) -> None:
        """Where the log read starts and must end, and what it confirms (0: nothing)."""
        self.start_lsn, self.stop_lsn = start, stop_lsn
        self.confirmed_lsn = confirm_lsn or None

    def read_summary(self, summary: ReadSummary, bytes_received: int) -> None:
        """The read's counters, also when it stopped on an error or a signal."""
        self.end_lsn = summary.position
        self.transactions = summary.transactions
        self.bytes_received = bytes_received
        for name, changes in summary.streams.items():
            counts = self.stream(name, "LOG_BASED")
            counts.changes, counts.deletes = changes.changes, changes.deletes
            counts.truncates = changes.truncates

    def failed(self, exc: BaseException) -> None:
        """The run ends with `exc` (a signal's exit is recorded by `stopped_by` first)."""
        if self.reason == SIGNAL:
            return
        self.reason = ERROR
        self.error = {"class": type(exc).__name__, "message": " ".join(str(exc).split())}

    def stopped_by(self, signal_name: str) -> None:
        """The run ends because of a signal (SIGTERM, SIGINT)."""
        self.reason = SIGNAL
        self.signal = signal_name

    def as_dict(self) -> dict[str, t.Any]:
        """The report's content (see docs/monitoring.md for each field)."""

        def lsn(value: int | None) -> str | None:
            return None if value is None else format_lsn(value)

        read = self.start_lsn is not None and self.end_lsn is not None
        return {
            "version": REPORT_VERSION,
            "outcome": "success"
            if self.reason in (CAUGHT_UP, OUT_OF_TIME, NO_LOG_READ, NO_STREAMS)
            else "failure",
            "reason": self.reason,
            "error": self.error,
            "signal": self.signal,
            "started_at": self.started_at,
            "ended_at": _now(),
            "duration_seconds": round(self.clock() - self.started, 3),
            "slot_name": self.slot_name,
            "publication_name": self.publication_name,
            "streams": {name: counts.as_dict() for name, counts in sorted(self.streams.items())},
            "log": {
                "start_lsn": lsn(self.start_lsn),
                "stop_lsn": lsn(self.stop_lsn),
                "end_lsn": lsn(self.end_lsn),
                "confirmed_lsn": lsn(self.confirmed_lsn),
                "wal_bytes": (
                    max(t.cast("int", self.end_lsn) - t.cast("int", self.start_lsn), 0)
                    if read
                    else 0
                ),
                "bytes_received": self.bytes_received,
                "transactions": self.transactions,
            },
            "slot_before": self.slot_before,
            "slot_after": self.slot_after,
        }

    def write(self, path: str | None) -> None:
        """Write the report line to stderr, or append it to the file at `path`."""
        line = json.dumps({REPORT_KEY: self.as_dict()}, separators=(",", ":")) + "\n"
        if path is None:
            sys.stderr.write(line)
            sys.stderr.flush()
            return
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError as exc:
            # The run's own outcome matters more than its report: say so, and keep the line.
            logger.warning("Cannot write the run report to %s (%s); it follows here.", path, exc)
            sys.stderr.write(line)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
