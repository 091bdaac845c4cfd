"""Logical decoding messages through the read loop (fake transport and sinks, byte fixtures).

What the loop decides for the messages stream: a transactional message goes with its open
transaction, unless that transaction committed before the stream's bookmark; a
non-transactional one on its own, unless its LSN is before the bookmark; the bookmark moves with
the tables' at boundaries only; without a messages sink nothing of them is written.
"""

from __future__ import annotations

import base64
import logging
import typing as t
from dataclasses import dataclass, field

import jsonschema
import pytest

from tap_pgcdc.errors import ProtocolError, ServerConfigError
from tap_pgcdc.logical_messages import catalog_entries
from tap_pgcdc.output.messages import (
    MESSAGES_SCHEMA,
    MESSAGES_STREAM,
    MessageTarget,
    content_fields,
    message_record,
    prefix_filter,
)
from tap_pgcdc.replication.decoder import decode
from tap_pgcdc.replication.messages import Begin, LogicalDecodingMessage
from tap_pgcdc.replication.protocol import keepalive
from tap_pgcdc.replication.reader import ReaderSettings, ReadLoop, StreamChanges
from tap_pgcdc.replication.server import judge_messages
from tap_pgcdc.settings import Settings
from tests.facts import server_info
from tests.unit import pgoutput_build as pg
from tests.unit.fake_log import (
    CONFIRM,
    REL_A,
    SERVER_LSN,
    WHEN,
    A,
    FakeClock,
    FakeSink,
    FakeTransport,
    Sleep,
    begin,
    commit,
    insert,
    relation,
    w,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterable

M = MESSAGES_STREAM


@dataclass
class FakeMessages:
    """A messages sink that records its calls among the loop's other events."""

    events: list[t.Any]
    position: int = 0
    stream_name: str = M
    keep: frozenset[str] = frozenset({"app"})

    def message(self, message: LogicalDecodingMessage, begin: Begin | None) -> int:
        if message.prefix not in self.keep:
            return 0
        self.events.append(("message", message.content, None if begin is None else begin.final_lsn))
        return 1

    def advance(self, lsn: int) -> None:
        self.events.append(("advance", lsn))
        self.position = lsn


def read(
    script: Iterable[bytes | Sleep | None],
    *,
    stop_lsn: int,
    position: int = 0x100,
    messages: bool = True,
) -> tuple[list[t.Any], StreamChanges]:
    events: list[t.Any] = []
    clock = FakeClock()
    loop = ReadLoop(
        transport=FakeTransport(script, clock, events),
        sink=FakeSink(events),
        positions={A: 0x100},
        settings=ReaderSettings(confirm_lsn=0x100, state_interval_seconds=0),
        server_lsn=lambda: SERVER_LSN,
        logger=logging.getLogger("test.reader"),
        clock=clock,
        messages=FakeMessages(events, position) if messages else None,
    )
    summary = loop.run(stop_lsn=stop_lsn)
    return events, summary.streams.get(M, StreamChanges())


def message(transactional: bool, lsn: int, content: bytes, prefix: str = "app") -> bytes:
    return w(pg.logical_message(int(transactional), lsn, prefix, content), lsn)


def test_transactional_messages_go_with_their_transaction_in_its_order() -> None:
    events, counts = read(
        [
            message(False, 0x180, b"loose"),  # sent as decoded, before the transaction commits
            begin(0x200),
            relation(REL_A, "a"),
            insert(REL_A, "1", "one"),
            message(True, 0x1C0, b"between"),
            message(True, 0x1C8, b"other prefix", prefix="other"),
            insert(REL_A, "2", "two"),
            commit(0x200, 0x208),
            *[begin(0x300), message(True, 0x2F0, b"alone"), commit(0x300, 0x308)],
        ],
        stop_lsn=0x308,
    )
    assert events == [
        CONFIRM,
        ("message", b"loose", None),
        ("relation", "public", "a"),
        ("insert", A, ("1", "one"), 0x200),
        ("message", b"between", 0x200),
        ("insert", A, ("2", "two"), 0x200),
        ("advance", 0x208),  # the messages stream's bookmark first, then the STATE
        ("state", {A: 0x208}),
        ("message", b"alone", 0x300),
        ("advance", 0x308),
        ("state", {A: 0x308}),
    ]
    assert counts == StreamChanges(changes=3)  # the message of another prefix is not counted


def test_what_the_bookmark_covers_is_skipped() -> None:
    events, _ = read(
        [
            message(False, 0x3F0, b"loose, before"),
            *[begin(0x3F8), message(True, 0x3F4, b"committed before"), commit(0x3F8, 0x400)],
            message(False, 0x400, b"loose, at the bookmark"),
            *[begin(0x480), message(True, 0x410, b"committed after"), commit(0x480, 0x488)],
        ],
        stop_lsn=0x488,
        position=0x400,
    )
    assert events == [
        CONFIRM,
        ("state", {A: 0x400}),  # the messages stream is already there: nothing to advance
        ("message", b"loose, at the bookmark", None),
        ("message", b"committed after", 0x480),
        ("advance", 0x488),
        ("state", {A: 0x488}),
    ]


def test_a_keepalive_between_transactions_moves_the_messages_bookmark_too() -> None:
    events, _ = read([message(False, 0x180, b"loose"), keepalive(0x200)], stop_lsn=0x200)
    assert events == [
        CONFIRM,
        ("message", b"loose", None),
        ("advance", 0x200),
        ("state", {A: 0x200}),
    ]


def test_without_a_messages_sink_messages_are_decoded_and_dropped() -> None:
    events, counts = read(
        [begin(0x200), message(True, 0x1C0, b"x"), commit(0x200, 0x208)],
        stop_lsn=0x208,
        messages=False,
    )
    assert events == [CONFIRM, ("state", {A: 0x208})]
    assert counts == StreamChanges()


def test_a_transactional_message_outside_a_transaction_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="Logical decoding message outside a transaction"):
        read([message(True, 0x1C0, b"x")], stop_lsn=0x208)


# --- the records (output/messages.py) ------------------------------------------------------


def test_prefix_filter_exact_and_trailing_star() -> None:
    keep = prefix_filter(["app", "outbox.*"])
    assert [keep(p) for p in ("app", "app2", "outbox.", "outbox.order", "outbox", "")] == [
        True,
        False,
        True,
        True,
        False,
        False,
    ]
    assert all(prefix_filter(["*"])(p) for p in ("", "x", "*"))
    assert not prefix_filter([])("app")


@pytest.mark.parametrize(
    ("content", "text"),
    [
        (b"", ""),
        ("héllo ✓".encode(), "héllo ✓"),
        (b"\xff\xfe", None),  # not UTF-8
        (b"a\x00b", None),  # UTF-8, but a NUL many targets cannot store in text
        ("é".encode()[:1], None),  # a truncated sequence
    ],
)
def test_content_is_text_when_it_can_be_else_base64(content: bytes, text: str | None) -> None:
    got_text, encoded = content_fields(content)
    assert got_text == text
    if text is None:
        assert encoded is not None and base64.b64decode(encoded) == content
    else:
        assert encoded is None


def test_message_records_conform_to_the_schema() -> None:
    tx = Begin(final_lsn=0x200, commit_time=WHEN, xid=701)
    transactional = message_record(LogicalDecodingMessage(1, 0x1C0, "app", b"x"), tx)
    assert transactional == {
        "lsn": 0x1C0,
        "transactional": True,
        "prefix": "app",
        "content": "x",
        "content_base64": None,
        "commit_lsn": 0x200,
        "commit_time": "2026-01-02T03:04:05+00:00",
        "xid": 701,
        "_sdc_lsn": 0x200,
    }
    loose = message_record(LogicalDecodingMessage(0, 0x180, "", b"\xff"), None)
    assert loose["transactional"] is False and loose["_sdc_lsn"] == 0x180
    assert (loose["commit_lsn"], loose["commit_time"], loose["xid"]) == (None, None, None)
    for record in (transactional, loose):
        jsonschema.validate(record, MESSAGES_SCHEMA)
        assert set(record) == set(MESSAGES_SCHEMA["properties"])


@dataclass
class FakeStream:
    name: str = M
    log_position: int | None = None
    written: list[dict[str, t.Any]] = field(default_factory=list)

    def set_log_position(self, lsn: int) -> None:
        self.log_position = lsn

    def write_record(self, record: dict[str, t.Any]) -> None:
        self.written.append(record)


def test_message_target_keeps_listed_prefixes_and_moves_the_bookmark() -> None:
    stream = FakeStream()
    target = MessageTarget(stream=stream, keep=prefix_filter(["app"]))
    assert (target.stream_name, target.position) == (M, 0)
    assert target.message(LogicalDecodingMessage(0, 0x180, "app", b"a"), None) == 1
    assert target.message(LogicalDecodingMessage(0, 0x188, "other", b"b"), None) == 0
    target.advance(0x200)
    assert [r["content"] for r in stream.written] == ["a"]
    assert (stream.log_position, target.position) == (0x200, 0x200)


# --- the setting, the version judge and discovery's entry ----------------------------------


def test_messages_need_postgresql_14_when_the_setting_is_on() -> None:

    for version in (120020, 130016):
        (problem,) = judge_messages(server_info(version_num=version), ("app",))
        assert isinstance(problem, ServerConfigError)
        assert str(problem).startswith(
            f"messages = ['app'] needs PostgreSQL 14.0 or later (pgoutput's messages option), "
            f"and this server is {version // 10000}.{version % 10000}"
        )
        assert "Fix: remove the setting" in str(problem)
        assert judge_messages(server_info(version_num=version), ()) == []  # off: no judge
    assert judge_messages(server_info(version_num=140000), ("*",)) == []


def test_discovery_offers_the_stream_only_with_the_setting_and_a_server_for_it() -> None:

    assert catalog_entries(Settings(), 180000) == []
    (entry,) = catalog_entries(Settings(messages=("*",)), 140000)
    assert entry["tap_stream_id"] == M and "-" not in M  # table stream ids all have a '-'
    assert entry["key_properties"] == ["lsn"]
    (root,) = [i["metadata"] for i in entry["metadata"] if i["breadcrumb"] == []]
    assert root["selected-by-default"] is True and root["replication-method"] == "LOG_BASED"
    with pytest.raises(ServerConfigError, match=r"needs PostgreSQL 14\.0 or later.*Fix:"):
        catalog_entries(Settings(messages=("*",)), 130016)


def test_the_setting_is_parsed_into_a_tuple_of_prefixes() -> None:

    assert Settings.from_config({}).messages == ()
    assert Settings.from_config({"messages": ["app", "outbox.*"]}).messages == ("app", "outbox.*")


# --- the decoder's 'M' (the valid forms are in test_decoder.py) -----------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("4D 01 00000000 016B3760 746170 00 FFFFFFFF", "negative length -1"),
        ("4D 01 00000000 016B3760 746170 00 00000004 6162", "truncated"),
        ("4D 01 00000000 016B3760 746170", "truncated|NUL|terminat"),
        ("4D 01 00000000 016B3760 746170 00 00000001 61 62", "trailing"),
        ("4D 01 00000000", "truncated"),
    ],
    ids=["negative-length", "short-content", "unterminated-prefix", "trailing", "short-lsn"],
)
def test_malformed_messages_are_protocol_errors(data: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode(bytes.fromhex(data))
