"""Snapshot chunks written as Singer BATCH files, under the SDK's `batch_config` (jsonl).

The SDK's own batch path builds a Python record per row and serializes it again. Here each
snapshot chunk, whose records the server renders as JSON (`chunks.JsonSnapshot`), becomes one
file as is: the chunk's record objects, one per line, then one BATCH message naming the file,
then the STATE that says where a resumed run starts. A STATE therefore never covers rows whose
file is not complete and announced. A file holds exactly the record objects the RECORD path
sends (same properties and values, `_sdc_lsn` and `_sdc_deleted_at` included), without the
message's framing ("version", "time_extracted"), as the SDK's batch files do.

Where BATCH files apply (`batch_files`): the first snapshot of a LOG_BASED stream, a stream with
no table version. A stream with a version (a FULL_TABLE read, a re-snapshot, a TRUNCATE seen)
stays on RECORD lines: a batch file's rows carry no version, and a target that drops the rows of
older versions at ACTIVATE_VERSION would drop them. Changes read from the log also stay RECORD
messages (see docs/targets.md): SDK targets load a BATCH file when its message arrives, before the
records they hold, so the order of a change relative to the changes before it and to STATE would
be lost.
"""

from __future__ import annotations

import gzip
import typing as t
import uuid

from tap_pgcdc import sdk

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BatchConfig
    from singer_sdk.sql import SQLStream

    from tap_pgcdc.output.records import RecordLines

# Fast, not small: the files are read once, by a target on the same network (gzip's default, 9,
# takes several times longer for a few percent less).
GZIP_LEVEL = 1


def batch_config(stream: SQLStream) -> BatchConfig | None:
    """The stream's `batch_config`, or None without one."""
    return stream.get_batch_config(stream.config)


def batch_files(stream: SQLStream, lines: RecordLines) -> BatchFiles | None:
    """Where the stream's snapshot chunks go as BATCH files, or None to write RECORD lines.

    `lines`: the stream's fast RECORD emitter (the SDK's per-record work changes nothing), whose
    selection the files follow.
    """
    config = batch_config(stream)
    if config is None or config.encoding.format != "jsonl":
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
    """Writes each chunk's records to a new file, then its BATCH message (`chunks.Lines`)."""

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
        """Write one chunk's complete lines as a file, then the BATCH message naming it.

        The file is complete (closed, and moved into place by the storage's transaction) before
        the message is written; the caller writes STATE after this returns.
        """
        self.files += 1
        suffix = ".json.gz" if self.gzip else ".json"
        filename = f"{self._name}-{self.files}{suffix}"
        data = text.encode()
        if self.gzip:
            data = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
        storage = self.config.storage
        with storage.open(filename, "wb") as file:
            file.write(data)
        sdk.write_batch(self.stream, self.config.encoding, [storage.get_url(filename)])
