"""The end of a run's output: the last STATE must be one that a batching target stores.

Some targets (target-duckdb, pipelinewise targets) emit a STATE only when they flush a batch of
records, and at a flush store the STATE received *before* the record that filled the batch. When
the last record of a run is the last row of a snapshot and it fills a batch exactly, the STATE
that completes the snapshot comes after it with nothing left to flush: the target keeps the
STATE before it, which still holds the snapshot's resume marker, and every later run reads the
snapshot's last chunk again until a change arrives.

A tap cannot flush a target; it can only send one more record. So when a run's last records
are the end of a snapshot (no record was written after the STATE that completed it), that
snapshot's last record is written once more after it, followed by the same STATE: an upsert
of the same row with the same values and `_sdc_lsn`, which changes nothing in any target, and
leaves the target a record to flush at the end of input, after the completing STATE. A keyless
stream is left alone (there a copy would be a second row), and so is a snapshot sent as BATCH
files or whose last record is large (see `JsonSnapshot.last_line`).
"""

from __future__ import annotations

import copy
import typing as t

from singer_sdk.singerlib.messages import StateMessage

from tap_pgcdc import sdk

if t.TYPE_CHECKING:
    from tap_pgcdc.report import RunReport
    from tap_pgcdc.streams import PgCdcStream

__all__ = ["ClosingRecord"]


class ClosingRecord:
    """Which snapshot's last record, if any, ends the run's output."""

    def __init__(self, run_report: RunReport) -> None:
        self._report = run_report  # its counts of the log's records, once the read ends
        self._snapshot_rows = 0  # records of the run's snapshots and reads in full
        self._stream: PgCdcStream | None = None
        self._written = -1  # records written in the run when that snapshot completed

    def snapshot_done(self, stream: PgCdcStream, rows: int) -> None:
        """A snapshot (or a read in full) of `stream` completed after `rows` records."""
        self._snapshot_rows += rows
        if rows:
            self._stream, self._written = stream, self.written()
        elif self.written() != self._written:
            self._stream = None  # an earlier snapshot's record no longer ends the output

    def written(self) -> int:
        """Records written in the run so far (the log's are counted once its read ends)."""
        changes = sum(counts.changes for counts in self._report.streams.values())
        return self._snapshot_rows + changes

    def finish(self, state: dict[str, t.Any]) -> None:
        """At the end of a run: write the record and `state` again if the output needs them."""
        stream = self._stream
        if stream is None or self.written() != self._written:
            return  # no snapshot, or records came after it (the log's)
        if stream.repeat_last_snapshot_record():
            # Not through the SDK's state writer, which leaves out a STATE equal to the last.
            message = StateMessage(value=copy.deepcopy(state))
            sdk.message_writer(stream).write_message(message)
