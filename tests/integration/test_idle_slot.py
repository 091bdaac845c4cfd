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


# How long the slot may take to release a round's WAL: the server's clock ticks every 15 s; a
# loaded machine slows the bgwriter and the tap's runs, so the bound is generous. The test takes
# as long as the server needs, not this long.
RELEASE_DEADLINE_SECONDS = 180


def wal_position(db: TestDb) -> int:
    [(current,)] = db.execute("SELECT pg_current_wal_lsn()::text")
    return parse_lsn(current)


@pytest.mark.slow
def test_idle_tables_keep_wal_bounded_on_the_servers_own_clock(db: TestDb) -> None:
    """No CHECKPOINT: restart_lsn moves at the bgwriter's running-transactions records (15 s).

    Each round writes a busy round's WAL to a table nobody replicates, then runs the tap again
    and again, as a scheduler would, while that table keeps taking small writes, until the slot
    has released the round's WAL (its restart_lsn passes the WAL position after the round). What
    the server keeps is therefore bounded by what was written since the last round, whatever the
    other tables write. The wait is bounded by a deadline, not by a count of runs that must fit in
    a time: the server's clock decides when the slot moves.
    """
    config, target = setup(db)
    restarts = []
    waits = []  # seconds until each round's WAL was released, for the log
    for _ in range(3):
        busy_round(db)
        round_end = wal_position(db)
        started = time.monotonic()
        while True:
            stored = parse_lsn(quiet_position(target))
            run = run_tap(config, state=target.state).check()
            assert run.records() == []  # nothing happened to the selected table
            target.apply(run.messages)
            confirmed, restart, current = slot_position(db)
            # The slot moves only to what the target had stored.
            assert confirmed == stored
            if restart >= round_end:
                break
            waited = time.monotonic() - started
            assert waited < RELEASE_DEADLINE_SECONDS, (
                f"after {waited:.0f} s the slot still holds WAL of the busy round: "
                f"restart_lsn {restart} < {round_end} (confirmed {confirmed}, current {current})"
            )
            # The other tables stay busy: fresh WAL, so the server writes its next
            # running-transactions record (it skips them while nothing happens).
            db.execute("INSERT INTO busy (pad) VALUES ('x'); DELETE FROM busy")
            time.sleep(1)
        restarts.append(restart)
        waits.append(round(time.monotonic() - started))
    print("idle slot: seconds until each busy round's WAL was released:", waits)
    # The slot kept moving: each round released WAL the previous one could not.
    assert restarts == sorted(set(restarts)), restarts
