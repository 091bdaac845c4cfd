"""Unchanged TOAST values read back in batches (issue 13, item 5), against a real server.

Without REPLICA IDENTITY FULL the log does not resend an unchanged TOASTed value; the tap holds
a transaction's records of the stream and reads the values back by key, one query per batch
(tap_pgcdc/output/readback.py). These tests check what batching could break: the log order of
a stream's records (a `seq` column set from a sequence by every change gives it), a row updated
twice or deleted later in the same transaction, a key change, multi-column keys, batch
boundaries inside a big transaction (the batch size starts at one and grows to 1000), records of
other streams and of the fast path in between, a new SCHEMA and a TRUNCATE in the middle, STATE
only at transaction boundaries, and the target compared with the source after each run.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_cdc import pg_rows
from tests.memory_target import MemoryTarget
from tests.tap_runner import TapRun, run_tap

BODY = "repeat(md5(id::text), 100)"  # 3200 characters: stored out of line (STORAGE EXTERNAL)


def sync(db, target: MemoryTarget, env: dict[str, str] | None = None) -> TapRun:
    run = run_tap(db.config(state_interval_seconds=0), state=target.state, env=env).check()
    target.apply(run.messages)
    return run


def stream_messages(run: TapRun, stream: str) -> list[dict[str, Any]]:
    return [m for m in run.messages if m.get("type") == "RECORD" and m["stream"] == stream]


def assert_state_between_transactions(run: TapRun) -> None:
    """No STATE between two records of one transaction (records carry their commit LSN)."""
    last_lsn = None
    state_since = False
    for message in run.messages:
        if message["type"] == "STATE":
            state_since = True
        elif message["type"] == "RECORD":
            lsn = message["record"]["_sdc_lsn"]
            assert not (state_since and lsn == last_lsn), "a STATE split a transaction"
            last_lsn, state_since = lsn, False


def assert_log_order(records: list[dict[str, Any]]) -> None:
    """Every record that carries `seq` comes after the records of earlier changes."""
    seqs = [r["seq"] for r in records if "seq" in r and r["seq"] is not None]
    assert seqs, "no record carries seq"
    assert seqs == sorted(seqs), "records of the stream out of log order"
    assert len(set(seqs)) == len(seqs)


@pytest.mark.parametrize("fast", ["1", "0"], ids=["fast-output", "sdk-output"])
def test_big_transaction_keeps_order_and_values(db, fast: str) -> None:
    db.execute(
        f"""
        CREATE SEQUENCE s;
        CREATE TABLE big (id int PRIMARY KEY, seq bigint, body text);
        ALTER TABLE big ALTER COLUMN body SET STORAGE EXTERNAL;
        CREATE TABLE other (id int PRIMARY KEY, v text);
        INSERT INTO big SELECT g, nextval('s'), NULL FROM generate_series(1, 2500) g;
        UPDATE big SET body = {BODY};
        """
    )
    env = {"TAP_PGCDC_FAST_OUTPUT": fast}
    target = MemoryTarget()
    sync(db, target, env)
    db.execute(
        """
        BEGIN;
        UPDATE big SET seq = nextval('s') WHERE id <= 1500;
        INSERT INTO other SELECT g, 'o' || g FROM generate_series(1, 20) g;
        INSERT INTO big SELECT g, nextval('s'), 'small' FROM generate_series(3001, 3010) g;
        UPDATE big SET seq = nextval('s') WHERE id BETWEEN 1001 AND 2500;
        UPDATE big SET seq = nextval('s'), body = 'changed' || id WHERE id = 7;
        DELETE FROM big WHERE id = 8;
        UPDATE big SET id = 5009, seq = nextval('s') WHERE id = 9;
        UPDATE other SET v = 'later' WHERE id = 1;
        COMMIT;
        UPDATE big SET seq = nextval('s') WHERE id IN (10, 11);
        """
    )
    run = sync(db, target, env)
    assert_state_between_transactions(run)
    records = [m["record"] for m in stream_messages(run, "public-big")]
    # Updates of ids 1..1500, 10 inserts, updates of 1001..2500, 7, the deletion of 8, the key
    # change of 9 (deletion + row), then 10 and 11 in their own transaction.
    assert len(records) == 1500 + 10 + 1500 + 1 + 1 + 2 + 2
    assert_log_order(records)
    assert all(r.get("body", "absent") is not None for r in records), "a value emitted as NULL"
    by_id: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        by_id.setdefault(record["id"], []).append(record)
    original = dict(db.execute(f"SELECT id, {BODY} FROM generate_series(1, 2500) id"))
    for i in (1, 1000, 1001, 1500, 1501, 2500, 10):
        assert all(r["body"] == original[i] for r in by_id[i]), f"id {i}: body read back wrong"
    assert [r["seq"] for r in by_id[1200]] == sorted(r["seq"] for r in by_id[1200])
    assert len(by_id[1200]) == 2, "a row updated twice in one transaction: two records"
    # Updated twice, its body changed by the second update: the first record reads the current
    # value (converges), never NULL.
    assert [r["body"] for r in by_id[7]] == ["changed7"] * 2
    # Updated, then deleted in the same transaction: the row is gone when read back, so the
    # update's record leaves the body out, and the deletion follows it.
    update_8, delete_8 = by_id[8]
    assert "body" not in update_8 and not update_8["_sdc_deleted_at"]
    assert delete_8["_sdc_deleted_at"]
    # The key change: the update before it finds no row 9 (body left out), then the old key's
    # deletion, then the new key's row, its body read back by the new key.
    update_9, delete_9 = by_id[9]
    assert "body" not in update_9 and delete_9["_sdc_deleted_at"]
    assert [r["body"] for r in by_id[5009]] == [original[9]]
    assert records.index(delete_9) + 1 == records.index(by_id[5009][0])
    assert [r["body"] for r in by_id[3001]] == ["small"]
    assert target.rows("public-big") == pg_rows(db, "SELECT * FROM big ORDER BY id")
    assert target.rows("public-other") == pg_rows(db, "SELECT * FROM other ORDER BY id")


def test_multi_column_keys_are_matched_by_position(db) -> None:
    """Keys of several types (text with quotes and commas, timestamptz, numeric) read back."""
    db.execute(
        """
        CREATE SEQUENCE s;
        CREATE TABLE mk (a text, b timestamptz, c numeric(8,2), seq bigint, body text,
                         PRIMARY KEY (a, b, c));
        ALTER TABLE mk ALTER COLUMN body SET STORAGE EXTERNAL;
        INSERT INTO mk SELECT 'k "' || g % 7 || '", {x}', '2024-03-01 12:00+05'::timestamptz
                              + g * interval '1 hour', g / 3.0, nextval('s'),
                              repeat(md5(g::text), 100)
        FROM generate_series(1, 300) g;
        """
    )
    target = MemoryTarget()
    sync(db, target)
    db.execute(
        """
        SET TIME ZONE 'America/Sao_Paulo';
        BEGIN;
        UPDATE mk SET seq = nextval('s') WHERE c < 50;
        UPDATE mk SET seq = nextval('s') WHERE c < 10;
        DELETE FROM mk WHERE c BETWEEN 5 AND 6;
        COMMIT;
        UPDATE mk SET seq = nextval('s') WHERE c > 90;
        """
    )
    run = sync(db, target)
    assert_state_between_transactions(run)
    records = run.records("public-mk")
    assert_log_order(records)
    bodies = dict(db.execute("SELECT c::text, body FROM mk"))  # c alone is unique here
    updated = [r for r in records if not r["_sdc_deleted_at"]]
    assert len(updated) == 149 + 29 + 30
    assert len(records) - len(updated) == 4
    for record in updated:
        key = f"{record['c']:.2f}"
        if key in bodies:
            assert record["body"] == bodies[key]
        else:  # deleted later in the transaction: left out, never NULL
            assert "body" not in record
    # The target's timestamps are ISO text: compare them as the server writes them in UTC.
    got = {
        (r["a"], r["b"], f"{r['c']:.2f}"): (r["seq"], r["body"]) for r in target.rows("public-mk")
    }
    want = {
        (a, b, c): (seq, body)
        for a, b, c, seq, body in db.execute(
            "SELECT a, to_char(b AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS+00:00'), c::text,"
            " seq, body FROM mk"
        )
    }
    assert got == want


def test_schema_change_and_truncate_inside_a_transaction(db) -> None:
    """Held records go out before a new SCHEMA of their stream and before its TRUNCATE."""
    db.execute(
        f"""
        CREATE SEQUENCE s;
        CREATE TABLE big (id int PRIMARY KEY, seq bigint, body text);
        ALTER TABLE big ALTER COLUMN body SET STORAGE EXTERNAL;
        INSERT INTO big SELECT g, nextval('s'), NULL FROM generate_series(1, 200) g;
        UPDATE big SET body = {BODY};
        """
    )
    target = MemoryTarget()
    sync(db, target)
    db.execute(
        """
        BEGIN;
        UPDATE big SET seq = nextval('s') WHERE id <= 100;
        ALTER TABLE big ADD COLUMN extra int;
        UPDATE big SET seq = nextval('s'), extra = 1 WHERE id > 100;
        COMMIT;
        BEGIN;
        UPDATE big SET seq = nextval('s') WHERE id <= 50;
        TRUNCATE big;
        INSERT INTO big (id, seq, body, extra) VALUES (1, nextval('s'), 'after', 2);
        COMMIT;
        """
    )
    run = sync(db, target)
    assert_state_between_transactions(run)
    kinds = [
        (m["type"], "extra" in m.get("record", {}))
        for m in run.messages
        if m.get("stream") == "public-big" and m["type"] in ("RECORD", "SCHEMA", "ACTIVATE_VERSION")
    ]
    first = kinds.index(("RECORD", False))
    schema_at = kinds.index(("SCHEMA", False), first)
    # The first transaction's 100 held records (old shape) come before the new SCHEMA.
    assert kinds[first:schema_at] == [("RECORD", False)] * 100
    assert kinds[schema_at + 1 : schema_at + 101] == [("RECORD", True)] * 100
    records = run.records("public-big")
    assert_log_order(records)
    assert all(r.get("body", "absent") is not None for r in records)
    assert target.rows("public-big") == pg_rows(db, "SELECT * FROM big ORDER BY id")
