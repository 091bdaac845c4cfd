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

# The suite runs on several pytest-xdist workers: most of its time is spent waiting on PostgreSQL
# and on tap and Meltano subprocesses. `--dist loadfile` keeps each test file on one worker (its
# module-scoped servers are started once), and the files start longest first (tests/conftest.py),
# hence --no-loadscope-reorder. TAP_PGCDC_TEST_WORKERS=0 runs everything in this one process; an
# -n/--numprocesses or -p no:xdist among the arguments is left to pytest.
workers="${TAP_PGCDC_TEST_WORKERS:-3}"
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
