"""Snapshot throughput through BATCH files against the RECORD path and plain COPY.

    python benchmarks/batch_snapshot.py --rows 200000 --runs 3

The table of benchmarks/bench.py, snapshotted as a LOG_BASED stream's first snapshot (the case
BATCH files apply to) by whole tap processes: RECORD lines to /dev/null, BATCH files (jsonl,
gzip and uncompressed) in a temporary directory, and `psql -c "COPY (SELECT * FROM t) TO
STDOUT"`, alternating round by round; medians, rows/s, each against COPY, and the load average.
Each tap run starts without state, its slot dropped after it (a first snapshot every time); the
time includes the short log read that follows a snapshot, as a real first run has it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (
    REPO,
    base_config,
    catalog_for,
    create_table,
    drop_slot,
    run_process,
    tap_cmd,
)

from tests.pgserver import running_server


def count_rows(root: Path) -> int:
    """Rows in the BATCH files under `root` (checks each file's row count adds up)."""
    total = 0
    for path in root.iterdir():
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        total += data.count(b"\n")
    return total


def run_tap(cmd: list[str]) -> tuple[float, float]:
    """Run the tap from this checkout: wall seconds, and the snapshot's own (the SDK's timer)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # not the installed package
    started = time.monotonic()
    proc = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=tempfile.gettempdir()
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.decode(errors="replace")[-3000:])
    for line in proc.stderr.decode(errors="replace").splitlines():
        if '"metric":"sync_duration"' in line:
            return wall, float(json.loads(line.split("METRIC: ", 1)[1])["value"])
    raise SystemExit("no sync_duration metric in the tap's log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with running_server() as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        db = "bench"
        server.create_database(db)
        create_table(server, db, "t", args.rows)
        psql = server.bin_dir / "psql"
        if not psql.exists():
            psql = Path(shutil.which("psql") or "psql")
        copy = [
            str(psql),
            "-X",
            "-q",
            "-d",
            server.dsn(db),
            "-c",
            "COPY (SELECT * FROM t) TO STDOUT",
        ]
        config = base_config(server, db, "batch")
        catalog = catalog_for(config, "t", "LOG_BASED", {"PYTHONPATH": str(REPO)}, workdir)
        roots = {name: workdir / name for name in ("gzip", "none")}
        configs: dict[str, dict[str, Any]] = {"record": config}
        for name, root in roots.items():
            configs[f"batch {name}"] = {
                **config,
                "batch_config": {
                    "encoding": {"format": "jsonl", "compression": name},
                    "storage": {"root": root.as_uri()},
                },
            }
        seconds: dict[str, list[float]] = {name: [] for name in ["copy", *configs]}
        snapshot: dict[str, list[float]] = {name: [] for name in seconds}
        loads = [os.getloadavg()[0]]
        for round_ in range(args.runs + 1):  # the first round warms up
            for name in seconds:
                for root in roots.values():
                    shutil.rmtree(root, ignore_errors=True)
                if name == "copy":
                    wall = sync = run_process(copy).seconds
                else:
                    sub = workdir / name.replace(" ", "_")
                    sub.mkdir(exist_ok=True)
                    wall, sync = run_tap(tap_cmd(sub, configs[name], catalog, None))
                    drop_slot(server, db, "bench_batch")
                    if name.startswith("batch"):
                        got = count_rows(roots[name.split()[1]])
                        assert got == args.rows, (name, got)
                if round_:
                    seconds[name].append(wall)
                    snapshot[name].append(sync)
            loads.append(os.getloadavg()[0])
    copy_s = statistics.median(seconds["copy"])
    print(f"{args.rows:,} rows, {args.runs} rounds, load average (1 min) {loads}")
    print("| path | process s | snapshot s | snapshot rows/s | of COPY's rows/s |")
    print("|---|---|---|---|---|")
    for name, runs in seconds.items():
        wall, sync = statistics.median(runs), statistics.median(snapshot[name])
        print(
            f"| {name} | {wall:.2f} | {sync:.2f} | {args.rows / sync:,.0f} | {copy_s / sync:.0%} |"
        )
    print(json.dumps({"process": seconds, "snapshot": snapshot}))


if __name__ == "__main__":
    main()
