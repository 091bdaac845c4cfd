"""The `pg_logical_messages` stream: logical decoding messages, opt-in (the `messages` setting).

PostgreSQL 14+'s pgoutput delivers the messages applications write with
`pg_logical_emit_message()` when asked to (its `messages` option). The tap asks only when the
setting lists prefixes and the stream is selected; discovery offers the stream only when the
setting is on. The records' shape is `tap_pgcdc.output.messages`; the read loop skips what a
bookmark already covers (`replication.reader.ReadLoop._message`).

The stream has no table and no snapshot: its bookmark (`lsn`, as a table stream's) starts where
the slot stands when the stream is first read, and moves with the other streams' at
transaction boundaries. Messages written before that, or while the slot was lost, are not in
any log the tap can read: a stream that lost its position starts again at the new slot, with a
warning that says so.
"""

from __future__ import annotations

import typing as t

from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.singerlib import CatalogEntry, Metadata, MetadataMapping, Schema
from singer_sdk.streams.core import Stream

from tap_pgcdc import recovery, sdk
from tap_pgcdc.errors import ServerConfigError
from tap_pgcdc.output.messages import (
    MESSAGES_KEY,
    MESSAGES_SCHEMA,
    MESSAGES_STREAM,
    MessageTarget,
    prefix_filter,
)
from tap_pgcdc.pg.lsn import format_lsn, parse_lsn
from tap_pgcdc.replication.server import MESSAGES_VERSION, version_text

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Collection, Iterable, Mapping

    from singer_sdk.helpers.types import Context, Record
    from singer_sdk.tap_base import Tap

    from tap_pgcdc.replication.slot import SlotInfo
    from tap_pgcdc.settings import Settings

LOG_BASED = "LOG_BASED"


class MessagesStream(Stream):
    """The logical decoding messages of the database (records written by the log read)."""

    name = MESSAGES_STREAM
    # The records are built JSON-ready (output/messages.py); no conformance pass needed.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: Tap) -> None:
        """The stream of `tap`, with its fixed schema and key."""
        super().__init__(tap=tap, schema=MESSAGES_SCHEMA, name=MESSAGES_STREAM)
        self.primary_keys = list(MESSAGES_KEY)
        self.forced_replication_method = LOG_BASED

    @property
    def primary_keys(self) -> t.Sequence[str]:
        """Always the message's LSN, whatever a catalog says: replays upsert by it."""
        return list(MESSAGES_KEY)

    @primary_keys.setter
    def primary_keys(self, new_value: t.Sequence[str]) -> None:
        del new_value  # the key is fixed

    @property
    def replication_method(self) -> str:
        """Always LOG_BASED: the messages exist only in the log."""
        return LOG_BASED

    def get_records(self, context: Context | None) -> t.Iterable[Record]:
        """Nothing: the records are written by the run's log read (run.py), not the SDK's loop."""
        del context
        return iter(())

    @property
    def log_position(self) -> int | None:
        """The stream's bookmark as an int (None: the stream was never read)."""
        text = self.stream_state.get("lsn")
        return None if text is None else parse_lsn(text)

    def set_log_position(self, lsn: int) -> None:
        """Move the bookmark to `lsn` (stored as "X/Y", as a table stream's)."""
        self.stream_state["lsn"] = format_lsn(lsn)

    def forget_position(self) -> None:
        """Drop the bookmark (its slot was lost): the stream starts again at the new slot."""
        self.stream_state.pop("lsn", None)

    def write_record(self, record: dict[str, t.Any]) -> None:
        """Write one record through the SDK's record path (maps, property selection)."""
        sdk.write_record(self, record)

    def write_schema(self) -> None:
        """Write the stream's SCHEMA message now."""
        sdk.write_schema(self)


def catalog_entries(settings: Settings, server_version: int) -> list[dict[str, t.Any]]:
    """Discovery's entry for the stream: none unless the `messages` setting is on.

    Raises:
        ServerConfigError: The setting is on and the server is older than PostgreSQL 14.
    """
    if not settings.messages:
        return []
    if server_version < MESSAGES_VERSION:
        msg = (
            f"messages = {list(settings.messages)!r} needs PostgreSQL "
            f"{version_text(MESSAGES_VERSION)} or later (pgoutput's messages option), and this "
            f"server is {version_text(server_version)}. Fix: remove the setting (meltano config "
            "unset tap-pgcdc messages), or upgrade the server to PostgreSQL 14+."
        )
        raise ServerConfigError(msg)
    metadata = MetadataMapping.get_standard_metadata(
        schema=MESSAGES_SCHEMA,
        key_properties=list(MESSAGES_KEY),
        replication_method=LOG_BASED,
        selected_by_default=True,  # the setting says the user wants them
    )
    metadata[("properties", "lsn")].inclusion = Metadata.InclusionType.AUTOMATIC
    entry = CatalogEntry(
        tap_stream_id=MESSAGES_STREAM,
        stream=MESSAGES_STREAM,
        key_properties=list(MESSAGES_KEY),
        schema=Schema.from_dict(MESSAGES_SCHEMA),
        replication_method=LOG_BASED,
        metadata=metadata,
    ).to_dict()
    for item in entry["metadata"]:
        if item["breadcrumb"] == []:
            item["metadata"]["replication-method"] = LOG_BASED
    return [entry]


def active(
    selected: Iterable[Stream], settings: Settings, logger: logging.Logger
) -> MessagesStream | None:
    """The messages stream if this run reads it: selected, and the setting lists prefixes.

    A catalog that selects it while the setting is empty gets a warning: the option stays off,
    and the bookmark stays where it is.
    """
    stream = next((s for s in selected if isinstance(s, MessagesStream)), None)
    if stream is not None and not settings.messages:
        logger.warning(
            "Stream %s is selected but the messages setting lists no prefix: not reading "
            "logical decoding messages. Fix: set messages (e.g. '[\"*\"]' for all), or "
            "deselect the stream.",
            MESSAGES_STREAM,
        )
        return None
    return stream


class _Stream(t.Protocol):
    @property
    def is_log_based(self) -> bool: ...


def reads(streams: Iterable[_Stream], stream: MessagesStream | None) -> bool:
    """Whether the run reads the slot: a LOG_BASED table stream, or the messages stream."""
    return stream is not None or any(s.is_log_based for s in streams)


def with_position(
    positions: Mapping[str, int | None], stream: MessagesStream | None
) -> dict[str, int | None]:
    """The table streams' bookmarks, and the messages stream's if it is read."""
    joined = dict(positions)
    if stream is not None:
        joined[stream.name] = stream.log_position
    return joined


def forget_if_lost(
    stream: MessagesStream | None, lost: Collection[str], logger: logging.Logger
) -> None:
    """A recovery found the stream's position lost (slot dropped or invalidated): start over."""
    if stream is None or stream.name not in lost:
        return
    logger.warning(
        "The logical decoding messages written since %s are lost with the slot; stream %s "
        "starts again at the slot's position.",
        format_lsn(stream.log_position or 0),
        stream.name,
    )
    stream.forget_position()


def confirmable(
    slot: SlotInfo, positions: Mapping[str, int | None], stream: MessagesStream | None
) -> int:
    """The one position the run may confirm (`recovery.confirmable_position`), the messages
    stream's input bookmark counted; then a messages stream read for the first time gets its
    bookmark: where the slot stands, as nothing earlier is in the slot."""
    confirm = recovery.confirmable_position(
        slot.name, slot.confirmed_flush_lsn, with_position(positions, stream)
    )
    if stream is not None and stream.log_position is None:
        stream.set_log_position(slot.confirmed_flush_lsn or 0)
    return confirm


def target(stream: MessagesStream | None, settings: Settings) -> MessageTarget | None:
    """The read loop's messages sink (None: not read), keeping the prefixes the setting lists.

    Its SCHEMA is written first, as each table stream's is before the log read.
    """
    if stream is None:
        return None
    stream.write_schema()
    return MessageTarget(stream=stream, keep=prefix_filter(settings.messages))
