"""BatchFiles: a chunk's lines, written in any number of pieces, become one file, announced by
its BATCH message before the STATE that covers it."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from singer_sdk.helpers._batch import BatchConfig

from tap_pgcdc import sdk
from tap_pgcdc.errors import ConfigError
from tap_pgcdc.output import batch_files


class _Stream:
    name = "public-t"
    tap_name = "tap-pgcdc"
    logger = logging.getLogger("test")


class _Lines:
    def selected(self, name: str) -> bool:
        return name != "hidden"


def _files(root: Path, compression: str, events: list[Any], monkeypatch) -> batch_files.BatchFiles:  # type: ignore[no-untyped-def]
    config = BatchConfig.from_dict(
        {
            "encoding": {"format": "jsonl", "compression": compression},
            "storage": {"root": root.as_uri(), "prefix": "p-"},
        }
    )
    monkeypatch.setattr(
        sdk, "write_batch", lambda stream, encoding, manifest: events.append(("BATCH", manifest))
    )
    return batch_files.BatchFiles(_Stream(), config, _Lines())  # type: ignore[arg-type]


def _read(url: str) -> bytes:
    data = Path(urlparse(url).path).read_bytes()
    return gzip.decompress(data) if url.endswith(".gz") else data


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_pieces_of_a_chunk_make_one_file_announced_before_the_state(
    tmp_path, monkeypatch, compression
) -> None:
    events: list[Any] = []
    files = _files(tmp_path, compression, events, monkeypatch)
    state = files.covering(lambda: events.append(("STATE", sorted(tmp_path.iterdir()))))
    assert files.head == "" and files.tail() == "\n"
    assert files.selected("a") and not files.selected("hidden")
    files.write('{"a":1}\n{"a":2}\n')
    files.write('{"a":3}\n')
    assert events == [] and list(tmp_path.iterdir()) == []  # not complete, not in place
    state()
    files.write('{"a":4}\n')
    state()
    files.complete()  # nothing open: nothing more
    kinds = [kind for kind, _ in events]
    assert kinds == ["BATCH", "STATE", "BATCH", "STATE"]
    (first,), (second,) = events[0][1], events[2][1]
    assert first != second
    assert _read(first) == b'{"a":1}\n{"a":2}\n{"a":3}\n' and _read(second) == b'{"a":4}\n'
    # The first STATE came after the first file was in place, before the second existed.
    assert [p.as_uri() for p in events[1][1]] == [first]
    name = Path(urlparse(first).path).name
    assert name.startswith("p-tap-pgcdc--public-t-")
    assert name.endswith("-1.json.gz" if compression == "gzip" else "-1.json")


def test_a_root_that_cannot_be_made_is_an_error_naming_the_fix(monkeypatch) -> None:
    events: list[Any] = []
    files = _files(Path("/proc/tap-pgcdc-none"), "gzip", events, monkeypatch)
    with pytest.raises(ConfigError, match=r"Fix: set batch_config\.storage\.root"):
        files.write("{}\n")
    assert events == []
