"""LOG_BASED capture against a real server: semantics peers get wrong, each checked end to end."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conformance import schema_violations
from tests.memory_target import MemoryTarget
from tests.tap_runner import TapRun, discover, run_tap, select_streams, set_method
from tests.type_cases import CASES, create_types_table, insert_types_row, mismatches


def pg_rows(db, sql: str) -> list[dict[str, Any]]:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            names = [d.name for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def sync(db, target: MemoryTarget, **config: Any) -> TapRun:
    """One tap run fed with the target's state; the target applies the output."""
    run = run_tap(db.config(**config), state=target.state).check()
    target.apply(run.messages)
    return run


def slot_confirmed(db) -> str:
    rows = db.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (db.config()["slot_name"],),
    )
    return rows[0][0]


def test_insert_update_delete_converge(db) -> None:
    db.execute("CREATE TABLE acct (id int PRIMARY KEY, owner text, balance numeric(12,2))")
    db.execute("INSERT INTO acct SELECT g, 'o' || g, g * 10 FROM generate_series(1, 100) g")
    target = MemoryTarget()
    sync(db, target)
    db.execute(
        """
        INSERT INTO acct SELECT g, 'new' || g, 1 FROM generate_series(101, 150) g;
        UPDATE acct SET balance = balance + 0.01 WHERE id % 3 = 0;
        DELETE FROM acct WHERE id % 10 = 0;
        BEGIN; UPDATE acct SET owner = 'txn' WHERE id = 1; DELETE FROM acct WHERE id = 2;
               INSERT INTO acct VALUES (2, 'reborn', 2); COMMIT;
        """
    )
    run = sync(db, target)
    assert len(run.records()) > 0
    assert target.rows("public-acct") == pg_rows(db, "SELECT * FROM acct ORDER BY id")
    # Every change record carries the commit position and no deletion time unless deleted.
    for record in run.records("public-acct"):
        assert isinstance(record["_sdc_lsn"], int)
    deletes = [r for r in run.records() if r["_sdc_deleted_at"]]
    assert {r["id"] for r in deletes} >= {10, 20, 2}


def test_state_only_at_transaction_boundaries(db) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    target = MemoryTarget()
    sync(db, target)
    commit_ends = []
    for i in range(5):
        db.execute(
            f"INSERT INTO t SELECT g, {i} FROM generate_series({i * 100 + 1}, {i * 100 + 100}) g"
        )
        commit_ends.append(db.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0])
    run = sync(db, target, state_interval_seconds=0)
    # Walk the output: a STATE never falls inside a transaction's records.
    seen_ids: set[int] = set()
    for message in run.messages:
        if message["type"] == "RECORD":
            seen_ids.add(message["record"]["id"])
        elif message["type"] == "STATE" and seen_ids:
            assert len(seen_ids) % 100 == 0, "a STATE split a transaction"
    assert len(seen_ids) == 500
    assert target.rows("public-t") == pg_rows(db, "SELECT * FROM t ORDER BY id")


def test_slot_confirms_only_the_input_state(db) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    first = run_tap(db.config()).check()
    created_at = slot_confirmed(db)
    db.execute("INSERT INTO t SELECT generate_series(1, 10)")
    second = run_tap(db.config(), state=first.final_state).check()
    assert len(second.records()) == 10
    # The second run confirmed what the first run's state said, not what it read.
    assert slot_confirmed(db) == first.final_state["bookmarks"]["public-t"]["lsn"]
    assert slot_confirmed(db) != second.final_state["bookmarks"]["public-t"]["lsn"]
    assert created_at <= slot_confirmed(db)


def test_target_failure_loses_nothing(db) -> None:
    """The target dies: output and state thrown away. The next run from the old state redelivers."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    target = MemoryTarget()
    sync(db, target)
    stored_state = target.state
    db.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 200) g")
    lost = run_tap(db.config(), state=stored_state).check()  # output never stored
    assert len(lost.records()) == 200
    db.execute("UPDATE t SET v = 'changed' WHERE id <= 50")
    again = run_tap(db.config(), state=stored_state).check()
    target.apply(again.messages)
    assert target.rows("public-t") == pg_rows(db, "SELECT * FROM t ORDER BY id")


def test_resume_skips_transactions_at_or_below_the_bookmark(db) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    target = MemoryTarget()
    sync(db, target)
    db.execute("INSERT INTO t VALUES (1)")
    sync(db, target)
    db.execute("INSERT INTO t VALUES (2)")
    run = sync(db, target)
    assert [r["id"] for r in run.records()] == [2]
    assert target.rows("public-t") == [{"id": 1}, {"id": 2}]


def test_unchanged_toast_values_are_never_null(db) -> None:
    db.execute(
        """
        CREATE TABLE docs (id int PRIMARY KEY, title text, body text, meta jsonb);
        ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
        CREATE TABLE docs_full (id int PRIMARY KEY, title text, body text);
        ALTER TABLE docs_full ALTER COLUMN body SET STORAGE EXTERNAL;
        ALTER TABLE docs_full REPLICA IDENTITY FULL;
        """
    )
    big = "x" * 20000
    db.execute(
        "INSERT INTO docs SELECT g, 't' || g, %s || g, jsonb_build_object('k', repeat('y', 9000))"
        " FROM generate_series(1, 5) g",
        (big,),
    )
    db.execute(
        "INSERT INTO docs_full SELECT g, 't' || g, %s || g FROM generate_series(1, 5) g", (big,)
    )
    target = MemoryTarget()
    sync(db, target)
    db.execute(
        """
        UPDATE docs SET title = 'changed' WHERE id IN (1, 2, 3);
        UPDATE docs_full SET title = 'changed' WHERE id IN (1, 2, 3);
        UPDATE docs SET title = 'gone soon' WHERE id = 4;
        DELETE FROM docs WHERE id = 4;
        """
    )
    run = sync(db, target)
    for record in run.records():
        if not record["_sdc_deleted_at"] and record["id"] in (1, 2, 3):
            assert record["body"] == big + str(record["id"]), "unchanged TOAST emitted wrong"
    # The row updated then deleted: its body is unknown at read time; never emitted as NULL.
    updated_4 = [r for r in run.records("public-docs") if r["id"] == 4 and not r["_sdc_deleted_at"]]
    assert all(r.get("body", "absent") is not None for r in updated_4)
    assert target.rows("public-docs") == pg_rows(db, "SELECT * FROM docs ORDER BY id")
    assert target.rows("public-docs_full") == pg_rows(db, "SELECT * FROM docs_full ORDER BY id")


def test_primary_key_change_deletes_old_key(db) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    target = MemoryTarget()
    sync(db, target)
    db.execute("UPDATE t SET id = 10 WHERE id = 1")
    run = sync(db, target)
    records = run.records()
    assert [(r["id"], bool(r["_sdc_deleted_at"])) for r in records] == [(1, True), (10, False)]
    assert records[1]["v"] == "a"
    assert target.rows("public-t") == [{"id": 2, "v": "b"}, {"id": 10, "v": "a"}]


def test_truncate_empties_the_table_in_the_target(db) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 20) g")
    target = MemoryTarget()
    sync(db, target)
    db.execute("BEGIN; TRUNCATE t; INSERT INTO t VALUES (100, 'after'); COMMIT")
    db.execute("INSERT INTO t VALUES (101, 'later')")
    run = sync(db, target)
    kinds = [m["type"] for m in run.messages if m.get("stream") in (None, "public-t")]
    assert "ACTIVATE_VERSION" in kinds
    assert target.rows("public-t") == [{"id": 100, "v": "after"}, {"id": 101, "v": "later"}]
    # Replaying the same window converges to the same table.
    replay = MemoryTarget()
    replay.apply(run_tap(db.config()).check().messages)
    assert replay.rows("public-t") == target.rows("public-t")


def test_two_truncates_in_one_transaction_each_drop_what_came_before(db) -> None:
    """A row inserted between two TRUNCATEs of one transaction is gone from the source."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 5) g")
    target = MemoryTarget()
    sync(db, target)
    db.execute(
        "BEGIN; TRUNCATE t; INSERT INTO t VALUES (50, 'between'); TRUNCATE t;"
        " INSERT INTO t VALUES (60, 'after'); COMMIT"
    )
    before = target.state
    run = sync(db, target)
    versions = [m["version"] for m in run.of_type("ACTIVATE_VERSION")]
    assert len(versions) == 2 and versions[0] < versions[1]  # strictly increasing
    assert target.rows("public-t") == pg_rows(db, "SELECT * FROM t ORDER BY id")
    assert target.rows("public-t") == [{"id": 60, "v": "after"}]
    # A replay of the same transaction (a run stopped before its STATE) gives the same versions.
    replay = run_tap(db.config(), state=before).check()
    assert [m["version"] for m in replay.of_type("ACTIVATE_VERSION")] == versions
    # The next truncate, in a later transaction, gets a higher version still.
    db.execute("BEGIN; TRUNCATE t; INSERT INTO t VALUES (70, 'later'); COMMIT")
    later = sync(db, target)
    (newer,) = [m["version"] for m in later.of_type("ACTIVATE_VERSION")]
    assert newer > versions[1]
    assert target.rows("public-t") == pg_rows(db, "SELECT * FROM t ORDER BY id")


def test_schema_changes_mid_stream(db) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, a text, b int)")
    db.execute("INSERT INTO t VALUES (1, 'x', 1)")
    target = MemoryTarget()
    sync(db, target)
    # DDL that keeps the existing rows as they are: the log's Relation messages carry it.
    db.execute(
        """
        INSERT INTO t VALUES (2, 'before', 2);
        ALTER TABLE t ADD COLUMN c numeric;
        INSERT INTO t VALUES (3, 'after add', 3, 2.25);
        ALTER TABLE t DROP COLUMN b;
        INSERT INTO t VALUES (4, 'after drop', 4.5);
        """
    )
    run = sync(db, target)
    assert not run.of_type("ACTIVATE_VERSION")
    order = [
        (m["type"], m.get("record", {}).get("id"))
        for m in run.messages
        if m["type"] in ("SCHEMA", "RECORD")
    ]
    schemas = [m["schema"]["properties"] for m in run.of_type("SCHEMA")]
    # A SCHEMA with the new shape arrives before the first record that uses it.
    idx3 = order.index(("RECORD", 3))
    assert order[idx3 - 1][0] == "SCHEMA" and "c" in schemas[-2]
    idx4 = order.index(("RECORD", 4))
    assert order[idx4 - 1][0] == "SCHEMA"
    assert "b" not in schemas[-1]
    records = {r["id"]: r for r in run.records()}
    assert str(records[3]["c"]) == "2.25"
    # A rewriting type change alters every existing row without a row change: the stream is
    # snapshotted again (tests/integration/test_schema_changes.py has every such DDL).
    db.execute("ALTER TABLE t ALTER COLUMN a TYPE integer USING length(a)")
    db.execute("INSERT INTO t VALUES (5, 42, 5.5)")
    run = sync(db, target)
    assert run.of_type("ACTIVATE_VERSION")
    assert run.of_type("SCHEMA")[-1]["schema"]["properties"]["a"]["type"] == ["integer", "null"]
    records = {r["id"]: r for r in run.records()}
    assert records[5]["a"] == 42 and records[2]["a"] == len("before")
    assert [r["a"] for r in target.rows("public-t")] == [1, 6, 9, 10, 42]


def test_partition_changes_arrive_under_the_parent(db) -> None:
    db.execute(
        """
        CREATE TABLE m (id int, at date, v int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        INSERT INTO m VALUES (1, '2024-05-01', 1), (2, '2025-05-01', 2);
        """
    )
    target = MemoryTarget()
    first = sync(db, target)
    assert {s["stream"] for s in first.of_type("SCHEMA")} == {"public-m"}
    db.execute(
        "INSERT INTO m VALUES (3, '2024-06-01', 3), (4, '2025-06-01', 4);"
        " UPDATE m SET v = 20 WHERE id = 2; DELETE FROM m WHERE id = 1"
    )
    run = sync(db, target)
    assert {m["stream"] for m in run.of_type("RECORD")} == {"public-m"}
    assert target.rows("public-m") == pg_rows(
        db, "SELECT id, at::text AS at, v FROM m ORDER BY id, at"
    )


def test_table_without_key_needs_replica_identity(db) -> None:
    db.execute("CREATE TABLE nokey (a int, b text)")
    db.execute("INSERT INTO nokey VALUES (1, 'one')")
    # Discovery offers it as FULL_TABLE; set to LOG_BASED, it is refused until it can be captured.
    catalog = set_method(discover(db.config()), "LOG_BASED", "public-nokey")
    run = run_tap(db.config(), catalog=catalog)
    assert run.returncode != 0
    assert "REPLICA IDENTITY FULL" in run.stderr
    assert "nokey" in run.stderr
    # Nothing was created for a run that refused to start.
    assert db.execute("SELECT count(*) FROM pg_publication")[0][0] == 0
    assert (
        db.execute("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()")[
            0
        ][0]
        == 0
    )

    db.execute("ALTER TABLE nokey REPLICA IDENTITY FULL")
    first = run_tap(db.config(), catalog=catalog).check()
    assert first.records() and first.records()[0]["a"] == 1
    db.execute(
        "INSERT INTO nokey VALUES (2, 'two'); UPDATE nokey SET b = 'uno' WHERE a = 1;"
        " DELETE FROM nokey WHERE a = 2"
    )
    run = run_tap(db.config(), catalog=catalog, state=first.final_state).check()
    got = [(r["a"], r.get("b"), bool(r["_sdc_deleted_at"])) for r in run.records()]
    # Without a key, the UPDATE is the old row's deletion followed by the new row.
    assert got == [(2, "two", False), (1, "one", True), (1, "uno", False), (2, "two", True)]


def test_every_type_is_the_same_from_the_log_as_from_the_snapshot(db) -> None:
    create_types_table(db.execute)
    first = run_tap(db.config()).check()
    snap = {r["id"]: r for r in first.records()}
    insert_types_row(db.execute, "all_types", 3)
    db.execute("INSERT INTO all_types (id) VALUES (4)")
    run = run_tap(db.config(), state=first.final_state).check()
    log = {r["id"]: r for r in run.records()}
    assert mismatches(log[3]) == []
    assert schema_violations(first.raw_lines) == schema_violations(run.raw_lines) == []
    names = ["id"] + [c[0] for c in CASES]
    assert {k: log[3][k] for k in names if k != "id"}.keys() == {
        k: snap[1][k] for k in names if k != "id"
    }.keys()
    assert mismatches(log[3]) == mismatches(snap[1]) == []
    assert all(log[4][name] is None for name, _, _, _ in CASES)


def test_idle_database_ends_the_run_promptly(db) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    first = run_tap(db.config()).check()
    started = time.monotonic()
    run = run_tap(db.config(), state=first.final_state).check()
    assert time.monotonic() - started < 15
    assert run.records() == []


def test_max_run_seconds_bounds_a_busy_run(db) -> None:
    db.execute("CREATE TABLE t (id serial PRIMARY KEY, v int)")
    first = run_tap(db.config()).check()
    # A backlog larger than a second's reading: the run stops at its time limit at a
    # transaction boundary.
    for _ in range(100):
        db.execute("INSERT INTO t (v) SELECT g FROM generate_series(1, 5000) g")
    run = run_tap(db.config(max_run_seconds=1), state=first.final_state).check()
    assert 0 < len(run.records()) < 500_000
    assert len(run.records()) % 5000 == 0
    rest = run_tap(db.config(), state=run.final_state).check()
    assert len(run.records()) + len(rest.records()) == 500_000


def test_stream_added_later_gets_its_own_snapshot(db) -> None:
    db.execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")
    db.execute("INSERT INTO a VALUES (1); INSERT INTO b VALUES (1), (2)")
    catalog = discover(db.config())
    target = MemoryTarget()
    only_a = select_streams(catalog, {"public-a"})
    run = run_tap(db.config(), catalog=only_a).check()
    target.apply(run.messages)
    assert {m["stream"] for m in run.of_type("RECORD")} == {"public-a"}
    db.execute("INSERT INTO a VALUES (2); INSERT INTO b VALUES (3)")
    both = select_streams(catalog, None)
    run = run_tap(db.config(), catalog=both, state=target.state).check()
    target.apply(run.messages)
    assert target.rows("public-a") == [{"id": 1}, {"id": 2}]
    assert target.rows("public-b") == [{"id": 1}, {"id": 2}, {"id": 3}]
    published = db.execute("SELECT tablename FROM pg_publication_tables ORDER BY 1")
    assert published == [("a",), ("b",)]
    db.execute("INSERT INTO b VALUES (4)")
    run = run_tap(db.config(), catalog=both, state=target.state).check()
    target.apply(run.messages)
    assert target.rows("public-b")[-1] == {"id": 4}


def test_two_taps_on_one_database_do_not_interfere(db) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    one = db.config(slot_name="tap_one", publication_name="pub_one")
    two = db.config(slot_name="tap_two", publication_name="pub_two")
    s1 = run_tap(one).check().final_state
    s2 = run_tap(two).check().final_state
    db.execute("INSERT INTO t SELECT generate_series(1, 5)")
    r1 = run_tap(one, state=s1).check()
    assert len(r1.records()) == 5
    r2 = run_tap(two, state=s2).check()
    assert len(r2.records()) == 5
    slots = dict(
        db.execute("SELECT slot_name, confirmed_flush_lsn::text FROM pg_replication_slots")
    )
    assert slots["tap_one"] == s1["bookmarks"]["public-t"]["lsn"]
    assert slots["tap_two"] == s2["bookmarks"]["public-t"]["lsn"]


def _schema_before_first_record(run: TapRun, stream: str) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    for message in run.messages:
        if message.get("stream") != stream:
            continue
        if message["type"] == "SCHEMA":
            schema = message["schema"]["properties"]
        elif message["type"] == "RECORD":
            return schema
    raise AssertionError(f"no record for {stream}")


def test_column_added_after_a_pinned_catalog_reaches_schema_and_records(db) -> None:
    db.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
    db.execute("INSERT INTO customers VALUES (1, 'a')")
    catalog = discover(db.config())  # discovered once, reused: what Meltano does when it caches
    first = run_tap(db.config(), catalog=catalog).check()
    db.execute("ALTER TABLE customers ADD COLUMN tier text")
    db.execute("INSERT INTO customers VALUES (2, 'b', 'silver')")
    run = run_tap(db.config(), catalog=catalog, state=first.final_state).check()
    assert "tier" in _schema_before_first_record(run, "public-customers")
    assert run.records() == [
        {
            "id": 2,
            "name": "b",
            "tier": "silver",
            "_sdc_lsn": run.records()[0]["_sdc_lsn"],
            "_sdc_deleted_at": None,
        }
    ]
    # A fresh target fed the pinned catalog from scratch also gets the column in the snapshot.
    fresh = run_tap(
        db.config(slot_name="fresh_slot", publication_name="fresh_pub"), catalog=catalog
    ).check()
    assert {r["id"]: r.get("tier") for r in fresh.records()} == {1: None, 2: "silver"}
    assert "tier" in _schema_before_first_record(fresh, "public-customers")


def test_deselected_column_stays_hidden_across_schema_changes(db) -> None:
    db.execute("CREATE TABLE people (id int PRIMARY KEY, name text, ssn text)")
    db.execute("INSERT INTO people VALUES (1, 'ann', '123')")
    catalog = select_streams(discover(db.config()), {"public-people"})
    for item in catalog["streams"][0]["metadata"]:
        if item["breadcrumb"] == ["properties", "ssn"]:
            item["metadata"]["selected"] = False
    first = run_tap(db.config(), catalog=catalog).check()
    db.execute("ALTER TABLE people ADD COLUMN email text")
    db.execute("INSERT INTO people VALUES (2, 'bob', '456', 'bob@example.com')")
    db.execute("ALTER TABLE people ADD COLUMN age int")
    db.execute("INSERT INTO people VALUES (3, 'cy', '789', 'cy@example.com', 30)")
    run = run_tap(db.config(), catalog=catalog, state=first.final_state).check()
    for message in run.of_type("SCHEMA"):
        assert "ssn" not in message["schema"]["properties"]
    assert "email" in run.of_type("SCHEMA")[-1]["schema"]["properties"]
    records = {r["id"]: r for r in run.records()}
    assert all("ssn" not in r for r in records.values())
    assert records[2]["email"] == "bob@example.com" and records[3]["age"] == 30


@pytest.mark.parametrize("inclusion", ["automatic", "available"])
def test_deselecting_what_deletes_depend_on_keeps_it(db, inclusion: str) -> None:
    """_sdc_deleted_at, _sdc_lsn and the key stay in the records whatever the catalog selects.

    Discovery marks them `inclusion: automatic`; a catalog that deselects them (and even one
    that sets them `available`) still gets them, so a delete never arrives as a row of NULLs.
    """
    db.execute("CREATE TABLE kept (id int PRIMARY KEY, a text, b text)")
    db.execute("INSERT INTO kept VALUES (1, 'x', 'y'), (2, 'p', 'q')")
    catalog = select_streams(discover(db.config()), {"public-kept"})
    (stream,) = [s for s in catalog["streams"] if s["tap_stream_id"] == "public-kept"]
    required = {"_sdc_deleted_at", "_sdc_lsn", "id"}
    for item in stream["metadata"]:
        name = item["breadcrumb"][-1] if item["breadcrumb"] else None
        if name in required:
            assert item["metadata"]["inclusion"] == "automatic", name
            item["metadata"].update(selected=False, inclusion=inclusion)
        if name == "b":  # an ordinary property: deselection is honoured
            item["metadata"]["selected"] = False
    first = run_tap(db.config(), catalog=catalog).check()
    assert [sorted(r) for r in first.records()] == [["_sdc_deleted_at", "_sdc_lsn", "a", "id"]] * 2
    db.execute("DELETE FROM kept WHERE id = 2")
    run = run_tap(db.config(), catalog=catalog, state=first.final_state).check()
    (deleted,) = run.records()
    assert deleted["id"] == 2 and deleted["_sdc_deleted_at"] and deleted["_sdc_lsn"] > 0
    assert "b" not in deleted
