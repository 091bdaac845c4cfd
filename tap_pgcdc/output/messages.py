"""Logical decoding messages as records: the `pg_logical_messages` stream's schema and records.

An application writes a message with `pg_logical_emit_message(transactional, prefix, content)`;
with pgoutput's `messages` option on, the log delivers it (replication/messages.py's
`LogicalDecodingMessage`). A transactional message arrives inside its transaction, between the
transaction's row changes and in their order, only if the transaction commits; a
non-transactional one arrives as soon as it is decoded, outside any transaction, even if the
transaction that wrote it rolls back.

`MessageTarget` implements the read loop's `replication.sink.MessageSink`: it keeps the messages
whose prefix the `messages` setting lists and writes each as one record, keyed by the message's
own LSN (unique: every message is a WAL record of its own), so that a replay from an older
bookmark upserts the same records again.
"""

from __future__ import annotations

import base64
import typing as t
from dataclasses import dataclass

from tap_pgcdc.output.fields import SDC_LSN
from tap_pgcdc.replication.messages import MESSAGE_FLAG_TRANSACTIONAL

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from tap_pgcdc.replication.messages import Begin, LogicalDecodingMessage

MESSAGES_STREAM = "pg_logical_messages"
"""The stream's name and tap_stream_id. Table streams are named `<schema>-<table>`, always with
a hyphen (`pg.catalog.TableInfo.stream_name`), so a name without one cannot be a table's."""

MESSAGES_KEY = ("lsn",)
"""The key: the message's LSN, unique to it (every message is a WAL record of its own)."""

MESSAGES_SCHEMA: dict[str, t.Any] = {
    "type": "object",
    "properties": {
        "lsn": {"type": ["integer"]},
        "transactional": {"type": ["boolean"]},
        "prefix": {"type": ["string"]},
        "content": {"type": ["string", "null"]},
        "content_base64": {"type": ["string", "null"], "contentEncoding": "base64"},
        "commit_lsn": {"type": ["integer", "null"]},
        "commit_time": {"type": ["string", "null"], "format": "date-time"},
        "xid": {"type": ["integer", "null"]},
        SDC_LSN: {"type": ["integer", "null"]},
    },
}
"""What a message record holds (README, "Logical decoding messages"):

- `lsn`: the message's own WAL position (the key).
- `transactional`: emitted with `transactional => true`.
- `prefix`: the prefix it was emitted with.
- `content`: the payload as text when it is valid UTF-8 without NUL characters (many targets
  cannot store a NUL in text); otherwise null, and `content_base64` carries the bytes.
- `commit_lsn`, `commit_time`, `xid`: its transaction's commit LSN, commit time and id; null
  for a non-transactional message, which belongs to no transaction that committed.
- `_sdc_lsn`: the order targets sort by: the commit LSN (as the transaction's row changes carry),
  or the message's own LSN when it is non-transactional.
"""


def prefix_filter(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Whether a message's prefix is kept: it equals a pattern, or starts with one's text
    before a final `*` (so `*` alone keeps every prefix)."""
    listed = tuple(patterns)
    exact = frozenset(p for p in listed if not p.endswith("*"))
    starts = tuple(p[:-1] for p in listed if p.endswith("*"))

    def keep(prefix: str) -> bool:
        return prefix in exact or prefix.startswith(starts)

    return keep


def content_fields(content: bytes) -> tuple[str | None, str | None]:
    """`content` and `content_base64`: text when the bytes are UTF-8 without NUL, else base64."""
    if b"\x00" not in content:
        try:
            return content.decode("utf-8"), None
        except UnicodeDecodeError:
            pass
    return None, base64.b64encode(content).decode("ascii")


def message_record(message: LogicalDecodingMessage, begin: Begin | None) -> dict[str, t.Any]:
    """The record of one message; `begin` opens its transaction (None: non-transactional)."""
    text, encoded = content_fields(message.content)
    return {
        "lsn": message.lsn,
        "transactional": bool(message.flags & MESSAGE_FLAG_TRANSACTIONAL),
        "prefix": message.prefix,
        "content": text,
        "content_base64": encoded,
        "commit_lsn": None if begin is None else begin.final_lsn,
        "commit_time": None if begin is None else begin.commit_time.isoformat(),
        "xid": None if begin is None else begin.xid,
        SDC_LSN: message.lsn if begin is None else begin.final_lsn,
    }


class MessageStream(t.Protocol):
    """What `MessageTarget` needs of the stream (`tap_pgcdc.logical_messages.MessagesStream`)."""

    @property
    def name(self) -> str:
        """The stream's name."""
        ...

    @property
    def log_position(self) -> int | None:
        """The stream's bookmark (None: none yet)."""
        ...

    def set_log_position(self, lsn: int) -> None:
        """Move the bookmark."""
        ...

    def write_record(self, record: dict[str, t.Any]) -> None:
        """Write one record."""
        ...


@dataclass(frozen=True, slots=True, eq=False)
class MessageTarget:
    """Writes the kept messages as records of their stream (a `replication.sink.MessageSink`)."""

    stream: MessageStream
    keep: Callable[[str], bool]  # from `prefix_filter`

    @property
    def stream_name(self) -> str:
        """The stream whose bookmark decides which messages are skipped as already sent."""
        return self.stream.name

    @property
    def position(self) -> int:
        """The stream's bookmark (0: none)."""
        return self.stream.log_position or 0

    def message(self, message: LogicalDecodingMessage, begin: Begin | None) -> int:
        """Write the message's record if its prefix is kept; returns the records written."""
        if not self.keep(message.prefix):
            return 0
        self.stream.write_record(message_record(message, begin))
        return 1

    def advance(self, lsn: int) -> None:
        """Move the bookmark (the loop then writes STATE)."""
        self.stream.set_log_position(lsn)
