"""Large values (issue 13, item 6): the lines written without whole copies are the same records.

Rows of several MB take their own paths: the snapshot writes them without joining a chunk
(snapshot/chunks.py) and renders bytea in SQL; the log writes an insert's line from slices of
its frame (output/rawlines.py); a record built as a dict (a value read back by key) is written a
member at a time (RecordLines.dict_line). Each is compared with the SDK's record path on the
same data, and the target with the source.
"""

from __future__ import annotations

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
    fast, plain = both(db.config(), state=fast.final_state)
    assert_same_records(fast, plain)
    records = fast.records("public-lv")
    assert [r["id"] for r in records] == [3, 4, 1, 2, 3]
    assert all(len(r["t"]) > 2_000_000 for r in records)
    target.apply(fast.messages)
    assert target.rows("public-lv") == pg_rows(db, SOURCE)
