"""Every kind of table a user may select, against a real server (issue 10).

Discovery offers only what a run can do: a table whose changes the log cannot carry or identify
is offered as FULL_TABLE with the reason, and a run warns for it; keys are what the log
identifies rows by; FULL_TABLE syncs are table versions (ACTIVATE_VERSION); stream ids are
unique. The target here is `MemoryTarget`, which applies ACTIVATE_VERSION and whole-row deletes.
"""

from __future__ import annotations

from typing import Any

import pytest

from tap_pgcdc.pg.catalog import split_stream_id, stream_id
from tests.conftest import TestDb
from tests.memory_target import MemoryTarget
from tests.tap_runner import TapRun, discover, root_metadata, run_tap, set_method

SCHEMA_SQL = """
CREATE TABLE keyed (id int PRIMARY KEY, v text);
CREATE TABLE keyless (a int, b text);
CREATE TABLE nothing (id int PRIMARY KEY, v text);
ALTER TABLE nothing REPLICA IDENTITY NOTHING;
CREATE TABLE dropped (id int NOT NULL, v text);
CREATE UNIQUE INDEX dropped_id ON dropped (id);
ALTER TABLE dropped REPLICA IDENTITY USING INDEX dropped_id;
DROP INDEX dropped_id;
CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, v text);
CREATE TABLE full_keyless (a int, b text);
ALTER TABLE full_keyless REPLICA IDENTITY FULL;
CREATE TABLE by_code (id int PRIMARY KEY, code text NOT NULL, v text);
CREATE UNIQUE INDEX by_code_code ON by_code (code);
ALTER TABLE by_code REPLICA IDENTITY USING INDEX by_code_code;
CREATE TABLE logs (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE logs_a PARTITION OF logs FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE logs_b PARTITION OF logs FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
ALTER TABLE logs_a REPLICA IDENTITY FULL;
CREATE TABLE parts (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE VIEW keyed_view AS SELECT * FROM keyed;
INSERT INTO keyed VALUES (1, 'a'), (2, 'b'), (3, 'c');
INSERT INTO keyless VALUES (1, 'x'), (1, 'x'), (2, 'y');
INSERT INTO scratch VALUES (1, 'tmp');
INSERT INTO by_code VALUES (1, 'A', 'one'), (2, 'B', 'two');
"""

UNCAPTURABLE = {
    "public-keyless": "public.keyless cannot be captured from the log: it has no primary key",
    "public-nothing": "public.nothing cannot be captured from the log: it has REPLICA IDENTITY "
    "NOTHING",
    "public-dropped": "public.dropped cannot be captured from the log: its REPLICA IDENTITY "
    "USING INDEX names an index that was dropped",
    "public-scratch": "public.scratch cannot be captured from the log: it is UNLOGGED",
    "public-logs": "public.logs_b (a partition of public.logs) cannot be captured from the log",
}


def _warnings(run: TapRun) -> list[str]:
    return [line for line in run.stderr.splitlines() if "| WARNING" in line]


def _of(run: TapRun, stream: str) -> list[tuple[str, Any]]:
    """The stream's ACTIVATE_VERSION and RECORD messages in order, as (type, version)."""
    return [
        (m["type"], m.get("version"))
        for m in run.messages
        if m.get("stream") == stream and m["type"] in ("RECORD", "ACTIVATE_VERSION")
    ]


def test_discovery_offers_what_a_run_can_do(db: TestDb) -> None:
    db.execute(SCHEMA_SQL)
    catalog = discover(db.config())
    methods = {
        s["tap_stream_id"]: root_metadata(catalog, s["tap_stream_id"]).get("replication-method")
        for s in catalog["streams"]
    }
    keys = {s["tap_stream_id"]: s["key_properties"] for s in catalog["streams"]}
    assert methods == {
        "public-keyed": "LOG_BASED",
        "public-keyless": "FULL_TABLE",
        "public-nothing": "FULL_TABLE",
        "public-dropped": "FULL_TABLE",
        "public-scratch": "FULL_TABLE",
        "public-full_keyless": "LOG_BASED",
        "public-by_code": "LOG_BASED",
        "public-logs": "FULL_TABLE",
        "public-parts": "LOG_BASED",
        "public-keyed_view": "FULL_TABLE",
    }
    # Keys are what the log identifies rows by: the identity index's columns under USING INDEX.
    assert keys == {
        "public-keyed": ["id"],
        "public-keyless": [],
        "public-nothing": ["id"],
        "public-dropped": [],
        "public-scratch": ["id"],
        "public-full_keyless": [],
        "public-by_code": ["code"],
        "public-logs": [],
        "public-parts": ["id", "at"],
        "public-keyed_view": [],
    }
    for name, reason in UNCAPTURABLE.items():
        root = root_metadata(catalog, name)
        # The user's default, not forced: once the table is fixed, LOG_BASED may be chosen.
        assert "forced-replication-method" not in root, name
        assert root["full-table-reason"].startswith(reason), (name, root["full-table-reason"])
        assert "Fix: ALTER TABLE " in root["full-table-reason"]
        assert root["full-table-reason"].endswith(", then set replication-method LOG_BASED.")
        assert root["selected-by-default"] is True
    assert root_metadata(catalog, "public-keyed_view")["forced-replication-method"] == "FULL_TABLE"
    for name in ("public-keyed", "public-full_keyless", "public-by_code", "public-parts"):
        assert "full-table-reason" not in root_metadata(catalog, name)


def test_the_discovered_catalog_runs_and_warns_once_per_full_table_stream(db: TestDb) -> None:
    db.execute(SCHEMA_SQL)
    catalog = discover(db.config())
    first = run_tap(db.config(), catalog=catalog).check()
    warnings = _warnings(first)
    assert len(warnings) == len(UNCAPTURABLE), warnings
    for name in UNCAPTURABLE:
        (line,) = [w for w in warnings if f"Stream {name} is read in full" in w]
        assert "To make it LOG_BASED: ALTER TABLE" in line
        assert line.endswith(
            "then set its replication-method to LOG_BASED (or run --discover again)."
        )
    target = MemoryTarget().apply(first.messages)
    assert target.rows("public-keyless") == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert [r["id"] for r in target.rows("public-scratch")] == [1]

    # The user fixes a table and chooses LOG_BASED for it: it is captured from then on.
    db.execute("ALTER TABLE keyless REPLICA IDENTITY FULL")
    catalog = set_method(catalog, "LOG_BASED", "public-keyless")
    second = run_tap(db.config(), catalog=catalog, state=first.final_state).check()
    assert not any("public-keyless" in w for w in _warnings(second))
    target.apply(second.messages)
    db.execute("UPDATE keyless SET b = 'z' WHERE a = 2; DELETE FROM keyless WHERE a = 1")
    third = run_tap(db.config(), catalog=catalog, state=second.final_state).check()
    target.apply(third.messages)
    assert target.rows("public-keyless") == [{"a": 2, "b": "z"}]


def test_replica_identity_index_is_the_key_and_converges(db: TestDb) -> None:
    """Under USING INDEX a DELETE carries only the index's columns: they must be the key."""
    db.execute(SCHEMA_SQL)
    catalog = discover(db.config())
    first = run_tap(db.config(), catalog=catalog).check()
    target = MemoryTarget().apply(first.messages)
    db.execute(
        "DELETE FROM by_code WHERE code = 'A'; UPDATE by_code SET code = 'C' WHERE code = 'B';"
        " INSERT INTO by_code VALUES (3, 'D', 'three')"
    )
    run = run_tap(db.config(), catalog=catalog, state=first.final_state).check()
    target.apply(run.messages)
    deleted = [r for r in run.records("public-by_code") if r["_sdc_deleted_at"]]
    assert [r["code"] for r in deleted] == ["A", "B"]  # the deletion, then the old key
    rows = db.execute("SELECT id, code, v FROM by_code ORDER BY code")
    assert [(r["id"], r["code"], r["v"]) for r in target.rows("public-by_code")] == rows


def test_full_table_syncs_are_table_versions(db: TestDb) -> None:
    db.execute(SCHEMA_SQL)
    catalog = discover(db.config())
    first = run_tap(db.config(), catalog=catalog).check()
    (version,) = {v for _, v in _of(first, "public-keyed_view")}
    # First sync: ACTIVATE_VERSION before the first record and after the last.
    assert _of(first, "public-keyed_view") == [
        ("ACTIVATE_VERSION", version),
        ("RECORD", version),
        ("RECORD", version),
        ("RECORD", version),
        ("ACTIVATE_VERSION", version),
    ]
    assert first.final_state is not None
    assert first.final_state["bookmarks"]["public-keyed_view"] == {"full_table_version": version}
    target = MemoryTarget().apply(first.messages)

    db.execute("DELETE FROM keyed WHERE id = 2; DELETE FROM keyless WHERE b = 'y'")
    second = run_tap(db.config(), catalog=catalog, state=first.final_state).check()
    (newer,) = {v for _, v in _of(second, "public-keyed_view")}
    assert newer > version
    # Later syncs: after the last record only (the target keeps the old rows until then).
    assert _of(second, "public-keyed_view") == [("RECORD", newer)] * 2 + [
        ("ACTIVATE_VERSION", newer)
    ]
    target.apply(second.messages)
    # Rows deleted from a view's base table and a keyless table are gone; nothing is doubled.
    assert target.rows("public-keyed_view") == [{"id": 1, "v": "a"}, {"id": 3, "v": "c"}]
    assert target.rows("public-keyless") == [{"a": 1, "b": "x"}, {"a": 1, "b": "x"}]


@pytest.mark.parametrize("keyed", [True, False])
def test_an_interrupted_full_table_sync_resumes_with_its_version(db: TestDb, keyed: bool) -> None:
    """A keyed table resumes after its last chunk, same version; a keyless one starts over anew."""
    db.execute(SCHEMA_SQL)
    db.execute("INSERT INTO nothing SELECT g, 'n' || g FROM generate_series(1, 10) AS g")
    db.execute("INSERT INTO keyless SELECT g, 'k' || g FROM generate_series(10, 19) AS g")
    name = "public-nothing" if keyed else "public-keyless"
    catalog = discover(db.config())
    config = db.config(snapshot_chunk_size=4)
    first = run_tap(config, catalog=catalog).check()
    (version,) = {v for _, v in _of(first, name)}
    # The STATE after the first chunk: the run as if killed there.
    interrupted = next(
        s for s in first.states if s["bookmarks"].get(name, {}).get("snapshot", {}).get("version")
    )
    resumed = run_tap(config, catalog=catalog, state=interrupted).check()
    messages = _of(resumed, name)
    if keyed:
        assert messages == [("RECORD", version)] * 6 + [("ACTIVATE_VERSION", version)]
        assert [r["id"] for r in resumed.records(name)] == list(range(5, 11))
    else:
        (newer,) = {v for _, v in messages}
        assert newer > version
        assert messages == [("RECORD", newer)] * 13 + [("ACTIVATE_VERSION", newer)]
    # Applied after the interrupted run's output, the target holds exactly the source.
    cut = first.messages.index(
        next(m for m in first.messages if m.get("type") == "STATE" and m["value"] is interrupted)
    )
    target = MemoryTarget().apply(first.messages[: cut + 1]).apply(resumed.messages)
    table = name.split("-", 1)[1]
    expected = db.execute(f"SELECT * FROM {table}")
    got = target.rows(name)
    assert sorted(tuple(r.values()) for r in got) == sorted(tuple(r) for r in expected)


def test_stream_ids_are_unique_and_reversible(db: TestDb) -> None:
    db.execute(
        'CREATE SCHEMA "x-y"; CREATE TABLE "x-y".z (id int PRIMARY KEY, src text);'
        ' CREATE SCHEMA x; CREATE TABLE x."y-z" (id int PRIMARY KEY, src text);'
        ' CREATE SCHEMA "a%2Db"; CREATE TABLE "a%2Db".c (id int PRIMARY KEY, src text);'
        ' INSERT INTO "x-y".z VALUES (1, \'"x-y".z\'); INSERT INTO x."y-z" VALUES (1, \'x."y-z"\');'
        ' INSERT INTO "a%2Db".c VALUES (1, \'"a%2Db".c\')'
    )
    catalog = discover(db.config())
    ids = sorted(s["tap_stream_id"] for s in catalog["streams"])
    assert ids == ["a%252Db-c", "x%2Dy-z", "x-y-z"]
    for stream in catalog["streams"]:
        assert split_stream_id(stream["tap_stream_id"]) == (
            root_metadata(catalog, stream["tap_stream_id"])["schema-name"],
            stream["table_name"],
        )
    run = run_tap(db.config(), catalog=catalog).check()
    assert {m["stream"]: m["record"]["src"] for m in run.messages if m["type"] == "RECORD"} == {
        "x%2Dy-z": '"x-y".z',
        "x-y-z": 'x."y-z"',
        "a%252Db-c": '"a%2Db".c',
    }
    db.execute("""INSERT INTO "x-y".z VALUES (2, 'log'); INSERT INTO x."y-z" VALUES (3, 'log')""")
    again = run_tap(db.config(), catalog=catalog, state=run.final_state).check()
    assert sorted((m["stream"], m["record"]["id"]) for m in again.of_type("RECORD")) == [
        ("x%2Dy-z", 2),
        ("x-y-z", 3),
    ]


@pytest.mark.parametrize(
    ("schema", "name"),
    [("public", "orders"), ("x-y", "z"), ("x", "y-z"), ("%", "-"), ("a%2Db", "c%"), ("-", "")],
)
def test_stream_id_round_trip(schema: str, name: str) -> None:
    assert split_stream_id(stream_id(schema, name)) == (schema, name)
    assert stream_id("public", "orders") == "public-orders"  # earlier ids, earlier states


def test_preflight_reports_each_kind_with_its_consequence_and_fix(db: TestDb) -> None:
    db.execute(SCHEMA_SQL)
    catalog = set_method(discover(db.config()), "LOG_BASED", "public-nothing")
    run = run_tap(db.config(), catalog=catalog, args=["--test"], timeout=60)
    assert run.returncode == 1
    notes = [
        line.split("Preflight: ", 1)[1] for line in run.stderr.splitlines() if "Preflight: " in line
    ]
    problems = [
        line.split("Preflight problem ", 1)[1]
        for line in run.stderr.splitlines()
        if "Preflight problem " in line
    ]
    # Set to LOG_BASED against the catalog's advice: the one problem, with both ways out.
    assert problems == [
        "1 of 1: Stream public-nothing is LOG_BASED, but public.nothing cannot be captured from "
        "the log: it has REPLICA IDENTITY NOTHING, so its UPDATEs and DELETEs cannot be "
        "identified (Postgres refuses them while the table is published). Fix: ALTER TABLE "
        '"public"."nothing" REPLICA IDENTITY FULL (or DEFAULT, if it has a primary key); or set '
        "replication-method FULL_TABLE for stream public-nothing."
    ]
    # Read in full, with the way to LOG_BASED: each table the catalog offers as FULL_TABLE.
    for name in set(UNCAPTURABLE) - {"public-nothing"}:
        assert any(note.startswith(f"Stream {name} is read in full every run") for note in notes)
    assert (
        "Stream public-by_code: its key is code, the columns of its REPLICA IDENTITY USING INDEX "
        "(the log identifies deleted and changed rows by them), not its primary key."
    ) in notes
    assert (
        "Stream public-full_keyless has no key (REPLICA IDENTITY FULL, no primary key): a target "
        "appends its records; an UPDATE arrives as the old row's deletion (_sdc_deleted_at set) "
        "followed by the new row, so only a target that deletes by whole row keeps it exact. "
        "Fix, for an exact copy in any target: add a primary key to public.full_keyless."
    ) in notes


def test_a_catalog_key_the_log_does_not_identify_rows_by_is_warned_about(db: TestDb) -> None:
    db.execute(SCHEMA_SQL)
    catalog = discover(db.config())  # public-by_code keyed by its identity index: code
    db.execute("ALTER TABLE by_code REPLICA IDENTITY DEFAULT")  # the log now sends the id
    run = run_tap(db.config(), catalog=catalog).check()
    assert [w.split(" | ")[-1] for w in _warnings(run) if "key_properties" in w] == [
        "Stream public-by_code: its key_properties (code) are not the columns the log identifies "
        "its rows by (id), so a target cannot apply its deletes and key changes. Fix: run "
        "--discover again (or set its table-key-properties to those columns)."
    ]
    fresh = run_tap(db.config(), catalog=discover(db.config()), state=run.final_state).check()
    assert not [w for w in _warnings(fresh) if "key_properties" in w]
