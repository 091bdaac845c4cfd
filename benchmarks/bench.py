"""Throughput and memory of tap-pgcdc against the fastest way to read the same data.

    python benchmarks/bench.py --rows 1000000

Starts a throwaway PostgreSQL server (tests/pgserver.py), builds a table of `--rows` rows (bigint
key, int, ~100-char text, numeric(12,2), timestamptz, bool, uuid, small jsonb, nullable varchar),
then measures whole processes, each scenario a warm-up and then `--runs` rounds (median reported),
the tap and its baseline alternating so that both see the same machine:

  snapshot  `tap-pgcdc` FULL_TABLE to /dev/null  vs  `psql -c "COPY (SELECT * FROM t) TO STDOUT"`
  log       `tap-pgcdc` LOG_BASED from a state, reading 200k UPDATEs, 100k INSERTs and 50k DELETEs
            in 1000-row transactions  vs  a bare psycopg2 replication loop that only counts the
            same pgoutput messages (benchmarks/bare_log.py), on a copy of the tap's slot
  txn       the same as `log` for one transaction of `--txn-rows` INSERTs (memory)

`--snapshot-workers 1,2,4` adds, to the snapshot scenario, a LOG_BASED stream's first snapshot
(in an exported snapshot) read with each number of `snapshot_workers`, against the same COPY.

It prints rows (changes) per second, MB/s of output, the ratio to the baseline and each process's
peak RSS, with a description of the machine. `--env NAME=VALUE` passes settings to the tap only
(e.g. `TAP_PGCDC_FAST_OUTPUT=0` for the SDK's record path; `PYTHONPATH=...` for another checkout:
processes run outside the repository, so that it takes precedence over the installed package).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.pgserver import PgServer, running_server  # noqa: E402

STREAM = "public-t"
COLUMNS_SQL = """
    id bigint PRIMARY KEY,
    n integer NOT NULL,
    txt text NOT NULL,
    amount numeric(12,2) NOT NULL,
    ts timestamptz NOT NULL,
    flag boolean NOT NULL,
    uid uuid NOT NULL,
    doc jsonb NOT NULL,
    note varchar(40)
"""
# Row g of the data set; % is doubled for psycopg2 where parameters are passed.
ROWS_SQL = """
SELECT g, (g * 7919 %% 1000003)::int,
       repeat(md5(g::text), 3) || left(md5((g + 1)::text), 4),
       ((g %% 100000) * 1.37)::numeric(12,2),
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1.5 second',
       g %% 3 = 0,
       md5(g::text)::uuid,
       jsonb_build_object('k', g %% 100, 'tag', 'x' || (g %% 7)),
       CASE WHEN g %% 4 = 0 THEN NULL ELSE 'note ' || g END
FROM generate_series(%s::bigint, %s::bigint) g
"""
TXN_ROWS = 1000


@dataclass
class Run:
    """One process: how long it took, its peak RSS, what it wrote."""

    seconds: float
    max_rss_kb: int
    out_bytes: int = 0
    cpu_seconds: float = 0.0  # user + system: steadier than wall time on a busy machine


@dataclass
class Scenario:
    name: str
    units: int  # rows or changes each process handles
    unit_name: str
    tap: list[Run] = field(default_factory=list)
    base: list[Run] = field(default_factory=list)
    out_bytes: int = 0

    def median(self, runs: list[Run]) -> float:
        return statistics.median(r.seconds for r in runs)

    def summary(self) -> dict[str, Any]:
        tap_s, base_s = self.median(self.tap), self.median(self.base)
        return {
            "scenario": self.name,
            "units": self.units,
            "unit": self.unit_name,
            "tap_seconds": [round(r.seconds, 3) for r in self.tap],
            "base_seconds": [round(r.seconds, 3) for r in self.base],
            "tap_per_s": self.units / tap_s,
            "base_per_s": self.units / base_s,
            "ratio": base_s / tap_s,
            "tap_mb_per_s": self.out_bytes / tap_s / 1e6,
            "tap_max_rss_mb": max(r.max_rss_kb for r in self.tap) / 1024,
            "base_max_rss_mb": max(r.max_rss_kb for r in self.base) / 1024,
        }


# --- processes ------------------------------------------------------------------------------


def run_process(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    count_output: bool = False,
    stdout_path: Path | None = None,
    stdin_path: Path | None = None,
) -> Run:
    """Run a command to completion: wall time, peak RSS and optionally its output size.

    The command runs under benchmarks/measure.py, which times it and reads its peak RSS. Its
    output is counted (`count_output`), written to `stdout_path` or dropped; its input is
    `stdin_path` or nothing.
    """
    with contextlib.ExitStack() as files:
        tmp = Path(files.enter_context(tempfile.TemporaryDirectory()))
        result, errors = tmp / "result", tmp / "stderr"
        err = files.enter_context(errors.open("wb"))
        stdout: Any = subprocess.DEVNULL
        if count_output:
            stdout = subprocess.PIPE
        elif stdout_path is not None:
            stdout = files.enter_context(stdout_path.open("wb"))
        stdin: Any = subprocess.DEVNULL
        if stdin_path is not None:
            stdin = files.enter_context(stdin_path.open("rb"))
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / "measure.py"), str(result), *cmd],
            stdin=stdin,
            stdout=stdout,
            stderr=err,
            env={**os.environ, **(env or {})},
            cwd=tempfile.gettempdir(),
        )
        out_bytes = 0
        if count_output:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(1 << 20):
                out_bytes += len(chunk)
        if proc.wait() != 0:
            tail = errors.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{cmd[:4]} exited {proc.returncode}:\n{tail}")
        seconds, max_rss_kb, cpu = result.read_text().split()
    return Run(float(seconds), int(max_rss_kb), out_bytes, float(cpu))


def tap_cmd(workdir: Path, config: dict[str, Any], catalog: dict[str, Any], state: dict | None):
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "catalog.json").write_text(json.dumps(catalog))
    cmd = [sys.executable, "-m", "tap_pgcdc", "--config", str(workdir / "config.json")]
    cmd += ["--catalog", str(workdir / "catalog.json")]
    if state is not None:
        (workdir / "state.json").write_text(json.dumps(state))
        cmd += ["--state", str(workdir / "state.json")]
    return cmd


def last_state(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run the tap and return the last STATE it wrote (its output otherwise discarded)."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
        cwd=tempfile.gettempdir(),
    )
    assert proc.stdout is not None
    state = None
    for line in proc.stdout:
        if line.startswith(b'{"type":"STATE"'):
            state = line
    if proc.wait() != 0 or state is None:
        raise SystemExit(f"tap run failed: {cmd}")
    return json.loads(state)["value"]  # type: ignore[no-any-return]


# --- data -------------------------------------------------------------------------------------


def create_table(server: PgServer, db: str, table: str, rows: int) -> None:
    server.execute(f"CREATE TABLE {table} ({COLUMNS_SQL})", dbname=db)
    step = 200_000
    for lo in range(1, rows + 1, step):
        server.execute(f"INSERT INTO {table} {ROWS_SQL}", (lo, min(lo + step - 1, rows)), dbname=db)
    server.execute(f"VACUUM ANALYZE {table}", dbname=db)


def log_workload(server: PgServer, db: str, rows: int, updates: int, inserts: int, deletes: int):
    """UPDATEs, INSERTs and DELETEs in 1000-row transactions; returns the number of changes."""
    conn = server.connect(db)
    try:
        with conn.cursor() as cur:
            for lo in range(1, updates + 1, TXN_ROWS):
                cur.execute(
                    "UPDATE t SET n = n + 1, note = 'updated ' || id WHERE id BETWEEN %s AND %s",
                    (lo, lo + TXN_ROWS - 1),
                )
            for lo in range(rows + 1, rows + inserts + 1, TXN_ROWS):
                cur.execute(f"INSERT INTO t {ROWS_SQL}", (lo, lo + TXN_ROWS - 1))
            # Rows not touched by the updates.
            start = updates + 1
            for lo in range(start, start + deletes, TXN_ROWS):
                cur.execute("DELETE FROM t WHERE id BETWEEN %s AND %s", (lo, lo + TXN_ROWS - 1))
    finally:
        conn.close()
    return updates + inserts + deletes


def drop_slot(server: PgServer, db: str, slot: str) -> None:
    """Drop a slot once its walsender has let go of it (that takes a moment after the client)."""
    for _ in range(300):
        active = server.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,), dbname=db
        )
        if not active or not active[0][0]:
            break
        time.sleep(0.1)
    server.execute("SELECT pg_drop_replication_slot(%s)", (slot,), dbname=db)


def flush_lsn(server: PgServer, db: str) -> str:
    return str(server.execute("SELECT pg_current_wal_flush_lsn()::text", dbname=db)[0][0])


# --- scenarios --------------------------------------------------------------------------------


def catalog_for(
    config: dict[str, Any], table: str, method: str, env: dict[str, str], workdir: Path
):
    cmd = [
        sys.executable,
        "-m",
        "tap_pgcdc",
        "--config",
        str(workdir / "config.json"),
        "--discover",
    ]
    (workdir / "config.json").write_text(json.dumps(config))
    out = subprocess.run(
        cmd, capture_output=True, check=True, cwd=tempfile.gettempdir(), env={**os.environ, **env}
    )
    catalog = json.loads(out.stdout)
    streams = [s for s in catalog["streams"] if s["tap_stream_id"] == f"public-{table}"]
    for stream in streams:
        stream["replication_method"] = method
        for item in stream["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = True
                item["metadata"]["replication-method"] = method
    return {"streams": streams}


def snapshot_scenario(server, db, rows, runs, env, workdir, psql, workers=0) -> Scenario:
    """FULL_TABLE; or, with `workers`, a LOG_BASED stream's first snapshot by that many readers.

    The LOG_BASED runs have no state, so each snapshots the table again in an exported snapshot
    (the slot, created by the warm-up, stays; what the log holds since is nothing).
    """
    config = base_config(server, db, f"snap{workers}" if workers else "snap")
    if workers:
        config["snapshot_workers"] = workers
    method = "LOG_BASED" if workers else "FULL_TABLE"
    catalog = catalog_for(config, "t", method, env, workdir)
    tap = tap_cmd(workdir, config, catalog, None)
    copy = [str(psql), "-X", "-q", "-d", server.dsn(db), "-c", "COPY (SELECT * FROM t) TO STDOUT"]
    scenario = Scenario(f"snapshot, {workers} worker(s)" if workers else "snapshot", rows, "rows")
    scenario.out_bytes = run_process(tap, env=env, count_output=True).out_bytes  # warm-up
    run_process(copy)
    for _ in range(runs):
        scenario.base.append(run_process(copy))
        scenario.tap.append(run_process(tap, env=env))
    return scenario


def log_scenario(name, server, db, table, runs, env, workdir, make_changes) -> Scenario:
    """The tap from a state, then the bare loop on a copy of its slot, over the same window."""
    config = base_config(server, db, name)
    catalog = catalog_for(config, table, "LOG_BASED", env, workdir)
    first = tap_cmd(workdir, config, catalog, None)
    state = last_state(first, env)  # creates slot and publication, snapshots the table
    slot, publication = config["slot_name"], config["publication_name"]
    template = f"{slot}_bare"
    server.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (slot, template), dbname=db)
    changes = make_changes()
    stop = flush_lsn(server, db)
    start = state["bookmarks"][f"public-{table}"]["lsn"]
    tap = tap_cmd(workdir, config, catalog, state)
    scenario = Scenario(name, changes, "changes")

    def bare() -> Run:
        copy_name = f"{slot}_b{time.monotonic_ns() % 10**9}"
        server.execute(
            "SELECT pg_copy_logical_replication_slot(%s, %s)", (template, copy_name), dbname=db
        )
        try:
            return run_process(
                [
                    sys.executable,
                    str(REPO / "benchmarks" / "bare_log.py"),
                    server.dsn(db),
                    copy_name,
                    publication,
                    start,
                    stop,
                ]
            )
        finally:
            drop_slot(server, db, copy_name)

    scenario.out_bytes = run_process(tap, env=env, count_output=True).out_bytes  # warm-up
    bare()
    for _ in range(runs):
        scenario.base.append(bare())
        scenario.tap.append(run_process(tap, env=env))
    return scenario


def base_config(server: PgServer, db: str, name: str) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "user": server.superuser,
        "database": db,
        "slot_name": f"bench_{name}",
        "publication_name": f"bench_{name}",
    }


# --- report -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import importlib.metadata

    import psycopg2

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "psycopg2": psycopg2.__version__.split()[0],
        "singer_sdk": importlib.metadata.version("singer-sdk"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def report(scenarios: list[Scenario], info: dict[str, Any], server_version: str) -> str:
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, {info['os']}",
        f"Python {info['python']}, psycopg2 {info['psycopg2']}, singer-sdk {info['singer_sdk']}, "
        f"PostgreSQL {server_version}; load average at start {info['load_average']}",
        "",
        "| scenario | units | tap /s | baseline /s | ratio | tap MB/s | tap peak RSS | baseline peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in scenarios:
        d = s.summary()
        lines.append(
            f"| {d['scenario']} | {d['units']:,} {d['unit']} | {d['tap_per_s']:,.0f} "
            f"| {d['base_per_s']:,.0f} | {d['ratio']:.0%} | {d['tap_mb_per_s']:.1f} "
            f"| {d['tap_max_rss_mb']:.0f} MB | {d['base_max_rss_mb']:.0f} MB |"
        )
    lines.append("")
    for s in scenarios:
        d = s.summary()
        lines.append(
            f"{d['scenario']}: tap runs {d['tap_seconds']} s, baseline {d['base_seconds']} s"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the table")
    parser.add_argument("--runs", type=int, default=3, help="measured rounds per scenario")
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--inserts", type=int, default=100_000)
    parser.add_argument("--deletes", type=int, default=50_000)
    parser.add_argument("--txn-rows", type=int, default=1_000_000, help="rows of the big txn")
    parser.add_argument(
        "--scenarios", default="snapshot,log,txn", help="comma-separated: snapshot,log,txn"
    )
    parser.add_argument(
        "--snapshot-workers",
        default="",
        help="comma-separated, e.g. 1,2,4: the snapshot scenario is also run as a LOG_BASED "
        "stream's first snapshot with each number of snapshot_workers",
    )
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the tap")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.updates + args.deletes > args.rows:
        parser.error("--updates + --deletes must not exceed --rows")
    env = dict(item.split("=", 1) for item in args.env)
    wanted = set(args.scenarios.split(","))
    info = machine()
    scenarios: list[Scenario] = []

    def done(scenario: Scenario) -> None:
        scenarios.append(scenario)
        print(json.dumps(scenario.summary()), file=sys.stderr)

    settings = {"max_wal_size": "8GB", "checkpoint_timeout": "30min"}
    with running_server(settings=settings) as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        version = str(server.execute("SHOW server_version")[0][0])
        psql = server.bin_dir / "psql"
        if not psql.exists():
            psql = Path(shutil.which("psql") or "psql")
        db = "bench"
        server.create_database(db)
        print(f"Loading {args.rows:,} rows...", file=sys.stderr)
        create_table(server, db, "t", args.rows)
        if "snapshot" in wanted:
            print("Snapshot scenario...", file=sys.stderr)
            done(snapshot_scenario(server, db, args.rows, args.runs, env, workdir, psql))
            for workers in (int(n) for n in args.snapshot_workers.split(",") if n):
                done(
                    snapshot_scenario(server, db, args.rows, args.runs, env, workdir, psql, workers)
                )
        if "log" in wanted:
            print("Log scenario...", file=sys.stderr)

            def workload() -> int:
                return log_workload(server, db, args.rows, args.updates, args.inserts, args.deletes)

            done(log_scenario("log", server, db, "t", args.runs, env, workdir, workload))
        if "txn" in wanted:
            print("Single-transaction scenario...", file=sys.stderr)
            server.execute(f"CREATE TABLE t2 ({COLUMNS_SQL})", dbname=db)

            def one_transaction() -> int:
                server.execute(f"INSERT INTO t2 {ROWS_SQL}", (1, args.txn_rows), dbname=db)
                return int(args.txn_rows)

            done(log_scenario("txn", server, db, "t2", args.runs, env, workdir, one_transaction))
    text = report(scenarios, info, version)
    print(text)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "postgres": version,
                    "env": env,
                    "results": [s.summary() for s in scenarios],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
