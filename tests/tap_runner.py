"""Run the real `tap-pgcdc` command and parse what it writes, for integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class TapRun:
    """The outcome of one tap process."""

    returncode: int
    messages: list[dict[str, Any]]
    stderr: str
    seconds: float = 0.0
    raw_lines: list[str] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def records(self, stream: str | None = None) -> list[dict[str, Any]]:
        """The records written, without the closing repeat (see `closing_repeat`)."""
        repeat = self.closing_repeat
        return [
            m["record"]
            for m in self.messages
            if m.get("type") == "RECORD"
            and (stream is None or m["stream"] == stream)
            and m is not repeat
        ]

    @property
    def closing_repeat(self) -> dict[str, Any] | None:
        """The RECORD message tap_pgcdc/closing.py writes again at the end, if there is one.

        A run whose output ends with a snapshot writes the snapshot's last record once more
        after the STATE that completed it, then that STATE again: the output ends with the
        repeat and a STATE equal to the last one before it, and between the repeated record
        and its repeat come only STATE and ACTIVATE_VERSION messages.
        """
        messages = self.messages
        if len(messages) < 3 or messages[-1].get("type") != "STATE":
            return None
        repeat = messages[-2]
        if repeat.get("type") != "RECORD":
            return None
        between: list[dict[str, Any]] = []
        for message in reversed(messages[:-2]):
            if message.get("type") == "RECORD":
                break
            between.append(message)
        else:
            return None
        earlier = message
        states = [m for m in between if m.get("type") == "STATE"]
        if not states or states[0] != messages[-1]:
            return None
        if any(m.get("type") not in ("STATE", "ACTIVATE_VERSION") for m in between):
            return None

        def written(message: dict[str, Any]) -> tuple[Any, ...]:
            # On the SDK's record path the repeat is stamped with a later time_extracted.
            return message["stream"], message["record"], message.get("version")

        return repeat if written(earlier) == written(repeat) else None

    @property
    def states(self) -> list[dict[str, Any]]:
        return [m["value"] for m in self.of_type("STATE")]

    @property
    def final_state(self) -> dict[str, Any] | None:
        states = self.states
        return states[-1] if states else None

    def check(self) -> TapRun:
        """Fail with the tap's stderr if it exited non-zero."""
        if self.returncode != 0:
            raise AssertionError(f"tap exited {self.returncode}:\n{self.stderr[-4000:]}")
        return self


def run_tap(
    config: dict[str, Any],
    *,
    state: dict[str, Any] | None = None,
    catalog: dict[str, Any] | None = None,
    args: list[str] | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> TapRun:
    """Run `python -m tap_pgcdc` with the given config/state/catalog; stdout parsed as JSON."""
    import time

    with tempfile.TemporaryDirectory(prefix="tap-pgcdc-run-") as tmp:
        tmpdir = Path(tmp)
        cmd = [sys.executable, "-m", "tap_pgcdc"]
        cfg_path = tmpdir / "config.json"
        cfg_path.write_text(json.dumps(config))
        cmd += ["--config", str(cfg_path)]
        if state is not None:
            state_path = tmpdir / "state.json"
            state_path.write_text(json.dumps(state))
            cmd += ["--state", str(state_path)]
        if catalog is not None:
            cat_path = tmpdir / "catalog.json"
            cat_path.write_text(json.dumps(catalog))
            cmd += ["--catalog", str(cat_path)]
        cmd += args or []
        started = time.monotonic()
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            check=False,
        )
        elapsed = time.monotonic() - started
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    messages = []
    for line in lines:
        try:
            messages.append(json.loads(line, parse_float=Decimal))
        except json.JSONDecodeError:
            messages.append({"type": "_UNPARSEABLE", "line": line})
    return TapRun(proc.returncode, messages, proc.stderr, elapsed, lines)


def discover(config: dict[str, Any]) -> dict[str, Any]:
    """Run --discover and return the catalog."""
    run = run_tap(config, args=["--discover"]).check()
    text = "\n".join(run.raw_lines)
    return json.loads(text)


def select_streams(catalog: dict[str, Any], names: set[str] | None) -> dict[str, Any]:
    """A copy of the catalog with only `names` selected (all when None)."""
    catalog = json.loads(json.dumps(catalog))
    for stream in catalog["streams"]:
        chosen = names is None or stream["tap_stream_id"] in names
        for item in stream["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = chosen
    return catalog


def set_method(catalog: dict[str, Any], method: str, *names: str) -> dict[str, Any]:
    """A copy of the catalog with `replication-method` set as Meltano's `metadata` extra sets it."""
    catalog = json.loads(json.dumps(catalog))
    for stream in catalog["streams"]:
        if stream["tap_stream_id"] in names:
            for item in stream["metadata"]:
                if item["breadcrumb"] == []:
                    item["metadata"]["replication-method"] = method
    return catalog


def root_metadata(catalog: dict[str, Any], name: str) -> dict[str, Any]:
    """The root metadata of stream `name`."""
    (stream,) = [s for s in catalog["streams"] if s["tap_stream_id"] == name]
    (root,) = [item["metadata"] for item in stream["metadata"] if item["breadcrumb"] == []]
    return dict(root)
