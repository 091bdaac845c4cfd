"""Idle selected tables, busy server: the slot keeps advancing, retained WAL stays bounded.

When none of the selected tables changes but other tables take heavy writes, the tap still
moves its bookmark forward (to the WAL position of a keepalive between transactions), stores it
in STATE, and the next run confirms it, so the slot does not pin the server's WAL for ever.

The slot's restart_lsn (what WAL the server must keep) follows confirmed_flush_lsn only at
running-transactions records, which the server writes every 15 seconds (bgwriter) and at each
checkpoint. The fast test stands in for that clock with a CHECKPOINT per round; the slow one lets
the server's own clock run.
"""

from __future__ import annotations

import itertools
import time

import pytest

from tap_pgcdc.pg.lsn import parse_lsn
from tests.conftest import TestDb
from tests.memory_target import MemoryTarget
from tests.tap_runner import run_tap

BUSY_ROWS = 40_000  # ~14 MB of WAL a round


def slot_position(db: TestDb) -> tuple[int, int, int]:
    """(confirmed_flush_lsn, restart_lsn, current WAL position) of the test's slot."""
    [(confirmed, restart, current)] = db.execute(
        "SELECT confirmed_flush_lsn::text, restart_lsn::text, pg_current_wal_lsn()::text "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (db.config()["slot_name"],),
    )
    return parse_lsn(confirmed), parse_lsn(restart), parse_lsn(current)


def quiet_position(target: MemoryTarget) -> str:
    assert target.state is not None
    return str(target.state["bookmarks"]["public-quiet"]["lsn"])


def setup(db: TestDb) -> tuple[dict, MemoryTarget]:
    db.execute(
        "CREATE TABLE quiet (id int PRIMARY KEY, v text); INSERT INTO quiet VALUES (1, 'one');"
        "CREATE TABLE busy (id bigserial PRIMARY KEY, pad text)"
    )
    config = db.config(filter_tables=["public.quiet"])  # busy is not selected
    target = MemoryTarget()
    target.apply(run_tap(config).check().messages)
    return config, target


def busy_round(db: TestDb) -> int:
    """Heavy writes to the table nobody replicates; the WAL they took, in bytes."""
    [(before,)] = db.execute("SELECT pg_current_wal_lsn()::text")
    db.execute(
        f"INSERT INTO busy (pad) SELECT repeat('x', 200) FROM generate_series(1, {BUSY_ROWS})"
    )
    db.execute("DELETE FROM busy")
    [(after,)] = db.execute("SELECT pg_current_wal_lsn()::text")
    return parse_lsn(after) - parse_lsn(before)


def test_idle_tables_keep_the_slot_moving_and_wal_bounded(db: TestDb) -> None:
    config, target = setup(db)
    rounds = []
    for _ in range(5):
        wal = busy_round(db)
        db.execute("CHECKPOINT")  # the server's running-transactions record, without waiting 15 s
        stored = quiet_position(target)
        run = run_tap(config, state=target.state).check()
        assert run.records() == []  # nothing happened to the selected table
        target.apply(run.messages)
        confirmed, restart, current = slot_position(db)
        # The run confirmed exactly what the target had stored, and stored a later position.
        assert confirmed == parse_lsn(stored)
        assert parse_lsn(quiet_position(target)) > confirmed
        rounds.append((wal, confirmed, restart, current - restart))
    confirmed_moves = [b[1] > a[1] for a, b in itertools.pairwise(rounds)]
    restart_moves = [b[2] > a[2] for a, b in itertools.pairwise(rounds)]
    assert all(confirmed_moves) and all(restart_moves), rounds
    # Retained WAL: about one round's worth (what the target has not confirmed yet), not growing.
    for wal, _, _, retained in rounds:
        assert retained <= 2 * wal, rounds
    assert rounds[-1][3] <= 2 * max(r[0] for r in rounds), rounds


@pytest.mark.slow
def test_idle_tables_keep_wal_bounded_on_the_servers_own_clock(db: TestDb) -> None:
    """No CHECKPOINT: restart_lsn moves at the bgwriter's running-transactions records (15 s)."""
    config, target = setup(db)
    history: list[tuple[float, int]] = []  # (time, WAL position) before each round
    started = time.monotonic()
    moved = 0
    last_restart = first_restart = slot_position(db)[1]
    while time.monotonic() - started < 60:
        now = time.monotonic()
        history.append((now, slot_position(db)[2]))
        busy_round(db)
        run = run_tap(config, state=target.state).check()
        target.apply(run.messages)
        _, restart, current = slot_position(db)
        moved += restart > last_restart
        last_restart = restart
        # restart_lsn lags at most two running-transactions intervals and a round: what the
        # server keeps is bounded by time, whatever the other tables write.
        window_start = max((pos for t, pos in history if t <= now - 40), default=first_restart)
        assert restart >= window_start, (restart, window_start, current)
    assert moved >= 2
