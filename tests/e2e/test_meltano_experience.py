"""Meltano as a data engineer meets it: the documented commands, the logs, the stored state.

- Every `meltano ...` command the README and docs/ show runs as written (placeholders filled
  in) with the Meltano the project installs, in a scratch copy of the project.
- The tap's fatal errors reach Meltano's log at level error (structured logging), and the
  SDK's "Skipping parse of env var settings" note, written by each tap process, is gone.
- After a run that completed a snapshot, the state target-duckdb stored has no snapshot marker
  when rows are pending at the end of its input; when the snapshot's last record fills its last
  batch, target-duckdb stores the STATE before that record (docs/targets.md, section g): an
  expected failure, strict, so that a fix shows.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, Pipeline

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_INLINE = re.compile(r"`(meltano [^`]+)`")
_BLOCK = re.compile(r"```(?:bash|sh|shell)?\n(.*?)```", re.DOTALL)


def documented_commands() -> list[str]:
    """The `meltano` commands of the README and docs/, in order, each once."""
    found: list[str] = []
    for path in DOCS:
        text = path.read_text()
        found += _INLINE.findall(text)
        for block in _BLOCK.findall(text):
            found += [line.split("#")[0].strip() for line in block.splitlines()]
    return list(dict.fromkeys(c for c in found if c.startswith("meltano ")))


def runnable(command: str, state_id: str) -> list[str]:
    """The command with its placeholders filled in, as arguments."""
    filled = (
        command.replace("<setting> <value>", "snapshot_chunk_size 500")
        .replace("<state-id>", state_id)
        .replace("--full-refresh ...", "--full-refresh tap-pgcdc target-duckdb")
    )
    assert "<" not in filled and "..." not in filled, f"no example values for: {command}"
    return filled.split()


def test_every_meltano_command_the_docs_show_works(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.db.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
    commands = documented_commands()
    assert {
        "meltano config set tap-pgcdc <setting> <value>",
        "meltano config list tap-pgcdc",
    } <= set(commands)
    assert "meltano run tap-pgcdc target-duckdb" in commands
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "meltano.yml", project / "meltano.yml")
    # The installed plugin venvs come through the env's MELTANO_SYS_DIR_ROOT (conftest.py).
    env = pipeline.env({}, {})
    for command in commands:
        args = runnable(command, "dev:tap-pgcdc-to-target-duckdb")
        proc = subprocess.run(
            [str(pipeline.meltano), *args[1:]],
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        assert proc.returncode == 0, f"`{' '.join(args)}` exited {proc.returncode}:\n{tail}"
    assert "snapshot_chunk_size: 500" in (project / "meltano.yml").read_text()


def test_tap_errors_reach_meltano_at_error_level(pipeline: Pipeline) -> None:
    pipeline.db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    ok = pipeline.run()
    assert "Skipping parse of env var settings" not in ok.stderr  # once per process: noise
    failed = pipeline.run(check=False, database="no_such_database")
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if "[error" in line]
    assert any("no_such_database" in line and "Fix:" in line for line in errors), "\n".join(
        failed.stderr.splitlines()[-40:]
    )


@pytest.mark.parametrize("rows", [10, 12])
def test_stored_state_has_no_snapshot_marker_whatever_the_batch_size(
    pipeline: Pipeline, rows: int
) -> None:
    pipeline.db.execute(
        "CREATE TABLE big (id int PRIMARY KEY, v text);"
        f" INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, {rows}) g"
    )
    # 10 rows: the last record fills target-duckdb's batch exactly; 12: two rows are pending.
    pipeline.run(snapshot_chunk_size=5, target={"batch_size_rows": 5})
    bookmarks = pipeline.state()["singer_state"]["bookmarks"]
    assert "snapshot" not in bookmarks["public-big"], bookmarks
    pipeline.assert_mirrors()
    pipeline.db.execute("UPDATE big SET v = 'changed' WHERE id = 1")
    pipeline.run(snapshot_chunk_size=5, target={"batch_size_rows": 5})
    assert "snapshot" not in pipeline.state()["singer_state"]["bookmarks"]["public-big"]
    pipeline.assert_mirrors()


def test_the_run_report_reaches_meltano_and_the_file_it_names(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    pipeline.db.execute("INSERT INTO t SELECT generate_series(1, 3)")
    first = pipeline.run()
    # Not an SDK log record: Meltano passes the line through as the text of one of its own.
    (line,) = [line for line in first.stderr.splitlines() if '{"tap_pgcdc_run_report"' in line]
    text = line[line.index('{"tap_pgcdc_run_report"') :]
    report = json.loads(text[: text.rindex("}") + 1])["tap_pgcdc_run_report"]
    assert (report["outcome"], report["reason"]) == ("success", "caught_up")
    assert report["streams"]["public-t"]["snapshot_rows"] == 3
    pipeline.db.execute("DELETE FROM t WHERE id = 1")
    path = tmp_path / "runs.jsonl"
    second = pipeline.run(run_report_path=str(path))
    assert "tap_pgcdc_run_report" not in second.stderr
    (written,) = path.read_text().splitlines()
    counts = json.loads(written)["tap_pgcdc_run_report"]["streams"]["public-t"]
    assert (counts["changes"], counts["deletes"], counts["snapshot_rows"]) == (1, 1, 0)
