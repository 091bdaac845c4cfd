"""The core of the integration suite on every supported major: PostgreSQL 12 to 18.

Each test takes `pg_major` (see `--pg-majors` in conftest.py) and runs the real tap against a
server of that major started by the session (binaries: scripts/fetch_postgres.sh). The full
suite runs on the default server (15); here are discovery, the exact value of every type from
the snapshot and from the log, every change kind, partitions, resumed runs, and what differs
between majors:

- PG12 cannot publish a partitioned table (no publish_via_partition_root): its partitions are
  discovered as streams of their own and the parent is not selected by default; selecting the
  parent LOG_BASED is a clear error naming the partitions.
- pg_replication_slots.wal_status exists from PG13, conflicting from PG16, invalidation_reason
  from PG17; the tap reads what the server has.
- pgoutput sends empty BEGIN/COMMIT pairs for transactions that touched no published table
  before PG15; PG15+ skips them. The tap must treat both the same.
- Failover slots (slot_failover) exist from PG17.

The tap speaks pgoutput proto_version 1 on every major: it is the one every supported server
accepts, and nothing the tap does needs more (2 adds streaming of in-progress transactions, 3
two-phase commit, 4 parallel streaming).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg2
import pytest

from tap_pgcdc.replication import slot as slots
from tests.integration.test_cdc import pg_rows, slot_confirmed, sync
from tests.integration.test_schema_fit import checked
from tests.memory_target import MemoryTarget
from tests.pgserver import start_standby
from tests.tap_runner import discover, run_tap, select_streams
from tests.type_cases import CASES, create_types_table, insert_types_row, mismatches


def _streams(catalog: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["tap_stream_id"]: s for s in catalog["streams"]}


def _root(stream: dict[str, Any]) -> dict[str, Any]:
    return next(m["metadata"] for m in stream["metadata"] if m["breadcrumb"] == [])


_DISCOVERY_SQL = """
CREATE TABLE orders (id bigint PRIMARY KEY, note text NOT NULL, amount numeric(12,2));
CREATE TABLE measures (id int, at date, v real, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measures_2024 PARTITION OF measures FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measures_2025 PARTITION OF measures FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100;
CREATE MATERIALIZED VIEW order_count AS SELECT count(*) AS n FROM orders;
"""


@pytest.fixture(scope="session")
def reference_catalog(pg) -> dict[str, dict[str, Any]]:
    """The catalog of the discovery schema on the default server (15), to compare majors with."""
    name = "versions_reference"
    pg.create_database(name)
    try:
        pg.execute(_DISCOVERY_SQL, dbname=name)
        create_types_table(lambda sql, params=None: pg.execute(sql, params, dbname=name))
        config = {"host": pg.host, "port": pg.port, "user": pg.superuser, "database": name}
        return _streams(discover(config))
    finally:
        pg.execute(f'DROP DATABASE "{name}"')


def test_discovery_is_the_same_on_every_major(vdb, pg_major, reference_catalog) -> None:
    vdb.execute(_DISCOVERY_SQL)
    create_types_table(vdb.execute)
    streams = _streams(discover(vdb.config()))
    common = {"public-orders", "public-big_orders", "public-order_count", "public-all_types"}
    for name in common:
        got, want = streams[name], reference_catalog[name]
        assert got["schema"] == want["schema"], name
        assert got["key_properties"] == want["key_properties"], name
        assert _root(got) == _root(want), name
    if pg_major >= 13:
        assert set(streams) == {*common, "public-measures"}
        assert (
            streams["public-measures"]["schema"] == reference_catalog["public-measures"]["schema"]
        )
        assert _root(streams["public-measures"]) == _root(reference_catalog["public-measures"])
    else:
        # PG12 publishes partitions, not their parent: the partitions are the LOG_BASED streams,
        # and the parent is offered as a FULL_TABLE stream that is not selected by default.
        partitions = {"public-measures_2024", "public-measures_2025"}
        assert set(streams) == {*common, "public-measures", *partitions}
        parent = _root(streams["public-measures"])
        assert parent["selected-by-default"] is False
        assert parent["forced-replication-method"] == "FULL_TABLE"
        for name in partitions:
            assert _root(streams[name])["selected-by-default"] is True
            assert streams[name]["key_properties"] == ["id", "at"]


def test_every_type_from_snapshot_and_log(vdb) -> None:
    create_types_table(vdb.execute)
    first = run_tap(vdb.config()).check()
    snap = {r["id"]: r for r in first.records("public-all_types")}
    assert mismatches(snap[1]) == []
    assert all(snap[2][name] is None for name, _, _, _ in CASES)
    insert_types_row(vdb.execute, "all_types", 3)
    vdb.execute("UPDATE all_types SET c_int = 7 WHERE id = 1")
    run = run_tap(vdb.config(), state=first.final_state).check()
    log = {r["id"]: r for r in run.records("public-all_types")}
    assert mismatches(log[3]) == []
    assert mismatches({**log[1], "c_int": 2147483647}) == []
    assert log[1]["c_int"] == 7


def _check_slot_columns(db, pg_major: int) -> None:
    """pg_replication_slots grew columns over the majors; the tap reads what the server has."""
    conn = db.connect()
    try:
        info = slots.get_slot(conn, db.config()["slot_name"])
    finally:
        conn.close()
    assert info is not None and info.plugin == "pgoutput" and not info.temporary
    assert info.wal_status == (None if pg_major < 13 else "reserved")
    assert info.conflicting is (None if pg_major < 16 else False)
    assert info.invalidation_reason is None


def test_changes_truncate_toast_and_resume(vdb, pg_major) -> None:
    # `twice`: pgoutput sends stored generated columns only on 18, where the tap's publication
    # asks (publish_generated_columns = stored); before, the tap reads them by key. They must
    # be right on every major.
    vdb.execute(
        """
        CREATE TABLE acct (id int PRIMARY KEY, owner text, body text,
                           twice int GENERATED ALWAYS AS (id * 2) STORED);
        ALTER TABLE acct ALTER COLUMN body SET STORAGE EXTERNAL;
        CREATE TABLE full_ri (id int PRIMARY KEY, body text);
        ALTER TABLE full_ri ALTER COLUMN body SET STORAGE EXTERNAL;
        ALTER TABLE full_ri REPLICA IDENTITY FULL;
        INSERT INTO acct SELECT g, 'o' || g, repeat('b', 9000) || g FROM generate_series(1, 20) g;
        INSERT INTO full_ri SELECT g, repeat('f', 9000) || g FROM generate_series(1, 5) g;
        """
    )
    target = MemoryTarget()
    sync(vdb, target)
    _check_slot_columns(vdb, pg_major)
    vdb.execute(
        """
        INSERT INTO acct VALUES (21, 'new', 'small');
        UPDATE acct SET owner = 'toast kept' WHERE id IN (1, 2);
        UPDATE full_ri SET id = id + 100 WHERE id = 1;
        UPDATE acct SET id = 100 WHERE id = 3;
        DELETE FROM acct WHERE id = 4;
        """
    )
    run = sync(vdb, target)
    records = run.records("public-acct")
    kept = [r for r in records if r["id"] in (1, 2)]
    assert [r["body"] for r in kept] == [f"{'b' * 9000}1", f"{'b' * 9000}2"]
    moved = [(r["id"], bool(r["_sdc_deleted_at"])) for r in records if r["id"] in (3, 100)]
    assert moved == [(3, True), (100, False)]
    assert target.rows("public-acct") == pg_rows(vdb, "SELECT * FROM acct ORDER BY id")
    assert target.rows("public-full_ri") == pg_rows(vdb, "SELECT * FROM full_ri ORDER BY id")

    vdb.execute("BEGIN; TRUNCATE acct; INSERT INTO acct VALUES (500, 'after', 'x'); COMMIT")
    run = sync(vdb, target)
    assert [m["stream"] for m in run.of_type("ACTIVATE_VERSION")] == ["public-acct"]
    assert target.rows("public-acct") == [{"id": 500, "owner": "after", "body": "x", "twice": 1000}]

    # Resumed: a run from the stored state has nothing new, confirms exactly that state, and a
    # replay from an older state converges to the same table.
    stored = target.state
    assert stored is not None
    again = sync(vdb, target)
    assert again.records() == []
    assert slot_confirmed(vdb) == stored["bookmarks"]["public-acct"]["lsn"]
    vdb.execute("INSERT INTO acct VALUES (501, 'later', 'y')")
    lost = run_tap(vdb.config(), state=stored).check()  # the target drops this output
    assert [r["id"] for r in lost.records()] == [501]
    sync(vdb, target)
    assert target.rows("public-acct") == pg_rows(vdb, "SELECT * FROM acct ORDER BY id")


_PARTITIONED_SQL = """
CREATE TABLE m (id int, at date, v int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO m VALUES (1, '2024-05-01', 1), (2, '2025-05-01', 2);
"""
_PARTITION_CHANGES_SQL = """
INSERT INTO m VALUES (3, '2024-06-01', 3), (4, '2025-06-01', 4);
UPDATE m SET v = 20 WHERE id = 2;
DELETE FROM m WHERE id = 1;
"""


def test_partitioned_tables(vdb, pg_major) -> None:
    vdb.execute(_PARTITIONED_SQL)
    target = MemoryTarget()
    first = sync(vdb, target)
    vdb.execute(_PARTITION_CHANGES_SQL)
    run = sync(vdb, target)
    if pg_major >= 13:
        assert {s["stream"] for s in first.of_type("SCHEMA")} == {"public-m"}
        assert {m["stream"] for m in run.of_type("RECORD")} == {"public-m"}
        assert target.rows("public-m") == pg_rows(
            vdb, "SELECT id, at::text AS at, v FROM m ORDER BY id, at"
        )
        return
    # PG12: by default each partition is its own LOG_BASED stream; the parent is not selected.
    assert {s["stream"] for s in first.of_type("SCHEMA")} == {"public-m_2024", "public-m_2025"}
    for part in ("m_2024", "m_2025"):
        assert target.rows(f"public-{part}") == pg_rows(
            vdb, f"SELECT id, at::text AS at, v FROM {part} ORDER BY id, at"
        )
    # A catalog that asks for the parent LOG_BASED (say, discovered on a newer server) is
    # refused, naming the way out.
    catalog = discover(vdb.config())
    for stream in catalog["streams"]:
        if stream["tap_stream_id"] == "public-m":
            root = _root(stream)
            root.pop("forced-replication-method")
            root["replication-method"] = stream["replication_method"] = "LOG_BASED"
    refused = run_tap(
        vdb.config(slot_name="other_slot", publication_name="other_pub"),
        catalog=select_streams(catalog, {"public-m"}),
    )
    assert refused.returncode != 0
    assert "public.m is a partitioned table, and PostgreSQL 12 cannot publish" in refused.stderr
    assert "public.m_2024, public.m_2025" in refused.stderr
    # As FULL_TABLE (what discovery offers) the parent is read whole.
    whole = run_tap(
        vdb.config(slot_name="other_slot", publication_name="other_pub"),
        catalog=select_streams(discover(vdb.config()), {"public-m"}),
    ).check()
    assert sorted(r["id"] for r in whole.records("public-m")) == [2, 3, 4]


def _peek_kinds(db, slot: str, publication: str) -> list[str]:
    rows = db.execute(
        "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
        "'proto_version', '1', 'publication_names', %s)",
        (slot, publication),
    )
    return [chr(bytes(data)[0]) for (data,) in rows]


def test_transactions_without_published_changes(vdb, pg_major) -> None:
    vdb.execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY)")
    config = vdb.config(filter_tables=["public.t"])
    first = run_tap(config).check()
    vdb.execute("SELECT pg_create_logical_replication_slot('probe', 'pgoutput')")
    vdb.execute("INSERT INTO other SELECT generate_series(1, 100)")
    publication = vdb.config()["publication_name"]
    # The server difference: before 15, pgoutput sends an empty BEGIN/COMMIT pair.
    assert _peek_kinds(vdb, "probe", publication) == ([] if pg_major >= 15 else ["B", "C"])
    vdb.execute("SELECT pg_drop_replication_slot('probe')")
    quiet = run_tap(config, state=first.final_state).check()
    assert quiet.records() == []
    vdb.execute("INSERT INTO t VALUES (1)")
    run = run_tap(config, state=quiet.final_state).check()
    assert [r["id"] for r in run.records()] == [1]


def test_slot_failover(vdb, pg_major) -> None:
    vdb.execute("CREATE TABLE t (id int PRIMARY KEY)")
    vdb.execute("INSERT INTO t VALUES (1)")
    run = run_tap(vdb.config(slot_failover=True))
    slot = vdb.config()["slot_name"]
    if pg_major < 17:
        assert run.returncode != 0
        assert "slot_failover" in run.stderr and "PostgreSQL 17" in run.stderr
        assert vdb.execute("SELECT count(*) FROM pg_replication_slots")[0][0] == 0
        return
    run.check()
    assert vdb.execute(
        "SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ) == [(True,)]
    vdb.execute("INSERT INTO t VALUES (2)")
    again = run_tap(vdb.config(slot_failover=True), state=run.final_state).check()
    assert [r["id"] for r in again.records()] == [2]
    # An existing slot made without failover is not silently used as if it had it.
    other = vdb.config(slot_name="no_failover", slot_failover=True)
    vdb.execute("SELECT pg_create_logical_replication_slot('no_failover', 'pgoutput')")
    refused = run_tap(other)
    assert refused.returncode != 0
    assert "no_failover" in refused.stderr
    assert "ALTER_REPLICATION_SLOT no_failover (FAILOVER true)" in refused.stderr
    # The fix it gives works.
    conn = psycopg2.connect(vdb.server.dsn(vdb.name, replication="database"))
    try:
        conn.autocommit = True
        conn.cursor().execute("ALTER_REPLICATION_SLOT no_failover (FAILOVER true)")
    finally:
        conn.close()
    run_tap(other).check()


def _wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except psycopg2.Error:
            pass  # e.g. the database has not been replayed yet
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_reading_from_a_standby(vdb, pg_major) -> None:
    """PG16+ decodes on a hot standby: the publication comes from the primary, the slot lives on
    the standby (create_publication = false: a standby is read-only)."""
    if pg_major < 16:
        pytest.skip("logical decoding on a standby needs PostgreSQL 16")
    vdb.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');"
        "CREATE PUBLICATION standby_pub FOR TABLE t WITH (publish_via_partition_root = true)"
    )
    standby = start_standby(vdb.server)
    stop = threading.Event()

    def log_standby_snapshots() -> None:
        # A standby creates a slot only after the primary logs its running transactions (every
        # 15 s, and only when busy): ask for it, as an operator would with an idle primary.
        while not stop.wait(0.2):
            vdb.server.execute("SELECT pg_log_standby_snapshot()")

    nudger = threading.Thread(target=log_standby_snapshots, daemon=True)
    nudger.start()
    try:
        _wait_for(
            lambda: standby.execute("SELECT count(*) FROM t", dbname=vdb.name) == [(1,)],
            "the standby to replay the table",
        )
        config = {
            **vdb.config(publication_name="standby_pub", create_publication=False),
            "port": standby.port,
        }
        target = MemoryTarget()
        target.apply(run_tap(config).check().messages)
        assert standby.execute("SELECT pg_is_in_recovery()") == [(True,)]
        assert standby.execute(
            "SELECT slot_type FROM pg_replication_slots WHERE slot_name = %s",
            (config["slot_name"],),
        ) == [("logical",)]
        vdb.execute("INSERT INTO t VALUES (2, 'b'); UPDATE t SET v = 'A' WHERE id = 1")
        primary_lsn = vdb.execute("SELECT pg_current_wal_flush_lsn()")[0][0]
        _wait_for(
            lambda: standby.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (primary_lsn,)
            )[0][0],
            "the standby to replay the changes",
        )
        target.apply(run_tap(config, state=target.state).check().messages)
        assert target.rows("public-t") == [{"id": 1, "v": "A"}, {"id": 2, "v": "b"}]
    finally:
        stop.set()
        nudger.join()
        standby.destroy()


def _converged(db, target: MemoryTarget, stream: str, table: str, run) -> bool:
    """Whether the target holds the source's rows, and whether the run snapshotted again."""
    expected = sorted(pg_rows(db, f"SELECT * FROM {table}"), key=repr)
    columns = list(expected[0]) if expected else []
    held = sorted(({c: r.get(c) for c in columns} for r in target.rows(stream)), key=repr)
    assert held == expected, (stream, run.stderr[-2000:])
    return any(m["stream"] == stream for m in run.of_type("ACTIVATE_VERSION"))


def test_ddl_the_log_cannot_express_on_every_major(vdb, pg_major) -> None:
    """Renames, a column added with a default, a rewrite, a re-created table, partitions."""
    vdb.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int);"
        "INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 20) g;"
        "CREATE TABLE p (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);"
        "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);"
        "CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (10) TO (20);"
        "INSERT INTO p SELECT g, g % 20, 'v' || g FROM generate_series(1, 40) g"
    )
    target = MemoryTarget()
    parent = "public-p" if pg_major >= 13 else "public-p1"
    sync(vdb, target)
    steps = [
        ("ALTER TABLE t RENAME COLUMN v TO w; ALTER TABLE t ADD COLUMN d int DEFAULT 5", True),
        ("ALTER TABLE t ALTER COLUMN w TYPE varchar", False),  # in place: no rewrite
        ("ALTER TABLE t ALTER COLUMN n TYPE bigint USING n * 10", True),
        (
            "DROP TABLE t; CREATE TABLE t (id int PRIMARY KEY, w text); INSERT INTO t VALUES (7, 'x')",
            True,
        ),
    ]
    for ddl, again in steps:
        vdb.execute(ddl)
        vdb.execute("UPDATE t SET id = id + 100 WHERE id = (SELECT min(id) FROM t)")
        run = sync(vdb, target)
        assert _converged(vdb, target, "public-t", "t", run) == again, ddl
    # A partition's TRUNCATE: in the log on PG12 (the partition is the stream), not otherwise.
    vdb.execute("TRUNCATE p1; INSERT INTO p VALUES (1, 1, 'after')")
    run = sync(vdb, target)
    table = "p" if pg_major >= 13 else "p1"
    assert _converged(vdb, target, parent, table, run)


def test_schema_changes_under_a_cached_catalog(vdb) -> None:
    """ALTER TYPE, RENAME of the key column, ADD and DROP in the log, the catalog from before.

    Every RECORD validates against its latest SCHEMA and every SCHEMA's key is among its
    properties (tests/integration/test_schema_fit.py, on every major), under the default replica
    identity and under FULL (whose Relation messages flag every column).
    """
    vdb.execute(
        """
        CREATE TABLE t (id int PRIMARY KEY, a int, b text);
        CREATE TABLE f (id int PRIMARY KEY, a int);
        ALTER TABLE f REPLICA IDENTITY FULL;
        INSERT INTO t VALUES (1, 1, 'x'), (2, 2, 'y'), (3, 3, 'z');
        INSERT INTO f VALUES (1, 1), (2, 2);
        """
    )
    catalog = select_streams(discover(vdb.config()), {"public-t", "public-f"})
    target = MemoryTarget()
    first = checked(run_tap(vdb.config(), catalog=catalog))
    target.apply(first.messages)
    vdb.execute(
        """
        UPDATE t SET a = 20 WHERE id = 2; UPDATE f SET a = 20 WHERE id = 2;
        ALTER TABLE t ALTER COLUMN a TYPE text USING 'x' || a;
        ALTER TABLE t RENAME COLUMN id TO key; ALTER TABLE f RENAME COLUMN id TO key;
        ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT 1; ALTER TABLE t DROP COLUMN b;
        INSERT INTO t VALUES (4, 'four', 4); DELETE FROM t WHERE key = 1;
        DELETE FROM f WHERE key = 1;
        """
    )
    run = checked(run_tap(vdb.config(), catalog=catalog, state=target.state))
    target.apply(run.messages)
    # The renames (and t's rewrite) change rows the log cannot correct: both are snapshotted
    # again (tests/integration/test_schema_changes.py), under their new key.
    for stream in ("public-t", "public-f"):
        last = [m for m in run.of_type("SCHEMA") if m["stream"] == stream][-1]
        assert last["key_properties"] == ["key"], stream
        assert any(m["stream"] == stream for m in run.of_type("ACTIVATE_VERSION")), stream
    assert {r["key"]: r["a"] for r in run.records("public-t")} == {2: "x20", 3: "x3", 4: "four"}
    # After it, a delete in the log carries the new key name.
    vdb.execute("DELETE FROM t WHERE key = 2")
    again = checked(run_tap(vdb.config(), catalog=catalog, state=target.state))
    target.apply(again.messages)
    assert again.of_type("SCHEMA")[0]["key_properties"] == ["key"]
    assert [(r["key"], bool(r["_sdc_deleted_at"])) for r in again.records("public-t")] == [
        (2, True)
    ]
    assert set(target.tables["public-t"].rows) == {(3,), (4,)}
    assert set(target.tables["public-f"].rows) == {(2,)}
