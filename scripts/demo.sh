#!/usr/bin/env bash
# The demo: snapshot a throwaway Postgres into DuckDB with Meltano, change it, replicate the
# changes, and show what landed (scripts/demo.py). Output: output/demo.duckdb.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
cd "$REPO"
exec .venv/bin/python scripts/demo.py "$@"
