"""Large values (issue 13, item 6): the lines written without whole copies are the same records.

Rows of several MB take their own paths: the snapshot writes them without joining a chunk
(snapshot/chunks.py) and renders bytea in SQL; the log writes an insert's line from slices of
its frame (output/rawlines.py); a record built as a dict (a value read back by key) is written a
member at a time (RecordLines.dict_line). Each is compared with the SDK's record path on the
same data, and the target with the source.
"""

from __future__ import annotations

from tap_pgcdc.pg.catalog import load_table
from tap_pgcdc.snapshot import chunks
from tap_pgcdc.snapshot.query import ChunkQuery
from tests.integration.test_cdc import pg_rows
from tests.integration.test_fast_output import assert_same_records, both
from tests.memory_target import MemoryTarget

SETUP = """
CREATE TABLE lv (id int PRIMARY KEY, n int, t text, b bytea, j jsonb, d text);
ALTER TABLE lv ALTER COLUMN t SET STORAGE EXTERNAL;
"""
# Row i: a plain 2 MB text, 1.2 MB of bytea, a jsonb document and a text to escape (quotes,
# backslashes, newlines, non-ASCII), each large; the row after it has the large text only.
INSERT = """
INSERT INTO lv VALUES
  (%(i)s, 0, repeat('abc', 700000) || %(i)s, decode(repeat('0f1e', 600000), 'hex'),
   jsonb_build_object('k', repeat('é"', 300000), 'n', 1.50), repeat(E'q"\\\\\\n é🐘', 200000)),
  (%(i)s + 1, 0, repeat('xyz', 700000) || '"', NULL, NULL, 'small')
"""
SOURCE = "SELECT id, n, t, encode(b, 'hex') AS b, j, d FROM lv ORDER BY id"


def test_large_rows_snapshot_insert_and_read_back(db) -> None:
    db.execute(SETUP)
    db.execute(INSERT, {"i": 1})
    fast, plain = both(db.config())
    assert_same_records(fast, plain, snapshot=True)
    assert max(len(line) for line in fast.raw_lines) > 4_000_000
    target = MemoryTarget().apply(fast.messages)
    db.execute(INSERT, {"i": 3})  # the log's inserts: every value in the frame
    db.execute("UPDATE lv SET n = 1 WHERE id IN (1, 2)")  # t not sent: read back by key
    db.execute("UPDATE lv SET n = 2, d = d || '!' WHERE id = 3")
    # A key change: its large frame (the new d) is decoded, its t read back by the new key.
    db.execute("UPDATE lv SET id = 10 WHERE id = 3; DELETE FROM lv WHERE id = 4")
    fast, plain = both(db.config(), state=fast.final_state)
    assert_same_records(fast, plain)
    records = fast.records("public-lv")
    assert [(r["id"], bool(r["_sdc_deleted_at"])) for r in records] == [
        (3, False),
        (4, False),
        (1, False),
        (2, False),
        (3, False),
        (3, True),
        (10, False),
        (4, True),
    ]
    # The second record of row 3 finds no row 3 when t is read back (its key changed later in
    # the log): t is left out, never NULL; the row under its new key carries it.
    assert "t" not in records[4]
    kept = [r for i, r in enumerate(records) if not r["_sdc_deleted_at"] and i != 4]
    assert all(len(r["t"]) > 2_000_000 for r in kept)
    assert len(records[-2]["d"]) > 1_000_000
    target.apply(fast.messages)
    assert target.rows("public-lv") == pg_rows(db, SOURCE)


def test_chunks_of_large_rows_hold_about_the_byte_budget(db, monkeypatch) -> None:
    """Chunk sizes follow the rows' size: from the statistics first, then from each chunk."""
    db.execute("CREATE TABLE sized (id int PRIMARY KEY, v text)")
    db.execute("ALTER TABLE sized ALTER COLUMN v SET STORAGE EXTERNAL")  # its size, uncompressed
    db.execute("INSERT INTO sized SELECT g, repeat('v', 10) FROM generate_series(1, 50) g")
    db.execute("INSERT INTO sized SELECT g, repeat('w', 3000) FROM generate_series(51, 80) g")
    db.execute("INSERT INTO sized SELECT g, 'x' FROM generate_series(81, 200) g")
    monkeypatch.setattr(chunks, "_CHUNK_BYTES", 10_000)
    conn = db.connect()
    try:
        oid = db.execute("SELECT 'sized'::regclass::oid")[0][0]
        query = ChunkQuery(load_table(conn, oid), ("to_json(src)::text",), 40)
        sizes = [len(rows) for rows in chunks._sized_chunks(conn, query, None)]
        ids = [row[-1] for rows in chunks._sized_chunks(conn, query, None) for row in rows]
        db.execute("ANALYZE sized")  # now the statistics size the first chunk
        first = next(chunks._sized_chunks(conn, query, None))
    finally:
        conn.close()
    assert ids == list(range(1, 201))
    # 40 rows (small: the configured size), then 40 with the 3 kB rows among them (the size
    # follows the chunk before), then 3 (10 000 bytes of 3 kB rows), then 40 again.
    assert sizes == [40, 40, 3, 40, 40, 37]
    assert len(first) < 40  # about 10 000 bytes over the table's average row
