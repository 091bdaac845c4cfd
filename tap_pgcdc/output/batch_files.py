"""Snapshot chunks written as Singer BATCH files, under the SDK's `batch_config` (jsonl).

The SDK's own batch path builds a Python record per row and serializes it again. Here each
snapshot chunk, whose records the server renders as JSON (`snapshot.chunks.JsonSnapshot`),
becomes one file as is: the chunk's record objects, one per line, then one BATCH message naming
the file, then the STATE that says where a resumed run starts. A STATE therefore never covers
rows whose file is not complete and announced. A file holds exactly the record objects the
RECORD path sends (same properties and values, `_sdc_lsn` and `_sdc_deleted_at` included),
without the message's framing ("version", "time_extracted"), as the SDK's batch files do.

Where the tap does not write the files itself, records stay RECORD messages: the stream's
`get_batch_config` is None (`stream_batch_config`), so the SDK takes its RECORD path. The SDK's
batch path is never used: it writes records before stream maps, flattening and deselection
apply, and gzips every file whatever `compression` says.

- Not on the fast path (stream maps, flattening, nested selection, a dry-run limit): RECORD.
- A format other than jsonl: RECORD.
- A stream with a table version (a FULL_TABLE read, a re-snapshot, a TRUNCATE seen): RECORD
  lines (`batch_files` returns None). A batch file's rows carry no version, and a target that
  drops the rows of older versions at ACTIVATE_VERSION would drop them.
- Changes read from the log: RECORD (see docs/targets.md). SDK targets load a BATCH file when
  its message arrives, before the records they hold, so a change would lose its order relative
  to the changes before it, and to STATE.
"""

from __future__ import annotations

import contextlib
import gzip
import typing as t
import uuid

from tap_pgcdc import sdk
from tap_pgcdc.errors import ConfigError
from tap_pgcdc.output.records import snapshot_lines

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from singer_sdk.helpers._batch import BatchConfig
    from singer_sdk.sql import SQLStream

    from tap_pgcdc.output.records import RecordLines

# Fast, not small: the files are read once, by a target on the same network (gzip's default, 9,
# takes several times longer for a few percent less).
GZIP_LEVEL = 1

# Streams already told why their snapshot is not written as BATCH files (logged once each).
_told: set[str] = set()


def stream_batch_config(stream: SQLStream, found: BatchConfig | None) -> BatchConfig | None:
    """The stream's `get_batch_config`: `found` (the SDK's), where the tap writes the files.

    None (the SDK's RECORD path) without `batch_config`, or where the tap would not write the
    stream's snapshot chunks as they are (see the module docstring).
    """
    if found is None:
        return None
    why = None
    if found.encoding.format != "jsonl":
        why = f"the encoding format is {found.encoding.format!r} (the tap writes jsonl)"
    elif snapshot_lines(stream) is None:
        why = (
            "the SDK's record path is in effect "
            "(stream maps, flattening, nested selection, a dry-run limit)"
        )
    if why is None:
        return found
    if stream.name not in _told:
        _told.add(stream.name)
        stream.logger.warning(
            "batch_config is ignored for %s: %s; its records are RECORD messages.",
            stream.name,
            why,
        )
    return None


def batch_files(stream: SQLStream, lines: RecordLines) -> BatchFiles | None:
    """Where the stream's snapshot chunks go as BATCH files, or None to write RECORD lines.

    `lines`: the stream's fast RECORD emitter, whose selection the files follow.
    """
    config = stream.get_batch_config(stream.config)
    if config is None:
        return None
    if sdk.table_version(stream) is not None:
        stream.logger.info(
            "Records of %s are RECORD messages: the stream has a table version, which batch "
            "files do not carry.",
            stream.name,
        )
        return None
    return BatchFiles(stream, config, lines)


class BatchFiles:
    """Writes a chunk's records into a new file; before each STATE, closes and announces it.

    A `chunks.Lines`: the snapshot writes each chunk's lines (in one piece or several), then
    the STATE that resumes after it, through `covering(write_state)`, which first completes the
    open file (closed, and moved into place by the storage's transaction) and writes the BATCH
    message naming it. A STATE thus follows the files of every row it claims.
    """

    head = ""  # a file line is the record object alone

    def __init__(self, stream: SQLStream, config: BatchConfig, lines: RecordLines) -> None:
        self.stream = stream
        self.config = config
        self._lines = lines
        self.gzip = config.encoding.compression == "gzip"
        storage = config.storage
        # One name per run and stream, numbered per file: a resumed or concurrent run never
        # overwrites a file a target may not have read yet.
        self._name = f"{storage.prefix or ''}{stream.tap_name}--{stream.name}-{uuid.uuid4()}"
        self.files = 0
        self._filename = ""
        self._file: t.IO[bytes] | None = None  # the file being written, None between files
        self._closing = contextlib.ExitStack()
        stream.logger.info(
            "Snapshot records of %s are written to BATCH files in %s.", stream.name, storage.root
        )

    def selected(self, name: str) -> bool:
        """Whether the property is in the output, as on the RECORD path."""
        return self._lines.selected(name)

    def tail(self) -> str:
        """What follows a record object in a file: its line's end."""
        return "\n"

    def write(self, text: str) -> None:
        """Append complete lines to the open file (a new one after each STATE)."""
        try:
            if self._file is None:
                self._file = self._open()
            self._file.write(text.encode())
        except OSError as exc:
            raise self._error(exc) from exc

    def covering(self, write_state: Callable[[], None]) -> Callable[[], None]:
        """`write_state`, preceded by the completion and BATCH message of the open file."""

        def complete_then_write_state() -> None:
            self.complete()
            write_state()

        return complete_then_write_state

    def complete(self) -> None:
        """Close the open file, if any, and write the BATCH message naming it."""
        if self._file is None:
            return
        self._file = None
        try:
            self._closing.close()  # gzip's end, the file, then the storage's commit
        except OSError as exc:
            raise self._error(exc) from exc
        url = self.config.storage.get_url(self._filename)
        sdk.write_batch(self.stream, self.config.encoding, [url])

    def _open(self) -> t.IO[bytes]:
        self.files += 1
        suffix = ".json.gz" if self.gzip else ".json"
        self._filename = f"{self._name}-{self.files}{suffix}"
        with contextlib.ExitStack() as stack:  # closed here only if opening fails
            file: t.IO[bytes] = stack.enter_context(self.config.storage.open(self._filename, "wb"))
            if self.gzip:
                file = t.cast(
                    "t.IO[bytes]",
                    stack.enter_context(
                        gzip.GzipFile(fileobj=file, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
                    ),
                )
            self._closing = stack.pop_all()
            return file

    def _error(self, exc: OSError) -> ConfigError:
        # Nothing claims these rows yet: the last STATE is where the next run resumes.
        msg = (
            f"Cannot write the BATCH file {self._filename} of {self.stream.name} in "
            f"{self.config.storage.root}: {exc}. Fix: set batch_config.storage.root to a "
            "writable directory (file:///path), or unset batch_config to send RECORD messages."
        )
        return ConfigError(msg)
