"""A 1,000,000-row transaction streams through in bounded memory, with no STATE inside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tap_runner import REPO, run_tap

ROWS = 1_000_000
RSS_LIMIT_MB = 200

# Runs the tap as its child and reports the child's peak RSS: RUSAGE_CHILDREN of a fresh process
# covers exactly the tap.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "with open(sys.argv[1], 'wb') as out:\n"
    "    code = subprocess.run(sys.argv[2:], stdout=out).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@pytest.mark.slow
def test_million_row_transaction_in_bounded_memory(db, tmp_path: Path) -> None:
    db.execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, n int, txt text, amount numeric(12,2),"
        " ts timestamptz, flag bool)"
    )
    first = run_tap(db.config()).check()
    db.execute(
        f"INSERT INTO big SELECT g, g, md5(g::text) || md5(g::text), g / 100.0, now(), g % 2 = 0"
        f" FROM generate_series(1, {ROWS}) g"
    )
    config = tmp_path / "config.json"
    config.write_text(json.dumps(db.config()))
    state = tmp_path / "state.json"
    state.write_text(json.dumps(first.final_state))
    output = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURE,
            str(output),
            sys.executable,
            "-m",
            "tap_pgcdc",
            "--config",
            str(config),
            "--state",
            str(state),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak_mb = int(proc.stderr.strip().splitlines()[-1])

    records = 0
    states = 0
    states_at_first_record: int | None = None
    states_at_last_record = 0
    with output.open() as lines:
        for line in lines:
            if line.startswith('{"type":"RECORD"'):
                records += 1
                if states_at_first_record is None:
                    states_at_first_record = states
                states_at_last_record = states
            elif '"type":"STATE"' in line:
                states += 1
    assert records == ROWS
    # No STATE splits the transaction: none between its first and last record, one after.
    assert states_at_first_record == states_at_last_record
    assert states > states_at_last_record
    assert peak_mb < RSS_LIMIT_MB, f"peak RSS {peak_mb} MB"
