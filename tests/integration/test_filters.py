"""Server-side column lists and row filters against real servers.

The tap runs as a scheduler runs it (each run fed the state of the one before, into one
in-memory target), and after every run the target must hold exactly the source's rows (the
filter's rows, the selected columns). The default server is PostgreSQL 15, the first with
column lists and row filters; the version-specific parts run on the 12-18 matrix.
"""

from __future__ import annotations

import typing as t

from tests.integration.test_cdc import pg_rows
from tests.memory_target import MemoryTarget
from tests.tap_runner import TapRun, discover, run_tap, select_streams

if t.TYPE_CHECKING:
    from tests.conftest import TestDb


def catalog_for(db: TestDb, stream: str, deselected: t.Collection[str] = ()) -> dict[str, t.Any]:
    catalog = select_streams(discover(db.config()), {stream})
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"][-1:] and item["breadcrumb"][-1] in deselected:
                item["metadata"]["selected"] = False
    return catalog


def sync(db: TestDb, target: MemoryTarget, catalog: dict[str, t.Any], **config: t.Any) -> TapRun:
    run = run_tap(db.config(**config), state=target.state, catalog=catalog).check()
    target.apply(run.messages)
    return run


def assert_equal(db: TestDb, target: MemoryTarget, stream: str, sql: str) -> None:
    assert target.rows(stream) == pg_rows(db, sql)


def published_columns(db: TestDb, table: str) -> list[str] | None:
    """The publication's column list for `table` (None: every column)."""
    (pub,) = db.execute("SELECT pubname FROM pg_publication")
    rows = db.execute(
        "SELECT pr.prattrs IS NULL, pg_get_expr(pr.prqual, pr.prrelid) "
        "FROM pg_publication_rel pr WHERE pr.prrelid = %s::regclass",
        (table,),
    )
    assert rows, f"{table} is not in publication {pub[0]}"
    if rows[0][0]:
        return None
    (attnames,) = db.execute(
        "SELECT attnames FROM pg_publication_tables WHERE tablename = %s", (table,)
    )[0]
    return list(attnames)


def activations(run: TapRun, stream: str) -> int:
    return sum(1 for m in run.of_type("ACTIVATE_VERSION") if m["stream"] == stream)


def member_oid(db: TestDb, table: str) -> int:
    return db.execute("SELECT oid FROM pg_publication_rel WHERE prrelid = %s::regclass", (table,))[
        0
    ][0]


# --- column lists -------------------------------------------------------------------------------


def test_column_list_follows_selection_and_never_resnapshots_by_itself(db: TestDb) -> None:
    stream = "public-wide"
    db.execute(
        "CREATE TABLE wide (id int PRIMARY KEY, a text, big text, n int, "
        "g int GENERATED ALWAYS AS (n * 2) STORED)"
    )
    db.execute(
        "INSERT INTO wide SELECT i, 'a' || i, repeat('x', 2000), i FROM generate_series(1, 5) i"
    )
    target = MemoryTarget()
    catalog = catalog_for(db, stream, {"big"})
    sql = "SELECT id, a, n, g FROM wide ORDER BY id"
    sync(db, target, catalog)
    # Generated columns are never listed before PostgreSQL 18: the tap reads them by key.
    assert published_columns(db, "wide") == ["id", "a", "n"]
    assert_equal(db, target, stream, sql)
    member = member_oid(db, "wide")

    db.execute("UPDATE wide SET a = 'changed', big = repeat('y', 2000), n = 40 WHERE id = 1")
    db.execute("INSERT INTO wide VALUES (6, 'six', repeat('z', 2000), 6)")
    db.execute("DELETE FROM wide WHERE id = 2")
    run = sync(db, target, catalog)
    assert activations(run, stream) == 0
    assert all("big" not in r for r in run.records(stream))
    assert_equal(db, target, stream, sql)
    run = sync(db, target, catalog)  # nothing changed: no re-snapshot, same catalog row
    assert activations(run, stream) == 0 and not run.records(stream)
    assert member_oid(db, "wide") == member

    # Selecting the column widens the list: the changes already in the slot lack it, so the
    # stream is snapshotted again, once.
    db.execute("UPDATE wide SET big = 'before' WHERE id = 3")
    catalog = catalog_for(db, stream)
    run = sync(db, target, catalog)
    assert activations(run, stream) == 1
    assert published_columns(db, "wide") is None
    assert_equal(db, target, stream, "SELECT id, a, big, n, g FROM wide ORDER BY id")
    db.execute("UPDATE wide SET big = 'after' WHERE id = 3")
    run = sync(db, target, catalog)
    assert activations(run, stream) == 0
    assert_equal(db, target, stream, "SELECT id, a, big, n, g FROM wide ORDER BY id")

    # Deselecting it again narrows the list: a new catalog row, which is no gap in the
    # publication (the default on_slot_lost = fail would stop the run), and no re-snapshot.
    catalog = catalog_for(db, stream, {"big"})
    run = sync(db, target, catalog)
    assert activations(run, stream) == 0
    assert published_columns(db, "wide") == ["id", "a", "n"]
    db.execute("UPDATE wide SET n = 7, big = 'hidden' WHERE id = 4")
    run = sync(db, target, catalog)
    assert activations(run, stream) == 0
    assert {r["id"]: r["g"] for r in run.records(stream)} == {4: 14}
    assert target.rows(stream)[2]["g"] == 14


def test_replica_identity_columns_are_always_published(db: TestDb) -> None:
    """The user's UPDATE and DELETE keep working: no list that does not cover the identity."""
    db.execute("CREATE TABLE coded (id int PRIMARY KEY, code text NOT NULL, secret text)")
    db.execute("CREATE UNIQUE INDEX coded_code ON coded (code)")
    db.execute("ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code")
    db.execute("CREATE TABLE fully (id int PRIMARY KEY, secret text, v int)")
    db.execute("ALTER TABLE fully REPLICA IDENTITY FULL")
    db.execute("INSERT INTO coded VALUES (1, 'c1', 's'), (2, 'c2', 's')")
    db.execute("INSERT INTO fully VALUES (1, 's', 1), (2, 's', 2)")
    catalog = select_streams(discover(db.config()), {"public-coded", "public-fully"})
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"][-1:] in (["secret"], ["code"]):
                item["metadata"]["selected"] = False
    target = MemoryTarget()
    sync(db, target, catalog)
    # code is the replica identity (and so the stream's key): kept though deselected.
    assert published_columns(db, "coded") == ["id", "code"]
    # Under REPLICA IDENTITY FULL every column is replica identity: no list at all.
    assert published_columns(db, "fully") is None
    db.execute("UPDATE coded SET secret = 'x', id = 10 WHERE code = 'c1'")
    db.execute("DELETE FROM coded WHERE code = 'c2'")
    db.execute("UPDATE fully SET v = 5 WHERE id = 1")
    db.execute("DELETE FROM fully WHERE id = 2")
    run = sync(db, target, catalog)
    assert activations(run, "public-coded") == 0
    assert_equal(db, target, "public-coded", "SELECT id, code FROM coded ORDER BY code")
    assert_equal(db, target, "public-fully", "SELECT id, v FROM fully ORDER BY id")


# --- row filters --------------------------------------------------------------------------------


def test_row_filter_on_snapshot_and_log_moves_rows_in_and_out(db: TestDb) -> None:
    stream = "public-orders"
    db.execute("CREATE TABLE orders (id int PRIMARY KEY, region text NOT NULL, v int)")
    db.execute("ALTER TABLE orders REPLICA IDENTITY FULL")  # so the filter may use region
    db.execute(
        "INSERT INTO orders SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, i "
        "FROM generate_series(1, 10) i"
    )
    config = {"row_filters": {stream: "region = 'eu'"}}
    catalog = catalog_for(db, stream)
    sql = "SELECT id, region, v FROM orders WHERE region = 'eu' ORDER BY id"
    target = MemoryTarget()
    run = sync(db, target, catalog, **config)
    assert {r["id"] for r in run.records(stream)} == {2, 4, 6, 8, 10}
    assert_equal(db, target, stream, sql)

    db.execute("UPDATE orders SET region = 'us' WHERE id = 2")  # out of the filter: a delete
    db.execute("UPDATE orders SET region = 'eu' WHERE id = 3")  # into it: an insert
    db.execute("UPDATE orders SET v = 99 WHERE id = 5")  # outside it: nothing
    db.execute("UPDATE orders SET v = 40 WHERE id = 4")  # inside it: an update
    db.execute("INSERT INTO orders VALUES (11, 'us', 11), (12, 'eu', 12)")
    run = sync(db, target, catalog, **config)
    records = {r["id"]: r for r in run.records(stream)}
    assert set(records) == {2, 3, 4, 12}
    assert records[2]["_sdc_deleted_at"] and not records[3]["_sdc_deleted_at"]
    assert_equal(db, target, stream, sql)


def test_row_filter_on_the_key_moves_rows_with_key_changes(db: TestDb) -> None:
    stream = "public-items"
    db.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 6) i")
    config = {"row_filters": {stream: "id <= 3"}}
    catalog = catalog_for(db, stream)
    sql = "SELECT id, v FROM items WHERE id <= 3 ORDER BY id"
    target = MemoryTarget()
    sync(db, target, catalog, **config)
    assert_equal(db, target, stream, sql)
    db.execute("UPDATE items SET id = 100 WHERE id = 1")  # out: the delete carries the old key
    db.execute("UPDATE items SET id = 0 WHERE id = 5")  # in
    db.execute("DELETE FROM items WHERE id = 2")
    db.execute("DELETE FROM items WHERE id = 6")  # never in the target
    run = sync(db, target, catalog, **config)
    deleted = sorted(r["id"] for r in run.records(stream) if r["_sdc_deleted_at"])
    assert deleted == [1, 2]
    assert_equal(db, target, stream, sql)


def test_changed_row_filter_snapshots_the_stream_again_once(db: TestDb) -> None:
    stream = "public-items"
    db.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 10) i")
    catalog = catalog_for(db, stream)
    target = MemoryTarget()
    steps = [None, "id <= 5", "id <= 8", "id > 2 AND id <= 8", "id > 2 AND id <= 8", None]
    sync(db, target, catalog)  # the first snapshot
    previous: str | None = None
    last_member = member_oid(db, "items")
    for where in steps:
        config = {"row_filters": {stream: where}} if where else {}
        db.execute("UPDATE items SET v = v || '+' WHERE id = 4")
        run = sync(db, target, catalog, **config)
        expected = 0 if where == previous else 1
        assert activations(run, stream) == expected, (previous, where)
        clause = f"WHERE {where}" if where else ""
        assert_equal(db, target, stream, f"SELECT id, v FROM items {clause} ORDER BY id")
        member = member_oid(db, "items")
        if where == previous:  # the same filter again: the publication is left as it is
            assert member == last_member
        previous, last_member = where, member


def refused(db: TestDb, catalog: dict[str, t.Any], **config: t.Any) -> str:
    run = run_tap(db.config(**config), catalog=catalog)
    assert run.returncode != 0, run.stderr[-2000:]
    assert not run.of_type("RECORD")
    # Nothing changed: no slot, no publication.
    assert not db.execute("SELECT 1 FROM pg_replication_slots WHERE database = current_database()")
    assert not db.execute("SELECT 1 FROM pg_publication")
    return run.stderr


def test_filters_the_server_cannot_apply_safely_are_refused_before_anything_changes(
    db: TestDb,
) -> None:
    stream = "public-items"
    db.execute("CREATE TABLE items (id int PRIMARY KEY, region text, v int)")
    db.execute("INSERT INTO items VALUES (1, 'eu', 1)")
    catalog = catalog_for(db, stream)
    # A column outside the replica identity: the application's UPDATEs would fail.
    err = refused(db, catalog, row_filters={stream: "region = 'eu'"})
    assert "not part of the replica identity" in err and "REPLICA IDENTITY FULL" in err
    assert "Fix:" in err
    db.execute("UPDATE items SET v = 2")  # and the user's writes still work
    # --test reports it too, and changes nothing either.
    run = run_tap(
        db.config(row_filters={stream: "region = 'eu'"}), catalog=catalog, args=["--test"]
    )
    assert run.returncode == 1 and "not part of the replica identity" in run.stderr
    assert not db.execute("SELECT 1 FROM pg_publication")
    ok = run_tap(db.config(row_filters={stream: "id > 0"}), catalog=catalog, args=["--test"])
    assert ok.returncode == 0, ok.stderr[-3000:]
    err = refused(db, catalog, row_filters={stream: "nope > 1"})
    assert 'column "nope" does not exist' in err and "Fix:" in err
    err = refused(db, catalog, row_filters={stream: "id >"})
    assert "syntax error" in err
    err = refused(db, catalog, row_filters={stream: "id > 1); DROP TABLE items; --"})
    assert "';'" in err
    err = refused(db, catalog, row_filters={stream: "random() > 0.5"})
    assert "invalid publication WHERE expression" in err
    assert db.execute("SELECT count(*) FROM items") == [(1,)]


def test_row_filter_of_a_publication_the_tap_does_not_manage(db: TestDb) -> None:
    stream = "public-items"
    db.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 6) i")
    pub = db.config()["publication_name"]
    db.execute(f"CREATE PUBLICATION {pub} FOR TABLE items WHERE (id > 2)")
    catalog = catalog_for(db, stream)
    config = {"create_publication": False}
    run = run_tap(db.config(**config, row_filters={stream: "id > 3"}), catalog=catalog)
    assert run.returncode != 0 and "(id > 2)" in run.stderr and "Fix:" in run.stderr
    target = MemoryTarget()
    sync(db, target, catalog, **config, row_filters={stream: "id > 2"})
    sql = "SELECT id, v FROM items WHERE id > 2 ORDER BY id"
    assert_equal(db, target, stream, sql)
    db.execute("UPDATE items SET id = -6 WHERE id = 6")
    db.execute("INSERT INTO items VALUES (7, 'seven'), (0, 'zero')")
    sync(db, target, catalog, **config, row_filters={stream: "id > 2"})
    assert_equal(db, target, stream, sql)


def test_partitioned_table_with_column_list_and_row_filter(db: TestDb) -> None:
    stream = "public-events"
    db.execute(
        "CREATE TABLE events (id int, day date, body text, PRIMARY KEY (id, day)) "
        "PARTITION BY RANGE (day)"
    )
    db.execute(
        "CREATE TABLE events_a PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')"
    )
    db.execute(
        "CREATE TABLE events_b PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"
    )
    db.execute(
        "INSERT INTO events SELECT i, DATE '2024-06-01' + i * 30, 'b' FROM generate_series(1, 12) i"
    )
    config = {"row_filters": {stream: "id % 2 = 0"}}
    catalog = catalog_for(db, stream, {"body"})
    sql = "SELECT id, day::text AS day FROM events WHERE id % 2 = 0 ORDER BY id, day"
    target = MemoryTarget()
    sync(db, target, catalog, **config)
    assert published_columns(db, "events") == ["id", "day"]
    db.execute("UPDATE events SET body = 'c', id = id + 100 WHERE id IN (2, 3)")
    db.execute("UPDATE events SET day = DATE '2025-03-01' WHERE id = 4")  # to another partition
    db.execute("DELETE FROM events WHERE id = 6")
    sync(db, target, catalog, **config)
    rows = [{**r, "day": str(r["day"])} for r in target.rows(stream)]
    assert sorted(rows, key=lambda r: (r["id"], r["day"])) == pg_rows(db, sql)


# --- the version matrix -------------------------------------------------------------------------


def test_filters_on_every_major(vdb: TestDb, pg_major: int) -> None:
    """Before 15: row_filters refused naming the version, deselected columns left out by the tap
    (they travel); from 15: the publication carries the list and the filter."""
    stream = "public-items"
    vdb.execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text, secret text, "
        "g int GENERATED ALWAYS AS (id * 2) STORED)"
    )
    vdb.execute("INSERT INTO items SELECT i, 'v' || i, 's' FROM generate_series(1, 4) i")
    catalog = catalog_for(vdb, stream, {"secret"})
    target = MemoryTarget()
    filters = {"row_filters": {stream: "id > 1"}}
    if pg_major < 15:
        err = refused(vdb, catalog, **filters)
        assert f"PostgreSQL {pg_major} publications have no row filters" in err
        filters = {}
    sync(vdb, target, catalog, **filters)
    where = "WHERE id > 1" if filters else ""
    vdb.execute("UPDATE items SET v = 'new', secret = 'x' WHERE id = 2")
    vdb.execute("INSERT INTO items VALUES (5, 'v5', 's')")
    run = sync(vdb, target, catalog, **filters)
    assert run.records(stream) and all("secret" not in r for r in run.records(stream))
    assert_equal(vdb, target, stream, f"SELECT id, v, g FROM items {where} ORDER BY id")
    if pg_major >= 15:
        # PostgreSQL 18 publishes stored generated columns; before, the tap reads them by key.
        listed = ["id", "v", "g"] if pg_major >= 18 else ["id", "v"]
        assert published_columns(vdb, "items") == listed


def test_a_for_all_tables_publication_takes_no_filters(db: TestDb) -> None:
    stream = "public-items"
    db.execute("CREATE TABLE items (id int PRIMARY KEY, v text, secret text)")
    db.execute("INSERT INTO items VALUES (1, 'a', 's'), (2, 'b', 's')")
    db.execute(f"CREATE PUBLICATION {db.config()['publication_name']} FOR ALL TABLES")
    catalog = catalog_for(db, stream, {"secret"})
    run = run_tap(db.config(row_filters={stream: "id > 1"}), catalog=catalog)
    assert run.returncode != 0 and "FOR ALL TABLES" in run.stderr and "Fix:" in run.stderr
    assert not db.execute("SELECT 1 FROM pg_replication_slots WHERE database = current_database()")
    # Without row_filters it is used as it is: every column travels, the tap drops `secret`.
    target = MemoryTarget()
    sync(db, target, catalog)
    db.execute("UPDATE items SET v = 'c', secret = 't' WHERE id = 2")
    run = sync(db, target, catalog)
    assert activations(run, stream) == 0
    assert [sorted(r) for r in run.records(stream)] == [["_sdc_deleted_at", "_sdc_lsn", "id", "v"]]
    assert_equal(db, target, stream, "SELECT id, v FROM items ORDER BY id")
    assert db.execute("SELECT puballtables FROM pg_publication") == [(True,)]
