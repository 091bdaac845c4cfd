"""FULL_TABLE snapshots against a real server: exact values, chunks, resume, identifiers."""

from __future__ import annotations

from tests.conformance import schema_violations
from tests.tap_runner import discover, run_tap, select_streams
from tests.type_cases import create_types_table, mismatches


def test_every_type_round_trips_exactly(db) -> None:
    create_types_table(db.execute)
    run = run_tap(db.config()).check()
    records = {r["id"]: r for r in run.records("public-all_types")}
    assert set(records) == {1, 2}
    assert mismatches(records[1]) == []
    assert schema_violations(run.raw_lines) == []
    # The all-NULL row: every column present and null, never missing.
    assert all(records[2][name] is None for name in records[2] if name not in ("id", "_sdc_lsn"))
    assert records[1]["_sdc_deleted_at"] is None
    assert isinstance(records[1]["_sdc_lsn"], int)


def test_output_messages_in_order(db) -> None:
    db.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    db.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 3) g")
    run = run_tap(db.config()).check()
    kinds = [m["type"] for m in run.messages]
    assert kinds[0] in ("STATE", "SCHEMA")
    first_schema = kinds.index("SCHEMA")
    first_record = kinds.index("RECORD")
    assert first_schema < first_record
    assert kinds[-1] == "STATE"
    assert [r["name"] for r in run.records()] == ["item 1", "item 2", "item 3"]
    schema = run.of_type("SCHEMA")[0]
    assert schema["stream"] == "public-items"
    assert schema["key_properties"] == ["id"]


def test_analyzed_table_with_float_columns(db) -> None:
    """The first chunk is sized from the table's statistics, read on a connection that reads
    float8 as text (a table with such a column): the size must still parse."""
    db.execute("CREATE TABLE floats (id int PRIMARY KEY, x double precision, r real)")
    db.execute("INSERT INTO floats SELECT g, g / 3.0, g / 7.0 FROM generate_series(1, 300) g")
    db.execute("ANALYZE floats")
    run = run_tap(db.config(snapshot_chunk_size=100)).check()
    assert [r["id"] for r in run.records("public-floats")] == list(range(1, 301))


def test_chunked_snapshot_resumes_after_last_chunk(db) -> None:
    db.execute("CREATE TABLE big (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 2500) g")
    config = db.config(snapshot_chunk_size=1000)
    full = run_tap(config).check()
    ids = [r["id"] for r in full.records("public-big")]
    assert ids == list(range(1, 2501))
    # One state per chunk (plus the final one), each saying where to resume.
    progress = [
        s["bookmarks"]["public-big"]["snapshot"]["after"]
        for s in full.states
        if "snapshot" in s.get("bookmarks", {}).get("public-big", {})
    ]
    assert progress[:2] == [["1000"], ["2000"]]
    final = full.final_state["bookmarks"]["public-big"]
    assert "snapshot" not in final and "lsn" in final

    # Interrupted after the first chunk: the next run starts after row 1000, not over.
    interrupted = next(
        s
        for s in full.states
        if s.get("bookmarks", {}).get("public-big", {}).get("snapshot", {}).get("after") == ["1000"]
    )
    resumed = run_tap(config, state=interrupted).check()
    assert [r["id"] for r in resumed.records("public-big")] == list(range(1001, 2501))
    assert "snapshot" not in resumed.final_state["bookmarks"]["public-big"]
    # The log position stays the consistent point of the first chunk.
    assert (
        resumed.final_state["bookmarks"]["public-big"]["lsn"]
        >= interrupted["bookmarks"]["public-big"]["snapshot"]["lsn"]
    )


def test_composite_key_chunks_in_key_order(db) -> None:
    db.execute("CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b))")
    db.execute("INSERT INTO pairs SELECT g % 7, 'k' || (g % 13), g FROM generate_series(1, 91) g")
    run = run_tap(db.config(snapshot_chunk_size=5)).check()
    keys = [(r["a"], r["b"]) for r in run.records()]
    assert len(keys) == 91 and len(set(keys)) == 91
    assert keys == sorted(keys)


def test_table_without_key_and_views_are_read_in_full(db) -> None:
    db.execute(
        """
        CREATE TABLE logs (at timestamptz, msg text);
        ALTER TABLE logs REPLICA IDENTITY FULL;
        INSERT INTO logs SELECT '2024-01-01'::timestamptz + g * interval '1 minute', 'm' || g
            FROM generate_series(1, 250) g;
        CREATE TABLE t (id int PRIMARY KEY, n int);
        INSERT INTO t SELECT g, g * 2 FROM generate_series(1, 20) g;
        CREATE VIEW doubled AS SELECT id, n * 2 AS n4 FROM t;
        CREATE MATERIALIZED VIEW total AS SELECT sum(n) AS s FROM t;
        """
    )
    run = run_tap(db.config(snapshot_chunk_size=100)).check()
    assert len(run.records("public-logs")) == 250
    assert sorted(r["n4"] for r in run.records("public-doubled")) == [g * 4 for g in range(1, 21)]
    assert run.records("public-total") == [{"s": 420}]
    # Views are FULL_TABLE: read again in full on the next run.
    again = run_tap(db.config(), state=run.final_state).check()
    assert len(again.records("public-doubled")) == 20
    assert again.records("public-t") == []


def test_identifier_edge_cases(db) -> None:
    db.execute(
        'CREATE SCHEMA "Mixed Schema";'
        ' CREATE TABLE "Mixed Schema"."Order ""Lines""" ("Line Id" int, "Ключ" text,'
        ' "select" int, PRIMARY KEY ("Line Id", "Ключ"));'
        ' INSERT INTO "Mixed Schema"."Order ""Lines""" SELECT g, \'é\' || g, g FROM generate_series(1, 30) g;'
    )
    run = run_tap(db.config(snapshot_chunk_size=7)).check()
    records = run.records('Mixed Schema-Order "Lines"')
    assert len(records) == 30
    assert {r["Line Id"] for r in records} == set(range(1, 31))
    assert records[0]["Ключ"] == "é1" and records[0]["select"] == 1


def test_column_selection_is_honoured(db) -> None:
    db.execute("CREATE TABLE people (id int PRIMARY KEY, name text, ssn text)")
    db.execute("INSERT INTO people VALUES (1, 'ann', '123-45-6789')")
    catalog = select_streams(discover(db.config()), {"public-people"})
    stream = catalog["streams"][0]
    for item in stream["metadata"]:
        if item["breadcrumb"] == ["properties", "ssn"]:
            item["metadata"]["selected"] = False
    run = run_tap(db.config(), catalog=catalog).check()
    assert run.records() == [
        {"id": 1, "name": "ann", "_sdc_lsn": run.records()[0]["_sdc_lsn"], "_sdc_deleted_at": None}
    ]
    schema = run.of_type("SCHEMA")[0]["schema"]
    assert "ssn" not in schema["properties"]


def test_stream_maps_apply(db) -> None:
    db.execute("CREATE TABLE people (id int PRIMARY KEY, name text, email text)")
    db.execute("INSERT INTO people VALUES (1, 'ann', 'ann@example.com')")
    config = db.config(stream_maps={"public-people": {"email": None, "name_upper": "name.upper()"}})
    run = run_tap(config).check()
    (record,) = run.records("public-people")
    assert record["name_upper"] == "ANN" and "email" not in record


def test_full_table_chosen_in_metadata_is_honoured(db) -> None:
    """Meltano records the user's method as root metadata `replication-method`."""
    db.execute("CREATE TABLE dims (id int PRIMARY KEY, label text)")
    db.execute("INSERT INTO dims VALUES (1, 'a'), (2, 'b')")
    catalog = select_streams(discover(db.config()), {"public-dims"})
    for item in catalog["streams"][0]["metadata"]:
        if item["breadcrumb"] == []:
            item["metadata"]["replication-method"] = "FULL_TABLE"
    first = run_tap(db.config(), catalog=catalog).check()
    again = run_tap(db.config(), catalog=catalog, state=first.final_state).check()
    assert [r["id"] for r in again.records()] == [1, 2]  # read in full again
    assert db.execute(
        "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
    ) == [(0,)]


def test_percent_in_column_name_with_unchanged_toast(db) -> None:
    db.execute('CREATE TABLE pct ("id%" int PRIMARY KEY, "v%s" text, body text)')
    db.execute("ALTER TABLE pct ALTER COLUMN body SET STORAGE EXTERNAL")
    db.execute("INSERT INTO pct VALUES (1, 'a', repeat('x', 9000))")
    first = run_tap(db.config()).check()
    db.execute('UPDATE pct SET "v%s" = \'b\' WHERE "id%" = 1')
    run = run_tap(db.config(), state=first.final_state).check()
    (record,) = run.records()
    assert record["v%s"] == "b" and record["body"] == "x" * 9000
