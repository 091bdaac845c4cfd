"""The one place that reaches into the Singer SDK's private members.

The SDK (0.54) has no public API for a few things a log-based tap must do itself: write a
stream's SCHEMA, RECORD and STATE messages outside the SDK's own sync loop (the log reader writes
records for many streams from one loop), read and set the table version that records carry, and
replace a stream's schema when the table's columns change mid-run. Each function below names
what the public API lacks. Nothing else in the package uses an SDK private (ruff SLF001).
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BaseBatchFileEncoding
    from singer_sdk.helpers.types import Record
    from singer_sdk.io_base import GenericSingerWriter
    from singer_sdk.sql import SQLStream
    from singer_sdk.streams.core import Stream
    from singer_sdk.tap_base import Tap


def write_schema(stream: Stream) -> None:
    """Write the stream's SCHEMA message now (the SDK writes it only at the start of sync())."""
    stream._write_schema_message()  # noqa: SLF001


def write_record(stream: Stream, record: Record) -> None:
    """Write one record through the SDK's full record path (maps, selection, conformance).

    The SDK writes records only for rows its own sync loop yields; changes read from the log
    come from one loop for every stream.
    """
    stream._write_record_message(record)  # noqa: SLF001


def write_state(stream: Stream) -> None:
    """Write the tap's STATE now (the SDK writes it only between the rows it yields)."""
    stream._write_state_message()  # noqa: SLF001


def write_activate_version(stream: Stream, version: int) -> None:
    """Write ACTIVATE_VERSION for `version` (the SDK writes one only for FULL_TABLE syncs)."""
    stream._write_activate_version_message(version)  # noqa: SLF001


def write_batch(stream: Stream, encoding: BaseBatchFileEncoding, manifest: list[str]) -> None:
    """Write a BATCH message for files already written (the SDK writes one only from its loop)."""
    stream._write_batch_message(encoding=encoding, manifest=manifest)  # noqa: SLF001


def table_version(stream: Stream) -> int | None:
    """The version the stream's records carry (the SDK sets it only in FULL_TABLE syncs)."""
    return stream._stream_version  # noqa: SLF001


def set_table_version(stream: Stream, version: int | None) -> None:
    """Set the version the stream's records carry from now on."""
    stream._stream_version = version  # noqa: SLF001


def message_writer(stream: Stream) -> GenericSingerWriter[t.Any, t.Any]:
    """The writer the tap writes messages with (the stream does not expose its tap)."""
    return stream._tap.message_writer  # noqa: SLF001


def replace_schema(stream: SQLStream, schema: dict[str, t.Any]) -> None:
    """Make `schema` the stream's schema for records, maps and SCHEMA messages.

    `Stream.schema` is a cached property read once from the catalog, with no setter; a table
    whose columns changed needs a new one mid-run. The new schema is registered with the
    tap's mapper as the SDK does at start (filtered by the catalog's selection), and the
    stream's cached maps are dropped so that they pick it up.
    """
    stream.__dict__["schema"] = schema
    stream._schema = schema  # noqa: SLF001
    tap = stream._tap  # noqa: SLF001
    tap.mapper.register_raw_stream_schema(
        stream.name, stream.get_selected_schema(), list(stream.primary_keys or [])
    )
    stream._stream_maps = []  # noqa: SLF001


def reset_progress_markers(tap: Tap) -> None:
    """Clear prior runs' progress markers, as the SDK's own sync_all does before it starts."""
    tap._reset_state_progress_markers()  # noqa: SLF001
