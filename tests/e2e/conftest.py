"""End-to-end fixtures: `meltano run tap-pgcdc target-duckdb` against a test database.

Meltano and its plugin venvs come from `scripts/setup.sh` (`bash scripts/test.sh` runs it). Each
test gets its own DuckDB file and its own Meltano system database (so its own state), both in the
test's tmp dir, and configures the tap purely through TAP_PGCDC_* environment variables.
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

from tests.conftest import TestDb
from tests.e2e import duckdb_compare

REPO = Path(__file__).resolve().parents[2]
MELTANO = Path(os.environ.get("TAP_PGCDC_MELTANO", REPO / ".meltano/meltano-venv/bin/meltano"))
PLUGIN_EXECUTABLES = (
    REPO / ".meltano/extractors/tap-pgcdc/venv/bin/tap-pgcdc",
    REPO / ".meltano/loaders/target-duckdb/venv/bin/target-duckdb",
)
RUN_TIMEOUT_S = 600
STDERR_TAIL_LINES = 80


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


@dataclass
class Pipeline:
    """`meltano run tap-pgcdc target-duckdb` for one test database, and its DuckDB output."""

    db: TestDb
    meltano: Path
    workdir: Path
    state_id_suffix: str
    target_config: dict[str, Any] = field(default_factory=dict)
    runs: list[MeltanoRun] = field(default_factory=list)

    @property
    def duckdb_path(self) -> Path:
        return self.workdir / "warehouse.duckdb"

    def env(
        self, tap_overrides: dict[str, Any], target_overrides: dict[str, Any]
    ) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TAP_PGCDC_", "TARGET_DUCKDB_"))
        }
        env.pop("VIRTUAL_ENV", None)
        env.update(
            {
                # The test's own system database holds its state: no run sees another's.
                "MELTANO_DATABASE_URI": f"sqlite:///{self.workdir / 'meltano.db'}",
                "MELTANO_ENVIRONMENT": "dev",
                "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
                "MELTANO_RUN_REFRESH_CATALOG": "true",
                "TARGET_DUCKDB_FILEPATH": str(self.duckdb_path),
            }
        )
        for key, value in self.db.config(**tap_overrides).items():
            env[f"TAP_PGCDC_{key.upper()}"] = _env_value(value)
        for key, value in {**self.target_config, **target_overrides}.items():
            env[f"TARGET_DUCKDB_{key.upper()}"] = _env_value(value)
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
            "target-duckdb",
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
                f"`meltano run tap-pgcdc target-duckdb` exited {proc.returncode} "
                f"after {result.seconds:.1f}s (database {self.db.name}).\n"
                f"--- last {STDERR_TAIL_LINES} lines of stderr ---\n{result.stderr_tail()}"
            )
            pytest.fail(msg, pytrace=False)
        return result

    def state(self) -> dict[str, Any]:
        """The state Meltano stored for this pipeline."""
        state_id = f"dev:tap-pgcdc-to-target-duckdb:{self.state_id_suffix}"
        proc = subprocess.run(
            [str(self.meltano), "state", "get", state_id],
            cwd=REPO,
            env=self.env({}, {}),
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

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
