"""The demo behind `bash scripts/demo.sh`: Postgres -> tap-pgcdc -> Meltano -> target-duckdb.

1. Start a throwaway PostgreSQL (wal_level=logical) and fill a small shop database: customers,
   orders, a table without primary key and a partitioned table.
2. `meltano run tap-pgcdc target-duckdb`: the snapshot.
3. Insert, update and delete rows in Postgres.
4. `meltano run tap-pgcdc target-duckdb` again: the changes, read from the replication slot.
5. Print row counts per table in Postgres and DuckDB, a few rows, and the row-by-row comparison.

The DuckDB file is output/demo.duckdb; the server and Meltano's state are thrown away at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402

from tests.e2e import duckdb_compare  # noqa: E402
from tests.pgserver import PgServer, running_server  # noqa: E402

MELTANO = REPO / ".meltano/meltano-venv/bin/meltano"
DATABASE = "shop"
TABLES = ["public.customers", "public.orders", "public.page_views", "public.measurements"]

SCHEMA_SQL = """
CREATE TABLE customers (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    email       text,
    country     char(2),
    signed_up   timestamptz NOT NULL,
    birthday    date,
    vip         boolean NOT NULL DEFAULT false,
    preferences jsonb
);

CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    status      text NOT NULL,
    total       numeric(12, 2) NOT NULL,
    items       text[],
    ordered_at  timestamptz NOT NULL,
    shipped_at  timestamp
);

-- No primary key: append-only data such as a click log.
CREATE TABLE page_views (
    viewed_at   timestamptz NOT NULL,
    path        text NOT NULL,
    customer_id integer,
    ms          real
);
-- tap-pgcdc needs the whole old row to identify a changed row when there is no key.
ALTER TABLE page_views REPLICA IDENTITY FULL;

CREATE TABLE measurements (
    id          bigint NOT NULL,
    taken_on    date NOT NULL,
    sensor      text NOT NULL,
    value       double precision,
    PRIMARY KEY (id, taken_on)
) PARTITION BY RANGE (taken_on);
CREATE TABLE measurements_2024 PARTITION OF measurements
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measurements_2025 PARTITION OF measurements
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
"""

SNAPSHOT_DATA_SQL = [
    """
    INSERT INTO customers (name, email, country, signed_up, birthday, vip, preferences)
    SELECT (ARRAY['Ada', 'Grace', 'Linus', 'Margaret', 'Ken', 'Barbara'])[1 + g % 6] || ' #' || g,
           CASE WHEN g % 10 = 0 THEN NULL ELSE 'customer' || g || '@example.com' END,
           (ARRAY['DE', 'FR', 'US', 'JP', 'BR'])[1 + g % 5],
           timestamptz '2023-03-01 09:00+01' + g * interval '17 hours 3 minutes',
           CASE WHEN g % 7 = 0 THEN NULL ELSE date '1960-01-01' + g * 97 END,
           g % 9 = 0,
           CASE WHEN g % 4 = 0 THEN NULL
                ELSE jsonb_build_object('newsletter', g % 2 = 0, 'lang', 'en') END
    FROM generate_series(1, 150) AS g
    """,
    """
    INSERT INTO orders (customer_id, status, total, items, ordered_at, shipped_at)
    SELECT 1 + g % 150,
           (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4],
           round((5 + (g * 7919) % 50000 / 100.0)::numeric, 2),
           ARRAY['sku-' || g % 40, 'sku-' || (g * 3) % 40],
           timestamptz '2024-01-01 00:00+00' + g * interval '3 hours 7 minutes',
           CASE WHEN g % 4 = 2 THEN timestamp '2024-01-02 00:00' + g * interval '3 hours' END
    FROM generate_series(1, 400) AS g
    """,
    """
    INSERT INTO page_views (viewed_at, path, customer_id, ms)
    SELECT timestamptz '2024-05-01 12:00+00' + g * interval '41 seconds',
           (ARRAY['/', '/products', '/cart', '/checkout'])[1 + g % 4],
           CASE WHEN g % 3 = 0 THEN NULL ELSE 1 + g % 150 END,
           (g % 800) / 4.0
    FROM generate_series(1, 300) AS g
    """,
    """
    INSERT INTO measurements (id, taken_on, sensor, value)
    SELECT g, date '2024-06-01' + (g % 400), 'sensor-' || g % 5,
           CASE WHEN g % 25 = 0 THEN NULL ELSE sin(g) * 100 END
    FROM generate_series(1, 250) AS g
    """,
]

CHANGES_SQL = [
    # new customers and orders
    """
    INSERT INTO customers (name, email, country, signed_up, vip)
    SELECT 'New customer ' || g, 'new' || g || '@example.com', 'NL', now(), false
    FROM generate_series(1, 10) AS g
    """,
    """
    INSERT INTO orders (customer_id, status, total, items, ordered_at)
    SELECT 150 + g, 'new', 19.99 * g, ARRAY['sku-new'], now() FROM generate_series(1, 10) AS g
    """,
    # updates
    'UPDATE customers SET vip = true, preferences = \'{"tier": "gold"}\' WHERE id % 15 = 0',
    "UPDATE orders SET status = 'shipped', shipped_at = now()::timestamp WHERE status = 'paid' "
    "AND id <= 40",
    "UPDATE measurements SET value = NULL WHERE id BETWEEN 10 AND 14",
    # deletes
    "DELETE FROM orders WHERE status = 'cancelled' AND id > 300",
    "DELETE FROM measurements WHERE id > 240",
    # key-less table: inserts only (see docs/targets.md on updates/deletes without a key)
    """
    INSERT INTO page_views (viewed_at, path, customer_id, ms)
    SELECT now(), '/thank-you', g, 12.5 FROM generate_series(1, 25) AS g
    """,
    # a row in the other partition
    "INSERT INTO measurements (id, taken_on, sensor, value) "
    "VALUES (1000, '2025-02-03', 'sensor-x', 1.5)",
]


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def meltano_run(server: PgServer, duckdb_path: Path, state_dir: Path, verbose: bool) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TAP_PGCDC_", "TARGET_DUCKDB_"))
    }
    env.pop("VIRTUAL_ENV", None)
    env.update(
        {
            "MELTANO_DATABASE_URI": f"sqlite:///{state_dir / 'meltano.db'}",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "MELTANO_RUN_REFRESH_CATALOG": "true",
            "TAP_PGCDC_HOST": server.host,
            "TAP_PGCDC_PORT": str(server.port),
            "TAP_PGCDC_USER": server.superuser,
            "TAP_PGCDC_DATABASE": DATABASE,
            "TAP_PGCDC_SLOT_NAME": "demo_slot",
            "TAP_PGCDC_PUBLICATION_NAME": "demo_pub",
            "TAP_PGCDC_CREATE_SLOT": "true",
            "TAP_PGCDC_CREATE_PUBLICATION": "true",
            "TAP_PGCDC_MAX_RUN_SECONDS": "120",
            "TARGET_DUCKDB_FILEPATH": str(duckdb_path),
        }
    )
    cmd = [str(MELTANO), "run", "tap-pgcdc", "target-duckdb"]
    print("$ meltano run tap-pgcdc target-duckdb", flush=True)
    started = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if verbose or proc.returncode != 0:
        print(proc.stderr[-20000:], file=sys.stderr)
    if proc.returncode != 0:
        msg = f"meltano run failed with exit code {proc.returncode}"
        raise SystemExit(msg)
    print(f"  done in {time.monotonic() - started:.1f}s", flush=True)


def show(server: PgServer, duckdb_path: Path) -> bool:
    conn = server.connect(DATABASE)
    try:
        report = duckdb_compare.compare(conn, duckdb_path, tables=TABLES)
    finally:
        conn.close()
    print(f"{'table':24} {'postgres':>9} {'duckdb':>9}")
    for t in report.tables:
        print(f"{t.pg_table:24} {t.pg_count:>9} {t.duckdb_count:>9}")
    with duckdb.connect(str(duckdb_path), read_only=True) as ddb:
        for table, columns in (
            ("customers", "id, name, country, vip, preferences, _sdc_lsn"),
            ("orders", "id, customer_id, status, total, shipped_at, _sdc_lsn"),
        ):
            print(f"\nDuckDB public.{table}, last 3 rows:")
            print(ddb.sql(f"SELECT {columns} FROM public.{table} ORDER BY id DESC LIMIT 3"))
    print("Row-by-row comparison:")
    print(report.render())
    return report.ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="show Meltano's log")
    parser.add_argument(
        "--output", type=Path, default=REPO / "output/demo.duckdb", help="DuckDB file to write"
    )
    args = parser.parse_args()
    if not MELTANO.exists():
        print("Meltano is not installed: run `bash scripts/setup.sh` first.", file=sys.stderr)
        return 1

    duckdb_path: Path = args.output.resolve()
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (duckdb_path, duckdb_path.with_name(duckdb_path.name + ".wal")):
        stale.unlink(missing_ok=True)

    with tempfile.TemporaryDirectory(prefix="tap-pgcdc-demo-") as state, running_server() as server:
        state_dir = Path(state)
        version = server.execute("SHOW server_version")[0][0]
        banner(f"PostgreSQL {version} on {server.host}:{server.port}")
        server.create_database(DATABASE)
        server.execute(SCHEMA_SQL, dbname=DATABASE)
        for statement in SNAPSHOT_DATA_SQL:
            server.execute(statement, dbname=DATABASE)
        print("created", ", ".join(TABLES))

        banner("Run 1: snapshot")
        meltano_run(server, duckdb_path, state_dir, args.verbose)
        ok_snapshot = show(server, duckdb_path)

        banner("Changes in Postgres")
        for statement in CHANGES_SQL:
            print("  " + " ".join(statement.split())[:100])
            server.execute(statement, dbname=DATABASE)

        banner("Run 2: changes from the replication slot")
        meltano_run(server, duckdb_path, state_dir, args.verbose)
        ok_changes = show(server, duckdb_path)

    shown = duckdb_path.relative_to(REPO) if duckdb_path.is_relative_to(REPO) else duckdb_path
    banner(f"DuckDB file: {shown}")
    if ok_snapshot and ok_changes:
        print("DuckDB mirrors PostgreSQL after both runs.")
        return 0
    print("DuckDB differs from PostgreSQL (see above).")
    return 1


if __name__ == "__main__":
    sys.exit(main())
