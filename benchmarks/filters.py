"""What a publication column list saves: one wide table, a deselected 2 kB column, N updates.

    python benchmarks/filters.py --rows 2000 --updates 20000

Starts a throwaway PostgreSQL server (15+, tests/pgserver.py) and one table (a key, two small
columns, a 2 kB text column that stays inline, so that every UPDATE's new row carries it). The
catalog deselects the large column. Two taps read the same changes, each from its own slot:

  with list     create_publication = true: the tap's publication lists only the selected
                columns (PostgreSQL 15+), so the server never decodes or sends the large one
  without list  create_publication = false, a publication FOR TABLE of every column: the server
                sends the large column and the tap drops it (what PostgreSQL 12-14 do)

After a first run of each (the snapshot, the slots), `--updates` UPDATEs of a small column in
transactions of 1000, then `--rounds` timed runs of each, alternating (the same input state each time). Prints, from each run's report
(docs/monitoring.md), the bytes the slot sent (`log.bytes_received`) and the wall time, and
the ratios. The wall time includes the process's start (about a second of imports); the run
report's `duration_seconds` does not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.pgserver import PgServer, running_server  # noqa: E402

STREAM = "public-wide"


def tap(config: dict[str, Any], catalog: dict[str, Any], state: dict[str, Any] | None) -> tuple:
    """One tap process: (final state, run report, seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"config": config, "catalog": catalog, "state": state}
        args = [sys.executable, "-m", "tap_pgcdc"]
        for name, value in paths.items():
            if value is not None:
                path = Path(tmp) / f"{name}.json"
                path.write_text(json.dumps(value))
                args += [f"--{name}", str(path)]
        started = time.monotonic()
        proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, check=True)
        seconds = time.monotonic() - started
    states = [json.loads(line) for line in proc.stdout.splitlines() if '"STATE"' in line[:20]]
    report = next(
        json.loads(line)["tap_pgcdc_run_report"]
        for line in proc.stderr.splitlines()
        if line.startswith('{"tap_pgcdc_run_report"')
    )
    return states[-1]["value"], report, seconds


def catalog_without_big(config: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tap_pgcdc", "--config", "/dev/stdin", "--discover"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    catalog = json.loads(proc.stdout)
    for stream in catalog["streams"]:
        for item in stream["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = stream["tap_stream_id"] == STREAM
            elif item["breadcrumb"][-1] == "big":
                item["metadata"]["selected"] = False
    return catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--updates", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with running_server() as server:
        run(server, args.rows, args.updates, args.rounds)


def run(server: PgServer, rows: int, updates: int, rounds: int) -> None:
    server.create_database("bench")
    sql = lambda text: server.execute(text, dbname="bench")  # noqa: E731
    sql("CREATE TABLE wide (id int PRIMARY KEY, n int NOT NULL, note text, big text NOT NULL)")
    sql(
        "INSERT INTO wide SELECT i, i, 'note ' || i, repeat('x', 2048) "
        f"FROM generate_series(1, {rows}) i"
    )
    sql("CREATE PUBLICATION every_column FOR TABLE wide")
    base = {"host": server.host, "port": server.port, "user": server.superuser, "database": "bench"}
    configs = {
        "with list": {**base, "slot_name": "with_list", "publication_name": "with_list"},
        "without list": {
            **base,
            "slot_name": "without_list",
            "publication_name": "every_column",
            "create_publication": False,
        },
    }
    catalog = catalog_without_big(base)
    states = {name: tap(config, catalog, None)[0] for name, config in configs.items()}
    done = 0
    while done < updates:
        step = min(1000, updates - done)
        sql(
            f"UPDATE wide SET n = n + 1 WHERE id IN (SELECT (g % {rows}) + 1 FROM "
            f"generate_series({done}, {done + step - 1}) g)"
        )
        done += step
    # The slot is confirmed only to the input state's position: each round, given the same
    # state, reads the same changes again. The two alternate, so both see the same machine.
    timings: dict[str, list[float]] = {name: [] for name in configs}
    inside: dict[str, list[float]] = {name: [] for name in configs}  # the report's duration
    reports: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for name, config in configs.items():
            _, reports[name], seconds = tap(config, catalog, states[name])
            timings[name].append(seconds)
            inside[name].append(reports[name]["duration_seconds"])
    results = {
        name: (
            reports[name]["log"]["bytes_received"],
            statistics.median(timings[name]),
            statistics.median(inside[name]),
            reports[name]["streams"][STREAM],
        )
        for name in configs
    }
    print(
        f"PostgreSQL {server.server_version_num() // 10000}, {rows} rows, {updates} updates, "
        f"a deselected 2048-byte column; median wall time of {rounds} runs each"
    )
    for name, (received, seconds, run_seconds, counts) in results.items():
        print(
            f"{name:>13}: {received / 1e6:8.2f} MB read from the slot, {seconds:6.2f} s wall "
            f"({run_seconds:.2f} s in the run report), {counts['changes']} changes"
        )
    (with_bytes, with_s, with_run, _), (without_bytes, without_s, without_run, _) = results.values()
    print(
        f"bytes saved: {1 - with_bytes / without_bytes:.1%} (ratio {without_bytes / with_bytes:.1f}x)"
    )
    print(
        f"time ratio (without / with): {without_s / with_s:.2f}x wall, "
        f"{without_run / with_run:.2f}x in the run report"
    )


if __name__ == "__main__":
    main()
