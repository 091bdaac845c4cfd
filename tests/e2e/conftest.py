"""End-to-end fixtures: `meltano run tap-pgcdc target-duckdb` against a test database.

Meltano and its plugin venvs come from `scripts/setup.sh` (`bash scripts/test.sh` runs it). Each
test gets its own DuckDB file, its own Meltano system database (so its own state) and its own
Meltano system directory (`.meltano`: the run files Meltano writes for each plugin, such as the
catalog it hands the tap, are per test, so tests can run in parallel), all in the test's tmp dir,
and configures the tap purely through TAP_PGCDC_* environment variables.

`postgres_pipeline` loads into a second database of the same server with target-postgres
(MeltanoLabs, SDK-based), the loader that implements ACTIVATE_VERSION (TRUNCATE).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from psycopg2 import sql

from tests.conftest import TestDb
from tests.e2e import duckdb_compare
from tests.pgserver import PgServer

REPO = Path(__file__).resolve().parents[2]
MELTANO = Path(os.environ.get("TAP_PGCDC_MELTANO", REPO / ".meltano/meltano-venv/bin/meltano"))
TAP_EXECUTABLE = REPO / ".meltano/extractors/tap-pgcdc/venv/bin/tap-pgcdc"
PLUGIN_EXECUTABLES = (
    TAP_EXECUTABLE,
    REPO / ".meltano/loaders/target-duckdb/venv/bin/target-duckdb",
    REPO / ".meltano/loaders/target-postgres/venv/bin/target-postgres",
)
LOADERS = ("target-duckdb", "target-postgres")
RUN_TIMEOUT_S = 600
STDERR_TAIL_LINES = 80


def meltano_sys_dir(workdir: Path) -> Path:
    """A Meltano system directory of its own in `workdir`, sharing the project's plugin venvs.

    Meltano writes each plugin's run files (`run/<plugin>/tap.properties.json`, the config and
    state it hands the tap) under its system directory at a fixed path: two `meltano run`s in
    one `.meltano` at the same time could hand a tap the other's catalog.
    """
    sys_dir = workdir / ".meltano-sys"
    if not sys_dir.exists():
        sys_dir.mkdir()
        for kind in ("extractors", "loaders"):
            (sys_dir / kind).symlink_to(REPO / ".meltano" / kind)
    return sys_dir


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


@pytest.fixture(scope="session")
def meltano_bin() -> Path:
    """The project's Meltano, with the plugins installed."""
    missing = [p for p in (MELTANO, *PLUGIN_EXECUTABLES) if not p.exists()]
    if missing:
        msg = (
            f"Meltano or its plugins are not installed ({', '.join(map(str, missing))}). "
            "Run `bash scripts/setup.sh`, or run the tests with `bash scripts/test.sh`."
        )
        pytest.fail(msg)
    return MELTANO


@dataclass
class MeltanoRun:
    """One finished `meltano run`."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        return "\n".join(self.stderr.splitlines()[-lines:])


def _env_prefix(plugin: str) -> str:
    return plugin.upper().replace("-", "_") + "_"


@dataclass
class TapOnlyRun:
    """What one run of the tap without a target wrote (then thrown away)."""

    records: dict[str, int]  # stream -> RECORD messages
    last_state: dict[str, Any] | None  # the value of the last STATE message


@dataclass
class Pipeline:
    """`meltano run tap-pgcdc <loader>` for one test database, and its output.

    The loader is target-duckdb (a DuckDB file in the test's tmp dir) unless the test asks for
    target-postgres (`postgres_pipeline`).
    """

    db: TestDb
    meltano: Path
    workdir: Path
    state_id_suffix: str
    target_config: dict[str, Any] = field(default_factory=dict)
    runs: list[MeltanoRun] = field(default_factory=list)
    loader: str = "target-duckdb"
    # Meltano extras of the extractor (TAP_PGCDC__<NAME>), e.g. {"catalog": "<path>"}.
    extractor_extras: dict[str, Any] = field(default_factory=dict)

    @property
    def duckdb_path(self) -> Path:
        return self.workdir / "warehouse.duckdb"

    def env(
        self, tap_overrides: dict[str, Any], target_overrides: dict[str, Any]
    ) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TAP_PGCDC_", *(_env_prefix(p) for p in LOADERS)))
        }
        env.pop("VIRTUAL_ENV", None)
        env.update(
            {
                # The test's own system database holds its state: no run sees another's.
                "MELTANO_DATABASE_URI": f"sqlite:///{self.workdir / 'meltano.db'}",
                "MELTANO_SYS_DIR_ROOT": str(meltano_sys_dir(self.workdir)),
                "MELTANO_ENVIRONMENT": "dev",
                "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
                "MELTANO_RUN_REFRESH_CATALOG": "true",
                "TARGET_DUCKDB_FILEPATH": str(self.duckdb_path),
            }
        )
        for key, value in self.db.config(**tap_overrides).items():
            env[f"TAP_PGCDC_{key.upper()}"] = _env_value(value)
        for key, value in self.extractor_extras.items():
            env[f"TAP_PGCDC__{key.upper()}"] = _env_value(value)
        prefix = _env_prefix(self.loader)
        for key, value in {**self.target_config, **target_overrides}.items():
            env[f"{prefix}{key.upper()}"] = _env_value(value)
        return env

    def run(
        self,
        *,
        check: bool = True,
        target: dict[str, Any] | None = None,
        timeout: float = RUN_TIMEOUT_S,
        **tap_overrides: Any,
    ) -> MeltanoRun:
        """Run the pipeline once; fail the test with Meltano's stderr tail unless it succeeds."""
        args = [
            str(self.meltano),
            "run",
            "--state-id-suffix",
            self.state_id_suffix,
            "tap-pgcdc",
            self.loader,
        ]
        started = time.monotonic()
        proc = subprocess.run(
            args,
            cwd=REPO,
            env=self.env(tap_overrides, target or {}),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result = MeltanoRun(
            args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started
        )
        self.runs.append(result)
        (self.workdir / f"meltano-run-{len(self.runs)}.log").write_text(proc.stderr)
        if check and proc.returncode != 0:
            msg = (
                f"`meltano run tap-pgcdc {self.loader}` exited {proc.returncode} "
                f"after {result.seconds:.1f}s (database {self.db.name}).\n"
                f"--- last {STDERR_TAIL_LINES} lines of stderr ---\n{result.stderr_tail()}"
            )
            pytest.fail(msg, pytrace=False)
        return result

    def state(self) -> dict[str, Any]:
        """The state Meltano stored for this pipeline."""
        state_id = f"dev:tap-pgcdc-to-{self.loader}:{self.state_id_suffix}"
        proc = subprocess.run(
            [str(self.meltano), "state", "get", state_id],
            cwd=REPO,
            env=self.env({}, {}),
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    def _run_tap(self, *args: str, **tap_overrides: Any) -> str:
        """Run the extractor's executable itself (no Meltano, no target); return its stdout."""
        config = self.workdir / "tap-config.json"
        config.write_text(json.dumps(self.db.config(**tap_overrides)))
        proc = subprocess.run(
            [str(TAP_EXECUTABLE), "--config", str(config), *args],
            cwd=self.workdir,
            env={k: v for k, v in os.environ.items() if not k.startswith("TAP_PGCDC_")},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.splitlines()[-STDERR_TAIL_LINES:])
            pytest.fail(
                f"tap-pgcdc {' '.join(args)} exited {proc.returncode}:\n{tail}", pytrace=False
            )
        return proc.stdout

    def discover(self) -> Path:
        """Run the tap's discovery now; the catalog is kept in a file of the test's tmp dir."""
        path = self.workdir / "catalog.json"
        path.write_text(self._run_tap("--discover"))
        return path

    def run_tap_only(self, state: dict[str, Any]) -> TapOnlyRun:
        """Run the tap from `state` with nothing behind it: its output is counted, then dropped.

        Nothing reaches the target and Meltano stores no state, as when a target fails after
        the tap has read the log.
        """
        state_file = self.workdir / "tap-only-state.json"
        state_file.write_text(json.dumps(state))
        records: dict[str, int] = {}
        last_state = None
        for line in self._run_tap("--state", str(state_file)).splitlines():
            message = json.loads(line)
            if message["type"] == "RECORD":
                records[message["stream"]] = records.get(message["stream"], 0) + 1
            elif message["type"] == "STATE":
                last_state = message["value"]
        return TapOnlyRun(records, last_state)

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the output (close it before the next run)."""
        return duckdb.connect(str(self.duckdb_path), read_only=True)

    def assert_mirrors(self, **kwargs: Any) -> duckdb_compare.Report:
        """Every Postgres table equals its DuckDB table, row by row."""
        conn = self.db.connect()
        try:
            return duckdb_compare.assert_mirrors(conn, self.duckdb_path, **kwargs)
        finally:
            conn.close()


@pytest.fixture
def pipeline(
    db: TestDb, meltano_bin: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Pipeline]:
    """A Meltano pipeline from the test's database into a DuckDB file in its tmp dir."""
    suffix = "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:60]
    yield Pipeline(db=db, meltano=meltano_bin, workdir=tmp_path, state_id_suffix=suffix)


@dataclass
class TargetDb:
    """The database target-postgres loads into: a second database of the test server."""

    db: TestDb
    schema: str = "public"

    def rows(self, table: str, columns: list[str], order_by: list[str]) -> list[tuple[Any, ...]]:
        """The live rows of a loaded table (soft-deleted rows, `_sdc_deleted_at` set, left out)."""
        query = sql.SQL("SELECT {} FROM {} WHERE _sdc_deleted_at IS NULL ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.Identifier(self.schema, table),
            sql.SQL(", ").join(map(sql.Identifier, order_by)),
        )
        return _fetch(self.db, query)

    def count(self, table: str) -> int:
        """Every row of a loaded table, soft-deleted or not."""
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(self.schema, table))
        return int(_fetch(self.db, query)[0][0])


def _fetch(db: TestDb, query: sql.Composable) -> list[tuple[Any, ...]]:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
def target_db(pg: PgServer, db: TestDb) -> Iterator[TargetDb]:
    """An empty database beside the test's database, for target-postgres to load into."""
    target = TestDb(pg, f"{db.name[:50]}_target")
    pg.create_database(target.name)
    try:
        yield TargetDb(target)
    finally:
        target.drop()


@pytest.fixture
def postgres_pipeline(
    db: TestDb,
    target_db: TargetDb,
    meltano_bin: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Pipeline]:
    """`meltano run tap-pgcdc target-postgres` from the test's database into `target_db`."""
    suffix = "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:60]
    yield Pipeline(
        db=db,
        meltano=meltano_bin,
        workdir=tmp_path,
        state_id_suffix=suffix,
        loader="target-postgres",
        target_config=target_postgres_config(target_db.db, target_db.schema),
    )


def target_postgres_config(target: TestDb, schema: str) -> dict[str, Any]:
    """target-postgres's connection to database `target` of a test server, loading into `schema`."""
    server = target.server
    return {
        "host": server.host,
        "port": server.port,
        "user": server.superuser,
        # The test server trusts loopback connections; the target insists on a password.
        "password": "unused",
        "database": target.name,
        "default_target_schema": schema,
    }
