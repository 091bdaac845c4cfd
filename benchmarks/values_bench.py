"""Large values: unchanged-TOAST read-backs and peak memory against the largest row (issue 13).

    python benchmarks/values_bench.py --before /path/to/old/checkout
    python benchmarks/values_bench.py --scenarios large --large-value-mb 50

Starts a throwaway PostgreSQL server (tests/pgserver.py), then for each scenario runs the tap
(whole processes, under benchmarks/measure.py) from the same state over the same log window,
once per code version: the checkout given with `--before` (e.g. `git worktree add /tmp/old
<commit>`), then this repository; each version `--runs` times, the versions alternating.

  toast   a table of `--toast-rows` rows with a `--value-kb` text column stored out of line and
          an int column; `--updates` UPDATEs of the int column in 1000-row transactions. The log
          does not resend the text (no REPLICA IDENTITY FULL): the tap reads it back by key.
          Prints wall time, changes/s and the ratio between the versions.
  large   one row with a `--large-value-mb` MB text and a bytea of 40 % of that: the snapshot
          (FULL_TABLE), the log of its INSERT (every value in the log), and the log of an UPDATE
          of another column (the values read back by key). Prints each run's peak RSS against
          the longest RECORD line written and the row's size.

The output of each version's runs is compared (record count, longest line), so a faster version
that writes something else does not pass unnoticed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import REPO, base_config, catalog_for, last_state, tap_cmd  # noqa: E402

from tests.pgserver import PgServer, running_server  # noqa: E402

TXN_ROWS = 1000


@dataclass
class Output:
    """One tap process: time, peak RSS, and what it wrote."""

    seconds: float
    max_rss_mb: float
    records: int
    longest_line: int
    last_state: dict[str, Any] | None


@dataclass
class Case:
    name: str
    units: int  # changes or rows
    runs: dict[str, list[Output]] = field(default_factory=dict)  # by version


def run_tap(cmd: list[str], pythonpath: Path) -> Output:
    """Run the tap under measure.py with `pythonpath` first: time, RSS, records, longest line."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result"
        errors = Path(tmp) / "stderr"
        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
        with errors.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "measure.py"), str(result), *cmd],
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                cwd=tempfile.gettempdir(),
            )
            assert proc.stdout is not None
            records = longest = current = 0
            state_line = head = b""  # the last STATE line; the current line's first bytes
            while chunk := proc.stdout.read(1 << 20):
                start = 0
                while start < len(chunk):
                    newline = chunk.find(b"\n", start)
                    end = len(chunk) if newline < 0 else newline
                    if current < 1 << 16:  # STATE lines are short: keep the start of each line
                        head += chunk[start : min(end, start + (1 << 16))]
                    current += end - start
                    if newline < 0:
                        break
                    records += head.startswith(b'{"type":"RECORD"')
                    if head.startswith(b'{"type":"STATE"'):
                        state_line = head
                    longest = max(longest, current)
                    current, head, start = 0, b"", newline + 1
            if proc.wait() != 0:
                raise SystemExit(f"tap exited {proc.returncode}:\n{errors.read_text()[-3000:]}")
        seconds, rss_kb = result.read_text().split()
    state = json.loads(state_line)["value"] if state_line else None
    return Output(float(seconds), int(rss_kb) / 1024, records, longest, state)


def measure(case: Case, cmd: list[str], versions: dict[str, Path], runs: int) -> Case:
    for _ in range(runs):
        for name, path in versions.items():
            out = run_tap(cmd, path)
            case.runs.setdefault(name, []).append(out)
            print(
                f"  {case.name} [{name}]: {out.seconds:.2f} s, peak RSS {out.max_rss_mb:.0f} MB, "
                f"{out.records} records, longest line {out.longest_line / 1e6:.1f} MB",
                file=sys.stderr,
            )
    seen = {(o.records, o.longest_line) for outs in case.runs.values() for o in outs}
    if len({r for r, _ in seen}) != 1:
        raise SystemExit(f"{case.name}: the versions wrote different record counts: {seen}")
    return case


# --- scenarios --------------------------------------------------------------------------------


def toast_case(server: PgServer, db: str, args, versions, workdir: Path) -> Case:
    server.execute(
        "CREATE TABLE tt (id int PRIMARY KEY, n int NOT NULL, body text NOT NULL)", dbname=db
    )
    server.execute("ALTER TABLE tt ALTER COLUMN body SET STORAGE EXTERNAL", dbname=db)
    repeats = args.value_kb * 1000 // 32 + 1
    for lo in range(1, args.toast_rows + 1, 5000):
        server.execute(
            "INSERT INTO tt SELECT g, 0, left(repeat(md5(g::text), %s), %s) "
            "FROM generate_series(%s, %s) g",
            (repeats, args.value_kb * 1000, lo, min(lo + 4999, args.toast_rows)),
            dbname=db,
        )
    server.execute("VACUUM ANALYZE tt", dbname=db)
    config = base_config(server, db, "toast")
    catalog = catalog_for(config, "tt", "LOG_BASED", {}, workdir)
    state = last_state(tap_cmd(workdir, config, catalog, None), {})
    conn = server.connect(db)
    try:
        with conn.cursor() as cur:
            done = 0
            while done < args.updates:
                for lo in range(1, args.toast_rows + 1, TXN_ROWS):
                    hi = min(lo + TXN_ROWS - 1, args.toast_rows, lo + args.updates - done - 1)
                    cur.execute("UPDATE tt SET n = n + 1 WHERE id BETWEEN %s AND %s", (lo, hi))
                    done += hi - lo + 1
                    if done >= args.updates:
                        break
    finally:
        conn.close()
    cmd = tap_cmd(workdir, config, catalog, state)
    return measure(Case("toast", args.updates), cmd, versions, args.runs)


def large_cases(server: PgServer, db: str, args, versions, workdir: Path) -> list[Case]:
    text_bytes = args.large_value_mb * 1_000_000
    bytea_bytes = text_bytes * 2 // 5
    server.execute(
        "CREATE TABLE lv (id int PRIMARY KEY, n int NOT NULL, t text, b bytea)", dbname=db
    )
    insert = (
        "INSERT INTO lv SELECT %s, 0, left(repeat(md5(random()::text), %s), %s), "
        "substring(decode(repeat(md5(random()::text), %s), 'hex') FROM 1 FOR %s)"
    )
    params = (text_bytes // 32 + 1, text_bytes, bytea_bytes // 16 + 1, bytea_bytes)
    cases = []
    snap_config = base_config(server, db, "large_snap")
    snap_catalog = catalog_for(snap_config, "lv", "FULL_TABLE", {}, workdir / "s")
    snap = tap_cmd(workdir / "s", snap_config, snap_catalog, None)
    # The interpreter: the same snapshot of the empty table.
    cases.append(measure(Case("empty snapshot", 0), snap, versions, args.runs))
    server.execute(insert, (1, *params), dbname=db)
    cases.append(measure(Case("large snapshot", 1), snap, versions, args.runs))
    config = base_config(server, db, "large_log")
    catalog = catalog_for(config, "lv", "LOG_BASED", {}, workdir / "l")
    state = last_state(tap_cmd(workdir / "l", config, catalog, None), {})
    server.execute(insert, (2, *params), dbname=db)
    log_cmd = tap_cmd(workdir / "l", config, catalog, state)
    inserted = measure(Case("large log insert", 1), log_cmd, versions, args.runs)
    cases.append(inserted)
    after = next(iter(inserted.runs.values()))[0].last_state
    server.execute("UPDATE lv SET n = 1 WHERE id = 2", dbname=db)
    update_cmd = tap_cmd(workdir / "u", config, catalog, after)
    cases.append(measure(Case("large log update", 1), update_cmd, versions, args.runs))
    return cases


def report(cases: list[Case], row_mb: float | None) -> str:
    names = list(cases[0].runs)
    lines = [
        "| case | " + " | ".join(f"{n} s | {n} peak RSS MB" for n in names) + " | ratio |",
        "|---|" + "---|---|" * len(names) + "---|",
    ]
    for case in cases:
        cells = []
        medians = []
        for name in names:
            outs = case.runs[name]
            median = statistics.median(o.seconds for o in outs)
            medians.append(median)
            cells.append(f"{median:.2f} | {max(o.max_rss_mb for o in outs):.0f}")
        ratio = medians[0] / medians[-1] if len(medians) > 1 else 1.0
        lines.append(f"| {case.name} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    base = {
        name: max(o.max_rss_mb for o in case.runs[name])
        for case in cases
        if case.name == "empty snapshot"
        for name in names
    }
    for case in cases:
        outs = next(iter(case.runs.values()))
        line_mb = outs[0].longest_line / 1e6
        if base and case.name.startswith("large"):
            lines.append(
                f"{case.name}: peak RSS above the interpreter's / longest line: "
                + ", ".join(
                    f"{name} {(max(o.max_rss_mb for o in case.runs[name]) - base[name]) * 2**20 / outs[0].longest_line:.1f}x"
                    for name in names
                )
            )
        rate = f", {case.units / statistics.median(o.seconds for o in outs):,.0f}/s"
        lines.append(
            f"{case.name}: {outs[0].records} records, longest line {line_mb:.1f} MB"
            + (f", row {row_mb:.0f} MB" if row_mb and case.name.startswith("large") else "")
            + (rate if case.name == "toast" else "")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="toast,large", help="comma-separated: toast,large")
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--toast-rows", type=int, default=20_000)
    parser.add_argument("--value-kb", type=int, default=20)
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--large-value-mb", type=int, default=50)
    args = parser.parse_args()
    versions = {"before": args.before.resolve()} if args.before else {}
    versions["after"] = REPO
    wanted = set(args.scenarios.split(","))
    cases: list[Case] = []
    with running_server() as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for sub in ("s", "l", "u"):
            (workdir / sub).mkdir()
        server.create_database("vb")
        if "toast" in wanted:
            print("TOAST read-back scenario...", file=sys.stderr)
            cases.append(toast_case(server, "vb", args, versions, workdir))
        if "large" in wanted:
            print("Large value scenario...", file=sys.stderr)
            cases.extend(large_cases(server, "vb", args, versions, workdir))
    row_mb = args.large_value_mb * 1.4
    print(report(cases, row_mb))


if __name__ == "__main__":
    main()
