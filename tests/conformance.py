"""What Singer tools nobody on the project wrote make of the tap's output.

- `schema_violations`: every RECORD validated against its stream's latest SCHEMA with JSON
  Schema (draft 2020-12) and format checking, after parsing every line as strict JSON (a bare
  NaN or Infinity is a violation).
- `singer_check_tap`: `singer-check-tap` (PyPI singer-tools 0.4.1: singer-python 6.8.0's parser,
  jsonschema 2.6's Draft 4 validator with its format checker, strict_rfc3339 for date-time). It
  pins old versions of jsonschema and attrs, so `scripts/setup.sh` installs it into a venv of its
  own, `.meltano/singer-tools-venv`; `TAP_PGCDC_SINGER_CHECK_TAP` points at another one.

jsonschema checks "date-time", "time" and "duration" only when optional packages are installed
(rfc3339-validator, isoduration) and silently passes them otherwise, so the formats the tap
declares get checkers of their own here: RFC 3339's date-time, full-date and full-time, and the
ISO 8601 durations jsonschema accepts with isoduration (signed components and a fraction, as
PostgreSQL's iso_8601 IntervalStyle prints them).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jsonschema

REPO = Path(__file__).resolve().parent.parent
SINGER_CHECK_TAP = Path(
    os.environ.get(
        "TAP_PGCDC_SINGER_CHECK_TAP", REPO / ".meltano/singer-tools-venv/bin/singer-check-tap"
    )
)

_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_TIME = re.compile(r"^[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$")
_NUMBER = r"-?[0-9]+([.,][0-9]+)?"
_DURATION = re.compile(
    rf"^-?P(?!$)({_NUMBER}Y)?({_NUMBER}M)?({_NUMBER}W)?({_NUMBER}D)?"
    rf"(T(?=-?[0-9])({_NUMBER}H)?({_NUMBER}M)?({_NUMBER}S)?)?$"
)

FORMAT_CHECKER = jsonschema.FormatChecker(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers)


@FORMAT_CHECKER.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return bool(_DATE.match(value)) and dt.date.fromisoformat(value) is not None


@FORMAT_CHECKER.checks("time", raises=ValueError)
def _is_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return bool(_TIME.match(value)) and dt.time.fromisoformat(value.upper().replace("Z", "+00:00"))


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    date, sep, time = value.partition("T") if "T" in value else value.partition("t")
    return bool(sep) and _is_date(date) and _is_time(time)


@FORMAT_CHECKER.checks("duration")
def _is_duration(value: object) -> bool:
    return not isinstance(value, str) or bool(_DURATION.match(value))


def _no_constant(name: str) -> None:
    msg = f"{name} is not JSON (RFC 8259)"
    raise ValueError(msg)


def strict_messages(lines: list[str]) -> list[dict[str, Any]]:
    """Parse each output line as strict JSON: NaN, Infinity and -Infinity are errors."""
    return [json.loads(line, parse_constant=_no_constant) for line in lines]


def schema_violations(lines: list[str]) -> list[str]:
    """Every RECORD against its stream's latest SCHEMA, formats checked; [] when all conform."""
    validators: dict[str, jsonschema.Draft202012Validator] = {}
    problems: list[str] = []
    records = 0
    for message in strict_messages(lines):
        if message["type"] == "SCHEMA":
            schema = message["schema"]
            jsonschema.Draft202012Validator.check_schema(schema)
            validators[message["stream"]] = jsonschema.Draft202012Validator(
                schema, format_checker=FORMAT_CHECKER
            )
        elif message["type"] == "RECORD":
            records += 1
            validator = validators.get(message["stream"])
            if validator is None:
                problems.append(f"{message['stream']}: RECORD before its SCHEMA")
                continue
            problems += [
                f"{message['stream']}.{'.'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(message["record"])
            ]
    if not records:
        problems.append("no RECORD to validate")
    return problems


def singer_check_tap(lines: list[str]) -> str:
    """Run singer-check-tap over the output lines; its report, or AssertionError with it."""
    if not SINGER_CHECK_TAP.exists():
        msg = (
            f"singer-check-tap is not installed ({SINGER_CHECK_TAP}). Run `bash scripts/setup.sh`"
            " (it installs singer-tools into .meltano/singer-tools-venv), or set"
            " TAP_PGCDC_SINGER_CHECK_TAP."
        )
        raise AssertionError(msg)
    with tempfile.TemporaryDirectory(prefix="singer-check-tap-") as workdir:  # it writes there
        proc = subprocess.run(
            [str(SINGER_CHECK_TAP)],
            input="".join(line + "\n" for line in lines),
            capture_output=True,
            text=True,
            cwd=workdir,
            timeout=300,
            check=False,
        )
    report = proc.stdout + proc.stderr
    if proc.returncode != 0 or "The output is valid." not in report:
        msg = f"singer-check-tap rejected the output (exit {proc.returncode}):\n{report[-4000:]}"
        raise AssertionError(msg)
    return report
