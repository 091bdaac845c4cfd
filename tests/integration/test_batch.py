"""Snapshots as Singer BATCH files (`batch_config`): the same records as the RECORD path.

Each test runs the real tap with and without `batch_config` over the same data and compares,
row by row, the RECORD path's records with the records read back from the files the BATCH
messages name (parsed with Decimal, compared by repr: 1 vs 1.0, Decimal digits, NaN strings).
"""

from __future__ import annotations

import gzip
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.integration.test_fast_output import create_edge_table, insert_edge_rows
from tests.tap_runner import TapRun, discover, run_tap, select_streams

EDGE = "public-edge"


def batch(root: Path, compression: str) -> dict[str, Any]:
    return {
        "encoding": {"format": "jsonl", "compression": compression},
        "storage": {"root": root.as_uri()},
    }


def file_records(run: TapRun) -> tuple[list[dict[str, Any]], list[Path]]:
    """The records of every file the run's BATCH messages name, in message order."""
    out: list[dict[str, Any]] = []
    paths = []
    for message in run.of_type("BATCH"):
        compression = message["encoding"].get("compression")
        for url in message["manifest"]:
            path = Path(urlparse(url).path)
            paths.append(path)
            data = path.read_bytes()
            if compression == "gzip":
                data = gzip.decompress(data)
            else:
                assert data[:2] != b"\x1f\x8b"
            out += [json.loads(line, parse_float=Decimal) for line in data.splitlines()]
    return out, paths


def masked(record: dict[str, Any]) -> dict[str, Any]:
    """Two runs snapshot at their own consistent points: `_sdc_lsn` is masked."""
    if isinstance(record.get("_sdc_lsn"), int):
        return {**record, "_sdc_lsn": "consistent point"}
    return record


def assert_same(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected, strict=True):
        assert repr(masked(a)) == repr(masked(b)), f"\nbatch:  {a}\nrecord: {b}"


@pytest.fixture
def edge(db) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    create_edge_table(db)
    insert_edge_rows(db, 100)
    return select_streams(discover(db.config()), {EDGE})


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_snapshot_files_hold_the_record_paths_records(db, edge, tmp_path, compression) -> None:
    plain = run_tap(db.config(snapshot_chunk_size=4), catalog=edge).check()
    config = db.config(snapshot_chunk_size=4, batch_config=batch(tmp_path, compression))
    run = run_tap(config, catalog=edge).check()
    assert run.of_type("RECORD") == []
    got, paths = file_records(run)
    assert_same(got, plain.records())
    # One file per chunk of 4 rows (20 rows), each named once, all in the configured root.
    assert len(paths) == len(set(paths)) == 5
    assert all(p.parent == tmp_path for p in paths)
    suffix = r"\.json\.gz" if compression == "gzip" else r"\.json"
    names = [p.name for p in paths]
    for n, name in enumerate(names, start=1):
        assert re.fullmatch(rf"tap-pgcdc--public-edge-[0-9a-f-]{{36}}-{n}{suffix}", name), name
    # Each BATCH message is written as the SDK writes it, and followed by a STATE that resumes
    # after its file's last row; no STATE before the first file claims any row.
    kinds = [m["type"] for m in run.messages]
    first = kinds.index("BATCH")
    assert all(
        "after" not in (s["value"]["bookmarks"].get(EDGE, {}).get("snapshot") or {})
        or s["value"]["bookmarks"][EDGE]["snapshot"]["after"] is None
        for s in (m for m in run.messages[:first] if m["type"] == "STATE")
    )
    batches = [i for i, kind in enumerate(kinds) if kind == "BATCH"]
    for n, i in enumerate(batches[:-1]):
        message = run.messages[i]
        assert set(message) == {"type", "stream", "encoding", "manifest"}
        assert message["encoding"] == {"format": "jsonl", "compression": compression}
        state = run.messages[i + 1]
        assert state["type"] == "STATE"
        after = state["value"]["bookmarks"][EDGE]["snapshot"]["after"]
        assert after == [str(got[4 * n + 3]["Id"]), got[4 * n + 3]["k"]]
    assert "snapshot" not in run.final_state["bookmarks"][EDGE]  # type: ignore[index]


def test_resume_after_an_interrupted_batch_snapshot(db, edge, tmp_path) -> None:
    config = db.config(snapshot_chunk_size=4, batch_config=batch(tmp_path, "gzip"))
    first = run_tap(config, catalog=edge).check()
    rows, _ = file_records(first)
    # The run stopped after its second file's STATE: the resumed run starts after that key.
    kinds = [m["type"] for m in first.messages]
    second = [i for i, kind in enumerate(kinds) if kind == "BATCH"][1]
    interrupted = first.messages[second + 1]["value"]
    assert interrupted["bookmarks"][EDGE]["snapshot"]["after"] is not None
    resumed = run_tap(config, catalog=edge, state=interrupted).check()
    rest, paths = file_records(resumed)
    assert_same(rest, rows[8:])
    # New names: the files of the interrupted run are left as they were.
    assert not set(paths) & set(file_records(first)[1])


def test_snapshot_then_log_changes(db, edge, tmp_path) -> None:
    config = db.config(snapshot_chunk_size=4, batch_config=batch(tmp_path, "none"))
    first = run_tap(config, catalog=edge).check()
    assert len(file_records(first)[0]) == 20
    db.execute("UPDATE edge SET c_text = 'changed' WHERE \"Id\" = 100")
    db.execute('DELETE FROM edge WHERE "Id" = 101')
    insert_edge_rows(db, 200)
    second = run_tap(config, catalog=edge, state=first.final_state).check()
    # Changes from the log stay RECORD messages, in commit order; no BATCH.
    assert second.of_type("BATCH") == []
    changes = second.records(EDGE)
    assert len(changes) == 2 + 10
    assert changes[0]["Id"] == 100 and changes[0]["c_text"] == "changed"
    assert changes[1]["Id"] == 101 and changes[1]["_sdc_deleted_at"] is not None
    assert [r["Id"] for r in changes[2:]] == list(range(200, 210))
    # The same changes as the RECORD path's run from the same state.
    plain = run_tap(db.config(), catalog=edge, state=first.final_state).check()
    assert [repr(r) for r in changes] == [repr(r) for r in plain.records(EDGE)]


def test_a_stream_with_a_version_stays_on_record_lines(db, edge, tmp_path) -> None:
    catalog = edge
    for item in catalog["streams"][0]["metadata"]:
        if item["breadcrumb"] == []:
            item["metadata"]["replication-method"] = "FULL_TABLE"
    config = db.config(batch_config=batch(tmp_path, "gzip"))
    run = run_tap(config, catalog=catalog).check()
    plain = run_tap(db.config(), catalog=catalog).check()
    assert run.of_type("BATCH") == [] and list(tmp_path.iterdir()) == []
    assert [repr(masked(r)) for r in run.records()] == [repr(masked(r)) for r in plain.records()]


def test_stream_maps_keep_record_messages(db, edge, tmp_path) -> None:
    """The SDK's batch path would write records before its stream maps apply: not taken."""
    maps = {EDGE: {"c_text": None}}
    config = db.config(batch_config=batch(tmp_path, "gzip"), stream_maps=maps)
    run = run_tap(config, catalog=edge).check()
    assert run.of_type("BATCH") == [] and list(tmp_path.iterdir()) == []
    assert "batch_config is ignored for public-edge" in run.stderr
    plain = run_tap(db.config(stream_maps=maps), catalog=edge).check()
    assert_same(run.records(), plain.records())
    assert all("c_text" not in r for r in run.records())


def test_an_unwritable_root_stops_with_the_fix_before_any_row_is_claimed(db, edge) -> None:
    root = "file:///proc/tap-pgcdc-no-such-dir"  # cannot be created, even by root
    config = db.config(batch_config={**batch(Path("/"), "gzip"), "storage": {"root": root}})
    run = run_tap(config, catalog=edge)
    assert run.returncode != 0
    assert "Cannot write the BATCH file" in run.stderr and "Fix: set batch_config" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.of_type("BATCH") == [] and run.of_type("RECORD") == []
    for state in run.states:
        progress = state["bookmarks"].get(EDGE, {}).get("snapshot") or {}
        assert progress.get("after") is None


def test_an_incomplete_batch_config_stops_with_the_fix(db, edge, tmp_path) -> None:
    config = db.config(batch_config={"storage": {"root": tmp_path.as_uri()}})
    run = run_tap(config, catalog=edge)
    assert run.returncode != 0
    assert "batch_config is incomplete" in run.stderr and "Fix: give both" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.of_type("RECORD") == [] and run.of_type("BATCH") == []
