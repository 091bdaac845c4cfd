"""Logical decoding messages (the `messages` setting) against real servers.

Applications write messages with `pg_logical_emit_message()`; with the setting on, the tap
delivers those whose prefix it lists as records of `pg_logical_messages`: transactional ones
with their transaction, between its row changes and with its commit LSN and time, only if it
commits; non-transactional ones as they are decoded, even from a transaction that rolled back.
Bookmarks carry the stream over runs; a replay from an older state converges (key: the LSN).
Before PostgreSQL 14 pgoutput has no messages option: refused, with the fix, nothing changed.
"""

from __future__ import annotations

import base64
import typing as t

import pytest

from tap_pgcdc.logical_messages import catalog_entries
from tap_pgcdc.pg.lsn import parse_lsn
from tap_pgcdc.replication.server import MESSAGES_VERSION
from tap_pgcdc.settings import Settings
from tests.conformance import schema_violations, singer_check_tap
from tests.integration.test_failures import assert_refused, slots_and_publications
from tests.memory_target import MemoryTarget
from tests.tap_runner import discover, run_tap, select_streams

if t.TYPE_CHECKING:
    from tests.conftest import TestDb
    from tests.tap_runner import TapRun

STREAM = "pg_logical_messages"
ITEMS = "public-items"


def setup(db: TestDb) -> None:
    db.execute("CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)")
    # Not in the catalog the tap is given: not in its publication.
    db.execute("CREATE TABLE unpublished (id int PRIMARY KEY)")


def emit(transactional: bool, prefix: str, content: str) -> str:
    return f"SELECT pg_logical_emit_message({str(transactional).lower()}, '{prefix}', {content})"


def message_lines(run: TapRun) -> list[tuple[str, t.Any]]:
    """The RECORD lines in output order: (stream, the item id or the message content)."""
    out = []
    for message in run.messages:
        if message.get("type") != "RECORD":
            continue
        record = message["record"]
        if message["stream"] == STREAM:
            out.append((STREAM, record["content"] or record["content_base64"]))
        else:
            out.append((message["stream"], record["id"]))
    return out


def test_messages_in_commit_order_with_their_transaction(db: TestDb) -> None:
    setup(db)
    config = db.config(messages=["app", "outbox.*"])
    catalog = select_streams(discover(config), {ITEMS, STREAM})
    first = run_tap(config, catalog=catalog).check()
    assert first.records(STREAM) == []
    conn = db.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO items VALUES (1, 'a')")
            cur.execute(emit(True, "app", "'between'"))
            cur.execute(emit(False, "app", "'not transactional'"))
            cur.execute("INSERT INTO items VALUES (2, 'b')")
            cur.execute(emit(True, "other", "'not kept'"))
            cur.execute(emit(True, "outbox.order", "'kept by the star'"))
        conn.commit()
        with conn.cursor() as cur:  # rolled back: only the non-transactional message stays
            cur.execute("INSERT INTO items VALUES (3, 'c')")
            cur.execute(emit(True, "app", "'rolled back'"))
            cur.execute(emit(False, "app", "'survives the rollback'"))
        conn.rollback()
        with conn.cursor() as cur:  # no table at all, then only an unpublished table
            cur.execute(emit(True, "app", "'alone'"))
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO unpublished VALUES (1)")
            cur.execute(emit(True, "app", "convert_to('besides an unpublished table', 'UTF8')"))
        conn.commit()
        with conn.cursor() as cur:
            cur.execute(emit(True, "app", "'\\xff00'::bytea"))
            cur.execute(emit(True, "app", "'nul\\000inside'::bytea"))
        conn.commit()
    finally:
        conn.close()
    second = run_tap(config, catalog=catalog, state=first.final_state).check()

    assert message_lines(second) == [
        (STREAM, "not transactional"),  # decoded (and sent) before its transaction committed
        (ITEMS, 1),
        (STREAM, "between"),
        (ITEMS, 2),
        (STREAM, "kept by the star"),
        (STREAM, "survives the rollback"),
        (STREAM, "alone"),
        (STREAM, "besides an unpublished table"),
        (STREAM, base64.b64encode(b"\xff\x00").decode()),
        (STREAM, base64.b64encode(b"nul\x00inside").decode()),
    ]
    records = {r["content"] or r["content_base64"]: r for r in second.records(STREAM)}
    items = {r["id"]: r for r in second.records(ITEMS)}
    between = records["between"]
    assert between["transactional"] is True and between["prefix"] == "app"
    assert between["commit_lsn"] == items[1]["_sdc_lsn"] == between["_sdc_lsn"]
    assert between["lsn"] < between["commit_lsn"]
    assert between["commit_time"] is not None and between["xid"] is not None
    assert records["kept by the star"]["prefix"] == "outbox.order"
    loose = records["not transactional"]
    assert loose["transactional"] is False
    assert (loose["commit_lsn"], loose["commit_time"], loose["xid"]) == (None, None, None)
    assert loose["_sdc_lsn"] == loose["lsn"]
    assert records[base64.b64encode(b"\xff\x00").decode()]["content"] is None
    (schema,) = [m for m in second.of_type("SCHEMA") if m["stream"] == STREAM]
    assert schema["key_properties"] == ["lsn"]
    assert schema_violations(second.raw_lines) == []
    assert "record messages" in singer_check_tap(second.raw_lines)

    # Carried over runs: nothing again, then only what is new; an older state replays and
    # converges on the same records.
    third = run_tap(config, catalog=catalog, state=second.final_state).check()
    assert third.records(STREAM) == []
    db.execute(emit(True, "app", "'later'"))
    db.execute(emit(False, "app", "'later, not transactional'"))
    fourth = run_tap(config, catalog=catalog, state=third.final_state).check()
    assert [r["content"] for r in fourth.records(STREAM)] == ["later", "later, not transactional"]
    target = MemoryTarget().apply(first.messages).apply(second.messages).apply(fourth.messages)
    rows = target.rows(STREAM)
    assert len(rows) == 10
    # The target did not store fourth's STATE (the slot was confirmed only to third's): the
    # same messages again, under the same keys, and the target converges.
    replay = run_tap(config, catalog=catalog, state=third.final_state).check()
    assert [r["lsn"] for r in replay.records(STREAM)] == [r["lsn"] for r in fourth.records(STREAM)]
    assert target.apply(replay.messages).rows(STREAM) == rows
    bookmark = replay.final_state["bookmarks"][STREAM]["lsn"]
    assert parse_lsn(bookmark) > max(r["lsn"] for r in replay.records(STREAM))


def test_discovery_offers_the_stream_only_with_the_setting(db: TestDb) -> None:
    setup(db)
    assert STREAM not in {s["tap_stream_id"] for s in discover(db.config())["streams"]}
    assert STREAM not in {s["tap_stream_id"] for s in discover(db.config(messages=[]))["streams"]}
    (entry,) = [
        s for s in discover(db.config(messages=["*"]))["streams"] if s["tap_stream_id"] == STREAM
    ]
    assert entry["key_properties"] == ["lsn"]
    assert set(entry["schema"]["properties"]) >= {"lsn", "prefix", "content", "content_base64"}
    # A catalog that selects it while the setting is empty: the option stays off, with a warning.
    catalog = discover(db.config(messages=["*"]))
    db.execute(emit(True, "app", "'unread'"))
    run = run_tap(db.config(), catalog=catalog).check()
    assert "lists no prefix: not reading logical decoding messages" in run.stderr
    assert run.records(STREAM) == [] and STREAM not in run.final_state["bookmarks"]


def test_deselected_or_alone(db: TestDb) -> None:
    """Deselected: the option is off (no record, no bookmark). Selected alone: no table needed."""
    setup(db)
    config = db.config(messages=["*"])
    catalog = discover(config)
    tables_only = run_tap(config, catalog=select_streams(catalog, {ITEMS})).check()
    db.execute(emit(True, "app", "'while deselected'"))
    db.execute("INSERT INTO items VALUES (1, 'a')")
    again = run_tap(config, catalog=select_streams(catalog, {ITEMS}), state=tables_only.final_state)
    assert again.check().records(STREAM) == [] and len(again.records(ITEMS)) == 1
    assert STREAM not in again.final_state["bookmarks"]

    alone = select_streams(catalog, {STREAM})
    start = run_tap(config, catalog=alone, state=again.final_state).check()
    db.execute(emit(True, "app", "'alone'"))
    db.execute(emit(False, "app", "'alone, not transactional'"))
    read = run_tap(config, catalog=alone, state=start.final_state).check()
    assert [r["content"] for r in read.records(STREAM)] == ["alone", "alone, not transactional"]
    assert read.records(ITEMS) == []
    checked = run_tap(config, catalog=alone, state=read.final_state, args=["--test"], timeout=60)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "Preflight passed" in checked.stderr


def test_alone_from_the_first_run(db: TestDb) -> None:
    """No table at all: the first run creates an empty publication and the slot."""
    config = db.config(messages=["*"])
    catalog = discover(config)
    assert [s["tap_stream_id"] for s in catalog["streams"]] == [STREAM]
    first = run_tap(config, catalog=catalog).check()
    assert first.records() == []
    db.execute(emit(True, "app", "'first'"))
    read = run_tap(config, catalog=catalog, state=first.final_state).check()
    assert [r["content"] for r in read.records(STREAM)] == ["first"]
    report = next(line for line in read.stderr.splitlines() if "tap_pgcdc_run_report" in line)
    assert '"pg_logical_messages":{"method":"LOG_BASED","records":1' in report
    assert '"slot_after":{' in report


def test_selected_again_after_a_while_off(db: TestDb) -> None:
    """Messages written while the stream was off were never read: its bookmark is behind the
    slot, which the run refuses as any gap; on_slot_lost = resnapshot starts it at the slot."""
    setup(db)
    config = db.config(messages=["*"])
    catalog = discover(config)
    both, tables = catalog, select_streams(catalog, {ITEMS})
    state = run_tap(config, catalog=both).check().final_state
    db.execute(emit(True, "app", "'while off'"))
    db.execute("INSERT INTO items VALUES (1, 'a')")
    for _ in range(2):  # the second run confirms the first's position, past the message
        state = run_tap(config, catalog=tables, state=state).check().final_state
    error = assert_refused(run_tap(config, catalog=both, state=state), STREAM, "on_slot_lost")
    assert "older than slot" in error
    db.execute(emit(True, "app", "'after'"))
    resumed = run_tap({**config, "on_slot_lost": "resnapshot"}, catalog=both, state=state).check()
    assert [r["content"] for r in resumed.records(STREAM)] == ["after"]
    assert "starts again at the slot's position" in resumed.stderr


def test_messages_are_refused_before_postgresql_14(
    pg_major: int, request: pytest.FixtureRequest
) -> None:
    if pg_major >= 15:
        pytest.skip("the version bound is PostgreSQL 14; later majors run the tests above")
    vdb: TestDb = request.getfixturevalue("vdb")
    setup(vdb)
    config = vdb.config(messages=["*"])
    if pg_major == 14:  # the first major with pgoutput's messages option
        first = run_tap(config).check()
        vdb.execute(emit(True, "app", "'on 14'"))
        read = run_tap(config, state=first.final_state).check()
        assert [r["content"] for r in read.records(STREAM)] == ["on 14"]
        return
    refused = run_tap(config, args=["--discover"])  # discovery offers only what can run
    assert refused.returncode == 1 and "needs PostgreSQL 14.0 or later" in refused.stderr
    assert "Fix: remove the setting" in refused.stderr and "Traceback" not in refused.stderr
    catalog = discover(vdb.config())  # a catalog made elsewhere, selecting the stream
    catalog["streams"] += catalog_entries(Settings(messages=("*",)), MESSAGES_VERSION)
    run = run_tap(config, catalog=catalog)
    error = assert_refused(run, "needs PostgreSQL 14.0 or later")
    assert error.rstrip().endswith("or upgrade the server to PostgreSQL 14+.")
    assert slots_and_publications(vdb.server, vdb.name) == ([], [])  # nothing changed
    checked = run_tap(config, catalog=catalog, args=["--test"], timeout=60)
    assert checked.returncode == 1
    assert "needs PostgreSQL 14.0 or later" in checked.stderr
    assert slots_and_publications(vdb.server, vdb.name) == ([], [])
    run_tap(vdb.config()).check()  # without the setting the tap runs there
