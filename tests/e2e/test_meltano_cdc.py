"""Change capture end to end: snapshot, changes, `meltano run` again; DuckDB equals Postgres.

Each cycle changes Postgres, runs `meltano run tap-pgcdc target-duckdb` and compares every table
row by row (duckdb_compare). The workload is pgbench's own (`pgbench -i` tables and its TPC-B-like
script) plus scripted deletes and primary-key changes; then a target that loses a run's output,
unchanged TOASTed values, and a column added mid-stream.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.conftest import TestDb
from tests.e2e.conftest import Pipeline
from tests.e2e.duckdb_compare import Report

PGBENCH_TABLES = {
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_history",
    "public.pgbench_tellers",
}


def _counts(report: Report) -> dict[str, tuple[int, int]]:
    """Table -> (Postgres rows, DuckDB rows), also printed for the log of the test run."""
    print(report.render())
    return {t.pg_table: (t.pg_count, t.duckdb_count) for t in report.tables}


def _pg_count(db: TestDb, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}")[0][0])


# ---------------------------------------------------------------- pgbench


def _pgbench(db: TestDb, *args: str) -> list[str]:
    server = db.server
    return [
        str(server.bin_dir / "pgbench"),
        "-h",
        server.host,
        "-p",
        str(server.port),
        "-U",
        server.superuser,
        *args,
        db.name,
    ]


def _run_pgbench(db: TestDb, *args: str) -> None:
    proc = subprocess.run(
        _pgbench(db, *args), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"pgbench {' '.join(args)} failed:\n{proc.stderr[-3000:]}"


def _scripted_changes(db: TestDb, cycle: int) -> None:
    """Deletes and primary-key changes that pgbench's own script never makes."""
    base = cycle * 1000
    # Deletes spread over the whole table (~100 rows).
    db.execute("DELETE FROM pgbench_accounts WHERE aid %% 997 = %s", (cycle,))
    # 20 accounts move to new keys in one statement.
    db.execute(
        "UPDATE pgbench_accounts SET aid = aid + 1000000 WHERE aid BETWEEN %s AND %s",
        (base + 1, base + 20),
    )
    # Two accounts swap keys through a third, in one transaction: the log holds
    # delete+insert pairs whose keys the target sees again within the same batch.
    x, y = base + 101, base + 102
    db.execute(
        """
        BEGIN;
        UPDATE pgbench_accounts SET abalance = 111, filler = 'was x' WHERE aid = %(x)s;
        UPDATE pgbench_accounts SET abalance = 222, filler = 'was y' WHERE aid = %(y)s;
        UPDATE pgbench_accounts SET aid = -1 WHERE aid = %(x)s;
        UPDATE pgbench_accounts SET aid = %(x)s WHERE aid = %(y)s;
        UPDATE pgbench_accounts SET aid = %(y)s WHERE aid = -1;
        COMMIT;
        """,
        {"x": x, "y": y},
    )
    # Deleted and inserted again under the same key, in separate transactions.
    db.execute("DELETE FROM pgbench_accounts WHERE aid = %s", (base + 200,))
    db.execute("INSERT INTO pgbench_accounts VALUES (%s, 1, %s, 'reinserted')", (base + 200, cycle))
    # A teller and a new branch change keys (pgbench -i creates no foreign keys).
    db.execute("UPDATE pgbench_tellers SET tid = tid + 100 WHERE tid = %s", (cycle,))
    db.execute("INSERT INTO pgbench_branches VALUES (%s, 0, 'new branch')", (100 + cycle,))
    db.execute("UPDATE pgbench_branches SET bid = bid + 1000 WHERE bid = %s", (100 + cycle,))


def test_pgbench_workload_with_deletes_and_key_changes_mirrors_every_cycle(
    db: TestDb, pipeline: Pipeline
) -> None:
    _run_pgbench(db, "-i", "-s", "1", "-q")
    # pgbench_history has no primary key: the tap requires REPLICA IDENTITY FULL for it.
    # target-duckdb appends keyless records, which mirrors it because pgbench only inserts.
    db.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    _run_pgbench(db, "-n", "-t", "50", "-c", "2")  # some history before the snapshot

    pipeline.run()
    counts = _counts(pipeline.assert_mirrors())
    assert set(counts) == PGBENCH_TABLES
    assert counts["public.pgbench_accounts"] == (100_000, 100_000)
    assert counts["public.pgbench_history"] == (100, 100)

    # Cycle 1: pgbench's transactions, then the scripted changes, then one run.
    _run_pgbench(db, "-n", "-t", "300", "-c", "2")
    _scripted_changes(db, 1)
    pipeline.run()
    counts = _counts(pipeline.assert_mirrors())
    assert counts["public.pgbench_history"] == (700, 700)
    assert counts["public.pgbench_accounts"][0] < 100_000  # the deletes are in the comparison

    # Cycle 2: pgbench keeps committing while the pipeline runs, so the run stops somewhere in
    # the middle of the workload; the next run must carry on from exactly there.
    _scripted_changes(db, 2)
    bench = subprocess.Popen(
        _pgbench(db, "-n", "-T", "300", "-R", "40", "-c", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pipeline.run()
    finally:
        # SIGTERM: SIGINT is ignored by processes started from a non-interactive background job.
        bench.terminate()
        _, bench_err = bench.communicate(timeout=60)
    assert _pg_count(db, "pgbench_history") > 700, (
        f"pgbench committed nothing while the pipeline ran:\n{bench_err[-2000:]}"
    )
    _scripted_changes(db, 3)
    pipeline.run()
    _counts(pipeline.assert_mirrors())


# ---------------------------------------------------------------- a target that fails


FAILURE_SCHEMA_SQL = """
CREATE TABLE orders (id integer PRIMARY KEY, status text NOT NULL, amount numeric(10, 2));
INSERT INTO orders SELECT g, 'new', g * 1.25 FROM generate_series(1, 200) AS g;
-- Append-only and keyless: a lost or doubled record shows as a different multiset.
CREATE TABLE log_lines (at timestamptz NOT NULL, line text);
ALTER TABLE log_lines REPLICA IDENTITY FULL;
INSERT INTO log_lines
SELECT timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute', 'line ' || g
FROM generate_series(1, 30) AS g;
"""


def _changes(db: TestDb, first: int) -> None:
    """3 updates, 2 deletes, 3 inserts, a key change (2 records) and 5 log lines.

    Each call's rows are its own for `first` 1, 50 and 100.
    """
    db.execute("UPDATE orders SET status = 'paid' WHERE id BETWEEN %s AND %s", (first, first + 2))
    db.execute("DELETE FROM orders WHERE id IN (%s, %s)", (first + 10, first + 11))
    db.execute(
        "INSERT INTO orders SELECT g, 'new', 9.99 FROM generate_series(%s, %s) AS g",
        (first + 1000, first + 1002),
    )
    db.execute("UPDATE orders SET id = id + 5000 WHERE id = %s", (first + 20,))
    db.execute(
        "INSERT INTO log_lines SELECT now(), 'after ' || %s || '.' || g "
        "FROM generate_series(1, 5) AS g",
        (first,),
    )


def _slot_confirmed_flush(db: TestDb) -> str:
    rows = db.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (db.config()["slot_name"],),
    )
    return str(rows[0][0])


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def test_output_lost_after_the_tap_read_is_sent_again_from_the_stored_state(
    db: TestDb, pipeline: Pipeline
) -> None:
    db.execute(FAILURE_SCHEMA_SQL)
    pipeline.run()
    pipeline.assert_mirrors()
    stored = pipeline.state()["singer_state"]
    stored_lsn = min(_lsn(b["lsn"]) for b in stored["bookmarks"].values())

    # The tap reads the changes, but its output never reaches a target: Meltano keeps the state.
    _changes(db, 1)
    lost = pipeline.run_tap_only(stored)
    assert lost.records == {"public-orders": 10, "public-log_lines": 5}
    assert lost.last_state is not None
    assert min(_lsn(b["lsn"]) for b in lost.last_state["bookmarks"].values()) > stored_lsn
    # The slot was only told what the target had stored, not what the tap read.
    assert _lsn(_slot_confirmed_flush(db)) <= stored_lsn

    # A pipeline whose target dies (its DuckDB file cannot be created): nothing is stored.
    _changes(db, 50)
    failed = pipeline.run(check=False, target={"filepath": str(pipeline.workdir / "no/such.db")})
    assert failed.returncode != 0
    assert pipeline.state()["singer_state"] == stored

    # The next good run starts from the stored state and brings every change.
    _changes(db, 100)
    pipeline.run()
    counts = _counts(pipeline.assert_mirrors())
    assert counts == {"public.orders": (203, 203), "public.log_lines": (45, 45)}
    assert _lsn(_slot_confirmed_flush(db)) <= min(
        _lsn(b["lsn"]) for b in pipeline.state()["singer_state"]["bookmarks"].values()
    )


# ---------------------------------------------------------------- TOAST


TOAST_SCHEMA_SQL = """
CREATE TABLE {t} (id integer PRIMARY KEY, title text, n integer NOT NULL DEFAULT 0, body text);
-- EXTERNAL: large values always go to the TOAST table uncompressed, so an UPDATE that does not
-- touch `body` makes pgoutput send it as 'unchanged TOAST' instead of its value.
ALTER TABLE {t} ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO {t} (id, title, body)
SELECT g, 'doc ' || g,
       (SELECT string_agg(md5(g::text || '-' || i::text), '') FROM generate_series(1, 300) AS i)
FROM generate_series(1, 20) AS g;
"""

TOAST_CHANGES_SQL = [
    "UPDATE {t} SET n = n + 1 WHERE id <= 10",
    # updated on n, then on body: the first record must not keep a stale or missing body
    "UPDATE {t} SET n = 5 WHERE id = 11",
    "UPDATE {t} SET body = repeat('new body 11 ', 2000) WHERE id = 11",
    # updated, then deleted: reading the value by key finds nothing
    "UPDATE {t} SET n = 7 WHERE id = 12",
    "DELETE FROM {t} WHERE id = 12",
    # primary key changes with body untouched, once and twice
    "UPDATE {t} SET id = 1013 WHERE id = 13",
    "UPDATE {t} SET id = 1014 WHERE id = 14",
    "UPDATE {t} SET id = 2014, n = 2 WHERE id = 1014",
    "UPDATE {t} SET title = 'retitled' WHERE id = 15",
    "UPDATE {t} SET n = 15 WHERE id = 15",
]


def _toast_chunks(db: TestDb, table: str) -> int:
    toast = db.execute(
        "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = %s::regclass", (table,)
    )
    return _pg_count(db, toast[0][0])


def test_unchanged_toast_values_reach_duckdb(db: TestDb, pipeline: Pipeline) -> None:
    for table in ("docs", "docs_full"):
        db.execute(TOAST_SCHEMA_SQL.format(t=table))
        assert _toast_chunks(db, table) >= 20 * 5  # ~9.6 kB per value, ~2 kB per chunk
    # docs: the tap reads a missing value by key; docs_full: it takes it from the old row.
    db.execute("ALTER TABLE docs_full REPLICA IDENTITY FULL")
    pipeline.run()
    pipeline.assert_mirrors()

    for table in ("docs", "docs_full"):
        for statement in TOAST_CHANGES_SQL:
            db.execute(statement.format(t=table))
    pipeline.run()

    counts = _counts(pipeline.assert_mirrors())
    assert counts == {"public.docs": (19, 19), "public.docs_full": (19, 19)}
    with pipeline.duckdb() as ddb:
        for table in ("docs", "docs_full"):
            lengths = ddb.execute(
                f"SELECT id, length(body) FROM public.{table} WHERE id IN (1, 1013, 2014)"
                " ORDER BY id"
            ).fetchall()
            assert lengths == [(1, 9600), (1013, 9600), (2014, 9600)], table


# ---------------------------------------------------------------- schema change


@pytest.mark.parametrize("catalog", ["discovered_each_run", "pinned_before_the_alter"])
def test_column_added_mid_stream_reaches_duckdb(
    db: TestDb, pipeline: Pipeline, catalog: str
) -> None:
    """ADD COLUMN between runs: old-shape and new-shape records in one run, the column in DuckDB.

    `discovered_each_run` is this repo's setting (an editable extractor is always rediscovered).
    `pinned_before_the_alter` is a catalog file given to Meltano, as is Meltano's cached catalog
    for an extractor installed from a package: only the log tells the tap about the new column.
    """
    db.execute("CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL)")
    db.execute("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) AS g")
    if catalog == "pinned_before_the_alter":
        pipeline.extractor_extras["catalog"] = str(pipeline.discover())
    pipeline.run()
    pipeline.assert_mirrors()

    db.execute("INSERT INTO customers VALUES (51, 'before the alter')")
    db.execute("UPDATE customers SET name = 'renamed' WHERE id = 1")
    db.execute("ALTER TABLE customers ADD COLUMN tier text")
    db.execute("UPDATE customers SET tier = 'gold' WHERE id <= 5")
    db.execute("INSERT INTO customers VALUES (52, 'after the alter', 'silver')")
    db.execute("ALTER TABLE customers ADD COLUMN credit numeric(8, 2), ADD COLUMN since date")
    db.execute(
        "UPDATE customers SET credit = id * 10.5, since = date '2024-01-01' + id WHERE id > 45"
    )
    db.execute("DELETE FROM customers WHERE id = 2")
    pipeline.run()

    counts = _counts(pipeline.assert_mirrors())
    assert counts == {"public.customers": (51, 51)}
    with pipeline.duckdb() as ddb:
        row: Any = ddb.execute(
            "SELECT name, tier, credit, since FROM public.customers WHERE id = 52"
        ).fetchone()
    assert row == ("after the alter", "silver", 546.0, "2024-02-22")
