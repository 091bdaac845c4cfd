"""The Meltano Hub style definition (hub/extractors/tap-pgcdc.yml) matches the tap's settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

DEFINITION = Path(__file__).resolve().parents[2] / "hub" / "extractors" / "tap-pgcdc.yml"
# SDK settings the definition leaves out: test data generation, flattening details.
NOT_ADVERTISED = {
    "faker_config",
    "flattening_max_key_length",
    "flattening_separator",
}


def _flatten(properties: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, schema in properties.items():
        if "properties" in schema and prefix == "" and name == "ssh_tunnel":
            out.update(_flatten(schema["properties"], f"{name}."))
        else:
            out[prefix + name] = schema
    return out


def test_definition_lists_every_setting_of_the_tap() -> None:
    definition = yaml.safe_load(DEFINITION.read_text())
    listed = {s["name"]: s for s in definition["settings"]}
    about = json.loads(
        subprocess.run(
            [sys.executable, "-m", "tap_pgcdc", "--about", "--format", "json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    settings = _flatten(about["settings"]["properties"])
    assert set(listed) == set(settings) - NOT_ADVERTISED
    for name, schema in settings.items():
        if name in listed:
            secret = bool(schema.get("secret") or schema.get("writeOnly"))
            assert bool(listed[name].get("sensitive")) is secret, name
            if "default" in schema:
                assert listed[name].get("value") == schema["default"], name
    assert definition["name"] == about["name"]
    assert set(definition["capabilities"]) <= set(about["capabilities"])
    assert definition["executable"] == "tap-pgcdc"
