"""Parallel snapshot readers: the boundary query, and chunks read by threads but given in order."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tap_pgcdc.snapshot.parallel import chunk_starts, in_order
from tap_pgcdc.snapshot.query import ChunkQuery
from tests.unit.test_snapshot_query import PAIR


def test_boundaries_take_every_size_th_key_after_the_marker() -> None:
    query = ChunkQuery(PAIR, ('"v"',), 100, "a <> 1")
    sql, params = query.boundaries(["1", "x"])
    assert sql == (
        'SELECT b.k0, b.k1 FROM (SELECT src."a"::text AS k0, src."b"::text AS k1,'
        ' row_number() OVER (ORDER BY src."a", src."b") AS n FROM "public"."t" AS src'
        ' WHERE (a <> 1) AND (src."a", src."b") > (%s::int4, %s::text)) AS b'
        " WHERE b.n %% 100 = 0 ORDER BY b.n"
    )
    assert params == ["1", "x"]
    assert "WHERE (" not in ChunkQuery(PAIR, ('"v"',), 5).boundaries(None)[0].split("AS b")[0]


def test_chunks_start_after_the_marker_then_after_each_boundary() -> None:
    assert chunk_starts(None, []) == [None]
    assert chunk_starts(["3"], [["13"], ["23"]]) == [["3"], ["13"], ["23"]]


def test_chunks_come_in_order_with_a_bounded_number_in_flight() -> None:
    lock = threading.Lock()
    in_flight, most = 0, 0
    given: list[int] = []
    rng = random.Random(7)
    delays = [rng.random() / 500 for _ in range(60)]

    def read(conn: str, start: int) -> tuple[str, int]:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight - len(given))  # read or waiting, not yet given
        time.sleep(delays[start])
        return conn, start

    conns = ["c0", "c1", "c2"]
    results = []
    for conn, start in in_order(conns, list(range(60)), read, ahead=4):
        results.append(start)
        with lock:
            given.append(start)
        assert conn in conns
        time.sleep(0.002)  # a slow writer: unbounded workers would run far ahead
    assert results == list(range(60))
    # `given` here lags the generator's own count by the chunk being handled: one more.
    assert most <= 4 + 1


def test_an_error_comes_after_the_chunks_before_it_and_every_thread_is_joined() -> None:
    def read(_conn: int, start: int) -> int:
        if start == 5:
            raise ValueError("chunk 5")
        return start

    before = threading.active_count()
    got: list[int] = []
    with pytest.raises(ValueError, match="chunk 5"):
        got.extend(in_order([1, 2], list(range(20)), read, ahead=2))
    assert got == [0, 1, 2, 3, 4]
    assert threading.active_count() == before


def test_closing_early_stops_the_workers() -> None:
    before = threading.active_count()
    chunks = in_order([1, 2, 3], list(range(1000)), lambda _c, s: s, ahead=3)
    assert next(chunks) == 0
    chunks.close()
    assert threading.active_count() == before
