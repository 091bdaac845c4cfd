"""PostgreSQL 18's idle_replication_slot_timeout against a real server.

A server of its own (the timeout is server-wide): 6 seconds. A run, then a pause past half the
timeout: `--test` and the next run warn, naming the setting and the fix. A pause past the
timeout and a checkpoint: the server invalidates the slot (invalidation_reason = idle_timeout);
the next run stops with the error that names the setting and the recovery, changing nothing, and
with on_slot_lost = resnapshot the run recovers and the target equals the source again.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator

import pytest

from tests.conftest import TestDb
from tests.integration.test_failures import rows
from tests.integration.test_run_report import the_report
from tests.memory_target import MemoryTarget
from tests.pgserver import PgServer, start_server
from tests.tap_runner import run_tap

TIMEOUT = 6
STREAM = "public-items"


@pytest.fixture(scope="module")
def pg18() -> Iterator[PgServer]:
    try:
        server = start_server(major=18, settings={"idle_replication_slot_timeout": f"{TIMEOUT}s"})
    except RuntimeError as exc:  # pragma: no cover - binaries from scripts/fetch_postgres.sh
        pytest.skip(f"no PostgreSQL 18: {exc}")
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def db18(pg18: PgServer) -> Iterator[TestDb]:
    pg18.create_database("idle")
    db = TestDb(pg18, "idle")
    try:
        yield db
    finally:
        db.drop()


def invalidation_reason(db: TestDb, slot: str) -> str | None:
    ((reason,),) = db.execute(
        "SELECT invalidation_reason FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    )
    return reason


def test_idle_slot_warning_then_invalidation_and_recovery(db18: TestDb) -> None:
    db = db18
    db.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO items VALUES (1, 'one'), (2, 'two')")
    config = db.config()
    slot = config["slot_name"]
    target = MemoryTarget()
    first = run_tap(config).check()
    target.apply(first.messages)
    assert not [line for line in first.stderr.splitlines() if "idle_replication_slot" in line]
    # The state keeps when the run started, by the server's clock.
    started = datetime.datetime.fromisoformat(target.state["tap_pgcdc"]["last_run_at"])
    ((server_now,),) = db.execute("SELECT now()")
    assert datetime.timedelta(0) < server_now - started < datetime.timedelta(seconds=30)

    time.sleep(TIMEOUT * 0.5 + 1)  # past half the timeout, before it
    checked = run_tap(config, state=target.state, args=["--test"], timeout=60)
    assert checked.returncode == 0, checked.stderr[-2000:]
    (warning,) = [line for line in checked.stderr.splitlines() if "Preflight warning" in line]
    assert f"Replication slot '{slot}' was idle for " in warning
    assert "of idle_replication_slot_timeout (6 s) on this server" in warning
    assert "Fix: run the tap at least every 3 s, or raise idle_replication_slot_timeout" in warning
    db.execute("INSERT INTO items VALUES (3, 'three')")
    second = run_tap(config, state=target.state).check()
    target.apply(second.messages)
    assert any(
        "| WARNING" in line and "of idle_replication_slot_timeout (6 s)" in line
        for line in second.stderr.splitlines()
    ), second.stderr[-2000:]
    assert target.rows(STREAM) == rows(db, "items")
    assert invalidation_reason(db, slot) is None

    db.execute("DELETE FROM items WHERE id = 1")  # waits in the slot, and is lost with it
    time.sleep(TIMEOUT + 1)
    deadline = time.monotonic() + 30
    while invalidation_reason(db, slot) != "idle_timeout":
        assert time.monotonic() < deadline, "the server did not invalidate the idle slot"
        db.execute("CHECKPOINT")
        time.sleep(0.2)

    refused = run_tap(config, state=target.state)
    assert refused.returncode == 1
    assert refused.of_type("STATE") == [] and refused.records() == []
    error = the_report(refused)["error"]
    assert error["class"] == "SlotError"
    message = error["message"]
    assert "invalidation_reason=idle_timeout): it was idle for longer than" in message
    assert "Fix: set on_slot_lost = resnapshot" in message
    assert "run the tap more often than idle_replication_slot_timeout" in message
    assert invalidation_reason(db, slot) == "idle_timeout"  # nothing changed
    checked = run_tap(config, state=target.state, args=["--test"], timeout=60)
    assert checked.returncode == 1
    assert "invalidation_reason=idle_timeout" in checked.stderr

    recovered = run_tap({**config, "on_slot_lost": "resnapshot"}, state=target.state).check()
    target.apply(recovered.messages)
    assert target.rows(STREAM) == rows(db, "items")  # the lost delete is in the target too
    assert invalidation_reason(db, slot) is None
