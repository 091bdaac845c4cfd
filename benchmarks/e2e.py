"""End to end: `meltano run tap-pgcdc <loader>` against the tap alone and the loader alone.

    python benchmarks/e2e.py                    # 200k-row snapshot, 70k changes, both loaders
    python benchmarks/e2e.py --rows 1000000 --updates 200000 --inserts 100000 --deletes 50000

Starts a throwaway PostgreSQL server (tests/pgserver.py) and builds bench.py's table of `--rows`
rows in a template database. For each loader (target-duckdb, target-postgres: the loaders of
meltano.yml), each variant (`--variant`) and each round, in a fresh copy of that database and a
fresh target:

  snapshot  `meltano run tap-pgcdc <loader>` (the first run: the snapshot of the LOG_BASED stream)
  changes   `--updates` UPDATEs, `--inserts` INSERTs, `--deletes` DELETEs in 1000-row
            transactions, then the second `meltano run`, which reads them from the log

Beside each `meltano run`, for the same rows: the tap alone (its executable from the plugin venv,
with the catalog Meltano handed it and, for the changes, the state Meltano stored) to /dev/null,
then again into a file; the loader alone (its executable from its plugin venv, with the config
`meltano config print` gives it) fed that file, into a target of its own in the same state. After
every load the target is checked against the source: row count, sum of `n`, count of `note` (the
rows deleted in the source excluded), so every insert, update and delete arrived.

It prints wall time and rows/s of each process and the shares: tap alone / meltano run and
loader alone / meltano run, all measured in the same invocation, with the machine and its load.
`--variant NAME:KEY=VALUE,...` adds a set of settings to compare (alternating with the others in
every round): `target-duckdb.batch_size_rows=500000` sets a loader setting (as the environment
variable TARGET_DUCKDB_BATCH_SIZE_ROWS), `env.NAME=VALUE` an environment variable of the tap.
The plugins are the ones `meltano install` put under the checkout's .meltano (`--plugins DIR`:
another .meltano, e.g. /work/main/.meltano).
"""

from __future__ import annotations

import argparse
import json
import os
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

from benchmarks.bench import (  # noqa: E402
    Run,
    create_table,
    drop_slot,
    log_workload,
    machine,
    run_process,
)
from tests.pgserver import PgServer, running_server  # noqa: E402

LOADERS = ("target-duckdb", "target-postgres")
TEMPLATE_DB = "e2e_source"
STREAM = "public-t"
# What the check compares, rows deleted in the source (soft deletes in target-postgres) left out.
CHECK_SQL = "SELECT count(*), coalesce(sum(n), 0), count(note) FROM {table}{where}"


@dataclass(frozen=True)
class Variant:
    """A named set of settings: loader settings by loader, environment variables for the tap."""

    name: str
    loader_settings: dict[str, dict[str, str]] = field(default_factory=dict)
    tap_env: dict[str, str] = field(default_factory=dict)


def parse_variant(text: str) -> Variant:
    name, _, items = text.partition(":")
    loader_settings: dict[str, dict[str, str]] = {}
    tap_env: dict[str, str] = {}
    for item in filter(None, items.split(",")):
        key, _, value = item.partition("=")
        scope, _, setting = key.partition(".")
        if scope == "env":
            tap_env[setting] = value
        elif scope in LOADERS:
            loader_settings.setdefault(scope, {})[setting] = value
        else:
            raise SystemExit(f"--variant {text!r}: {key!r} is neither env.NAME nor <loader>.NAME")
    return Variant(name, loader_settings, tap_env)


@dataclass
class Measured:
    """One scenario of one pipeline: the three processes and what the target held after each."""

    loader: str
    variant: str
    scenario: str
    units: int
    meltano_s: float
    tap: Run
    tap_to_file: Run
    target: Run
    record_bytes: int
    idle_meltano_s: float | None = None

    def row(self) -> dict[str, Any]:
        return {
            "loader": self.loader,
            "variant": self.variant,
            "scenario": self.scenario,
            "units": self.units,
            "meltano_s": round(self.meltano_s, 2),
            "tap_s": round(self.tap.seconds, 2),
            "tap_to_file_s": round(self.tap_to_file.seconds, 2),
            "target_s": round(self.target.seconds, 2),
            "tap_cpu_s": round(self.tap.cpu_seconds, 2),
            "target_cpu_s": round(self.target.cpu_seconds, 2),
            "meltano_per_s": self.units / self.meltano_s,
            "tap_per_s": self.units / self.tap.seconds,
            "target_per_s": self.units / self.target.seconds,
            "tap_share": self.tap.seconds / self.meltano_s,
            "target_share": self.target.seconds / self.meltano_s,
            "tap_rss_mb": self.tap.max_rss_kb / 1024,
            "target_rss_mb": self.target.max_rss_kb / 1024,
            "bytes_per_record": self.record_bytes / max(self.units, 1),
            "idle_meltano_s": self.idle_meltano_s,
        }


class Pipeline:
    """One source database, one Meltano system database and state, one target (and its twin)."""

    def __init__(self, server: PgServer, plugins: Path, workdir: Path, loader: str, tag: str):
        self.server, self.loader, self.tag = server, loader, tag
        self.workdir = workdir / tag
        self.workdir.mkdir()
        self.source = f"src_{tag}"
        server.execute(f"CREATE DATABASE {self.source} TEMPLATE {TEMPLATE_DB}")
        # The target of `meltano run` and the twin the loader alone loads into.
        self.targets = [f"dst_{tag}", f"twin_{tag}"]
        if loader == "target-postgres":
            for name in self.targets:
                server.create_database(name)
        sys_dir = self.workdir / ".meltano-sys"
        sys_dir.mkdir()
        for kind in ("extractors", "loaders"):
            (sys_dir / kind).symlink_to(plugins / kind)
        self.sys_dir = sys_dir
        self.plugins = plugins
        self.tap_config = {
            "host": server.host,
            "port": server.port,
            "user": server.superuser,
            "database": self.source,
            "slot_name": f"slot_{tag}",
            "publication_name": f"pub_{tag}",
        }

    def loader_config(self, target: str) -> dict[str, Any]:
        if self.loader == "target-duckdb":
            return {"filepath": str(self.workdir / f"{target}.duckdb")}
        return {
            "host": self.server.host,
            "port": self.server.port,
            "user": self.server.superuser,
            "password": "unused",  # trust authentication; the target insists on one
            "database": target,
        }

    def env(self, variant: Variant, target: str) -> dict[str, str]:
        prefixes = ("TAP_PGCDC_", "TARGET_DUCKDB_", "TARGET_POSTGRES_", "MELTANO_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        env.pop("VIRTUAL_ENV", None)
        env.update(
            {
                "MELTANO_DATABASE_URI": f"sqlite:///{self.workdir / 'meltano.db'}",
                "MELTANO_SYS_DIR_ROOT": str(self.sys_dir),
                "MELTANO_ENVIRONMENT": "dev",
                "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            }
        )
        env.update({f"TAP_PGCDC_{k.upper()}": str(v) for k, v in self.tap_config.items()})
        env.update(variant.tap_env)
        prefix = self.loader.upper().replace("-", "_") + "_"
        settings = {**self.loader_config(target), **variant.loader_settings.get(self.loader, {})}
        env.update({prefix + k.upper(): str(v) for k, v in settings.items()})
        return env

    def meltano(self, meltano: Path, variant: Variant, *args: str) -> tuple[float, str]:
        started = time.perf_counter()
        proc = subprocess.run(
            [str(meltano), *args],
            cwd=REPO,
            env=self.env(variant, self.targets[0]),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.splitlines()[-40:])
            raise SystemExit(f"meltano {' '.join(args)} exited {proc.returncode}:\n{tail}")
        return seconds, proc.stdout

    def run(self, meltano: Path, variant: Variant) -> float:
        args = ["run", "--state-id-suffix", self.tag, "tap-pgcdc", self.loader]
        return self.meltano(meltano, variant, *args)[0]

    def state(self, meltano: Path, variant: Variant) -> dict[str, Any]:
        state_id = f"dev:tap-pgcdc-to-{self.loader}:{self.tag}"
        return json.loads(self.meltano(meltano, variant, "state", "get", state_id)[1])[
            "singer_state"
        ]

    def write_target_config(self, meltano: Path, variant: Variant) -> Path:
        """What Meltano hands the loader, pointed at the twin target."""
        _, out = self.meltano(meltano, variant, "config", "--unsafe", "print", self.loader)
        config = json.loads(out)
        config.update(self.loader_config(self.targets[1]))
        for key, value in variant.loader_settings.get(self.loader, {}).items():
            try:
                config[key] = json.loads(value)
            except json.JSONDecodeError:
                config[key] = value
        path = self.workdir / "target-config.json"
        path.write_text(json.dumps(config))
        return path

    def tap_alone(self, state: dict[str, Any] | None, variant: Variant, out: Path | None) -> Run:
        """The tap with Meltano's catalog, to /dev/null or into `out`."""
        config = dict(self.tap_config)
        if state is None:  # its own slot: the snapshot of a first run, as Meltano's first run
            config["slot_name"] = f"alone_{self.tag}_{int(out is not None)}"
        (self.workdir / "tap-config.json").write_text(json.dumps(config))
        catalog = self.sys_dir / "run" / "tap-pgcdc" / "tap.properties.json"
        cmd = [str(self.plugins / "extractors/tap-pgcdc/venv/bin/tap-pgcdc")]
        cmd += ["--config", str(self.workdir / "tap-config.json"), "--catalog", str(catalog)]
        if state is not None:
            (self.workdir / "tap-state.json").write_text(json.dumps(state))
            cmd += ["--state", str(self.workdir / "tap-state.json")]
        try:
            return run_process(cmd, env=variant.tap_env, stdout_path=out)
        finally:
            if state is None:
                drop_slot(self.server, self.source, config["slot_name"])

    def target_alone(self, config: Path, records: Path) -> Run:
        exe = self.plugins / "loaders" / self.loader / "venv" / "bin" / self.loader
        return run_process([str(exe), "--config", str(config)], stdin_path=records)

    def check(self, target: str, what: str) -> None:
        """The target holds what the source holds (rows deleted in the source left out)."""
        expected = tuple(
            self.server.execute(CHECK_SQL.format(table="t", where=""), dbname=self.source)[0]
        )
        if self.loader == "target-duckdb":
            import duckdb

            conn = duckdb.connect(str(self.workdir / f"{target}.duckdb"), read_only=True)
            try:
                got = conn.execute(CHECK_SQL.format(table="public.t", where="")).fetchone()
            finally:
                conn.close()
        else:
            where = " WHERE _sdc_deleted_at IS NULL"
            got = self.server.execute(
                CHECK_SQL.format(table="public.t", where=where), dbname=target
            )[0]
        got = tuple(int(x) for x in got or ())
        expected = tuple(int(x) for x in expected)
        if got != expected:
            raise SystemExit(
                f"{what}: {self.loader} holds (rows, sum n, notes) {got}, the source {expected}"
            )

    def drop(self) -> None:
        self.server.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = %s AND NOT active",
            (self.source,),
        )
        for name in (self.source, *self.targets):
            self.server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def keep(args: argparse.Namespace, records: Path, name: str) -> None:
    if args.keep_records:
        args.keep_records.mkdir(parents=True, exist_ok=True)
        shutil.copy(records, args.keep_records / f"{name}.jsonl")


def one_pipeline(
    args: argparse.Namespace,
    server: PgServer,
    workdir: Path,
    loader: str,
    variant: Variant,
    tag: str,
) -> list[Measured]:
    p = Pipeline(server, args.plugins, workdir, loader, tag)
    records = p.workdir / "records.jsonl"
    results = []
    try:
        config = p.write_target_config(args.meltano, variant)
        # Snapshot: Meltano's first run, then the tap alone and the loader alone.
        meltano_s = p.run(args.meltano, variant)
        p.check(p.targets[0], "snapshot through meltano run")
        tap = p.tap_alone(None, variant, None)
        to_file = p.tap_alone(None, variant, records)
        target = p.target_alone(config, records)
        p.check(p.targets[1], "snapshot through the loader alone")
        size = records.stat().st_size
        keep(args, records, f"{tag}-snapshot")
        results.append(
            Measured(
                loader, variant.name, "snapshot", args.rows, meltano_s, tap, to_file, target, size
            )
        )
        if "changes" in args.scenarios:
            state = p.state(args.meltano, variant)
            changes = log_workload(
                server, p.source, args.rows, args.updates, args.inserts, args.deletes
            )
            # The tap confirms no more than its input state: each of these reads the same window.
            tap = p.tap_alone(state, variant, None)
            to_file = p.tap_alone(state, variant, records)
            meltano_s = p.run(args.meltano, variant)
            p.check(p.targets[0], "changes through meltano run")
            target = p.target_alone(config, records)
            p.check(p.targets[1], "changes through the loader alone")
            size = records.stat().st_size
            keep(args, records, f"{tag}-changes")
            results.append(
                Measured(
                    loader, variant.name, "changes", changes, meltano_s, tap, to_file, target, size
                )
            )
            # Meltano's own cost: a run with nothing to read.
            results[-1].idle_meltano_s = p.run(args.meltano, variant)
    finally:
        p.drop()
        shutil.rmtree(p.workdir, ignore_errors=True)
    for m in results:
        print(json.dumps(m.row()), file=sys.stderr)
    return results


def summarize(results: list[Measured]) -> list[dict[str, Any]]:
    """Median over the rounds of each (loader, variant, scenario)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for m in results:
        groups.setdefault((m.loader, m.scenario, m.variant), []).append(m.row())
    rows = []
    for (loader, scenario, variant), items in groups.items():
        row: dict[str, Any] = {"loader": loader, "scenario": scenario, "variant": variant}
        for key in items[0]:
            if key not in row:
                values = [item[key] for item in items if item[key] is not None]
                row[key] = statistics.median(values) if values else None
        row["rounds"] = len(items)
        row["meltano_runs_s"] = [item["meltano_s"] for item in items]
        rows.append(row)
    return rows


def report(
    rows: list[dict[str, Any]], info: dict[str, Any], version: str, end_load: list[float]
) -> str:
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, {info['os']}",
        f"Python {info['python']}, singer-sdk {info['singer_sdk']}, PostgreSQL {version}; "
        f"load average at start {info['load_average']}, at end {end_load}",
        "",
        "| loader | scenario | variant | units | meltano run | /s | tap alone | /s | loader alone | /s "
        "| tap share | loader share | tap CPU | loader CPU | bytes/record | loader peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['loader']} | {r['scenario']} | {r['variant']} | {r['units']:,} "
            f"| {r['meltano_s']:.1f} s | {r['meltano_per_s']:,.0f} | {r['tap_s']:.1f} s "
            f"| {r['tap_per_s']:,.0f} | {r['target_s']:.1f} s | {r['target_per_s']:,.0f} "
            f"| {r['tap_share']:.0%} | {r['target_share']:.0%} | {r['tap_cpu_s']:.1f} s "
            f"| {r['target_cpu_s']:.1f} s | {r['bytes_per_record']:.0f} "
            f"| {r['target_rss_mb']:.0f} MB |"
        )
    lines.append("")
    for r in rows:
        idle = r.get("idle_meltano_s")
        lines.append(
            f"{r['loader']} {r['scenario']} {r['variant']}: meltano run {r['meltano_runs_s']} s "
            f"over {r['rounds']} round(s)"
            + (f"; a meltano run with nothing to read {idle:.1f} s" if idle is not None else "")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the table")
    parser.add_argument("--updates", type=int, default=40_000)
    parser.add_argument("--inserts", type=int, default=20_000)
    parser.add_argument("--deletes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every pipeline")
    parser.add_argument("--loaders", default=",".join(LOADERS), help="comma-separated")
    parser.add_argument("--scenarios", default="snapshot,changes", help="snapshot[,changes]")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:KEY=VALUE,... (KEY: <loader>.<setting> or env.<NAME>); default: as configured",
    )
    parser.add_argument("--plugins", type=Path, default=REPO / ".meltano", help="a .meltano dir")
    parser.add_argument("--meltano", type=Path, default=None, help="the meltano executable")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep-records", type=Path, help="keep the tap's recorded output here")
    args = parser.parse_args()
    if args.updates + args.deletes > args.rows:
        parser.error("--updates + --deletes must not exceed --rows")
    if any(n % 1000 for n in (args.updates, args.inserts, args.deletes)):
        parser.error(
            "--updates, --inserts and --deletes are run in 1000-row transactions: give multiples of 1000"
        )
    args.meltano = args.meltano or args.plugins / "meltano-venv" / "bin" / "meltano"
    if not args.meltano.exists():
        args.meltano = Path("/work/main/.meltano/meltano-venv/bin/meltano")
    loaders = args.loaders.split(",")
    for loader in loaders:
        exe = args.plugins / "loaders" / loader / "venv" / "bin" / loader
        if not exe.exists():
            parser.error(f"{exe} is missing: run `meltano install` (or pass --plugins)")
    variants = [parse_variant(v) for v in args.variant] or [Variant("as configured")]
    info = machine()
    results: list[Measured] = []
    settings = {"max_wal_size": "8GB", "checkpoint_timeout": "30min"}
    with running_server(settings=settings) as server, tempfile.TemporaryDirectory() as tmp:
        version = str(server.execute("SHOW server_version")[0][0])
        server.create_database(TEMPLATE_DB)
        print(f"Loading {args.rows:,} rows...", file=sys.stderr)
        create_table(server, TEMPLATE_DB, "t", args.rows)
        n = 0
        for _ in range(args.rounds):
            for loader in loaders:
                for variant in variants:
                    n += 1
                    print(f"{loader}, {variant.name}...", file=sys.stderr)
                    results += one_pipeline(args, server, Path(tmp), loader, variant, f"p{n}")
    rows = summarize(results)
    print(report(rows, info, version, [round(x, 2) for x in os.getloadavg()]))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": info, "postgres": version, "results": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
