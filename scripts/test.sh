#!/usr/bin/env bash
# The test command: install what is missing (scripts/setup.sh), then run the whole pytest suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/e2e -x` or `... -m slow`.
#
# pytest exits 5 when it collected no test. That is a failure unless the caller says it is
# intended with TAP_PGCDC_ALLOW_NO_TESTS=1 (e.g. a marker that selects nothing yet).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
cd "$REPO"

# The suite runs on 2 pytest-xdist workers where the machine has 2 cores or more, else in one
# process; TAP_PGCDC_TEST_WORKERS=N chooses (0: one process). `--dist loadfile` keeps each test
# file on one worker, so its module-scoped servers start once; the files start longest first
# (tests/conftest.py), hence --no-loadscope-reorder. One process keeps about one core busy (the
# tap, Postgres and Meltano wait on each other); on this project's 2-core machine 2 workers ran
# the whole suite, slow tests included, in 18 minutes, where 3 had only queued (they are
# CPU-bound). An -n/--numprocesses or -p no:xdist among the arguments is left to pytest.
default_workers=0
if [[ "$(nproc 2>/dev/null || echo 1)" -ge 2 ]]; then
    default_workers=2
fi
workers="${TAP_PGCDC_TEST_WORKERS:-$default_workers}"
parallel=(-n "$workers" --dist loadfile --no-loadscope-reorder)
if [[ "$workers" == 0 ]]; then
    parallel=()
fi
for arg in "$@"; do
    case "$arg" in
        -n | -n[0-9]* | --numprocesses* | no:xdist | -pno:xdist) parallel=() ;;
    esac
done

status=0
.venv/bin/python -m pytest "${parallel[@]}" "$@" || status=$?
if [[ $status -eq 5 && "${TAP_PGCDC_ALLOW_NO_TESTS:-0}" == 1 ]]; then
    echo "test.sh: pytest collected no tests; allowed by TAP_PGCDC_ALLOW_NO_TESTS=1" >&2
    exit 0
fi
exit "$status"
