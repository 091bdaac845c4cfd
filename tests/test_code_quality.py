"""Lint, format and type checks run as part of the test suite, so CI enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PATHS = ["tap_pgcdc", "tests", "benchmarks", "scripts"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False
    )


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if (REPO / p).exists()]


def test_ruff_lint() -> None:
    result = _run("ruff", "check", *_existing(PATHS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = _run("ruff", "format", "--check", *_existing(PATHS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_package() -> None:
    result = _run("mypy", "tap_pgcdc")
    assert result.returncode == 0, result.stdout + result.stderr
