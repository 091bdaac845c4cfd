"""The `origin` setting against real servers: a subscription writes into a captured table.

Server A is the tap's (the test's major); a second server (the session's default) publishes a
table that a subscription on A applies into the very table the tap captures, while A's own
clients write to it too. With `origin = none` the tap emits only A's own changes; with `any`
(the default) both. Before PostgreSQL 16, pgoutput has no origin option: `none` is refused by
the run and by `--test`, with the fix, and nothing is changed.
"""

from __future__ import annotations

import time
import typing as t
from collections.abc import Iterator

import pytest

from tests.conftest import TestDb
from tests.integration.test_failures import assert_refused, slots_and_publications
from tests.memory_target import MemoryTarget
from tests.tap_runner import run_tap

STREAM = "public-items"
TABLE = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)"


@pytest.fixture
def subscribed(vdb: TestDb, db: TestDb, pg_major: int) -> Iterator[TestDb]:
    """`vdb` (the tap's server) with a subscription applying `db`'s items into its own items."""
    if pg_major < 16:
        pytest.skip("pgoutput's origin option needs PostgreSQL 16")
    db.execute(TABLE)
    db.execute("CREATE PUBLICATION upstream FOR TABLE items")
    vdb.execute(TABLE)
    server = db.server
    conninfo = f"host={server.host} port={server.port} user={server.superuser} dbname={db.name}"
    vdb.execute(
        f"CREATE SUBSCRIPTION sub_{vdb.name} CONNECTION '{conninfo}' PUBLICATION upstream "
        "WITH (copy_data = false)"
    )
    try:
        yield vdb
    finally:
        vdb.execute(f"DROP SUBSCRIPTION sub_{vdb.name}")


def wait_for_row(db: TestDb, key: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not db.execute("SELECT 1 FROM items WHERE id = %s", (key,)):
        assert time.monotonic() < deadline, f"the subscription did not apply row {key}"
        time.sleep(0.1)


def sync(config: dict[str, t.Any], target: MemoryTarget) -> None:
    target.apply(run_tap(config, state=target.state).check().messages)


def test_origin_none_leaves_out_what_a_subscription_applied(subscribed: TestDb, db: TestDb) -> None:
    a = subscribed
    local_only = a.config(
        origin="none", slot_name=f"none_{a.name}", publication_name=f"none_{a.name}"
    )
    every = a.config(slot_name=f"any_{a.name}", publication_name=f"any_{a.name}")
    targets = {"none": MemoryTarget(), "any": MemoryTarget()}
    # First runs: each tap's slot and publication exist before the changes.
    sync(local_only, targets["none"])
    sync(every, targets["any"])

    db.execute("INSERT INTO items VALUES (1, 'from the publisher')")  # applied on A by sub
    a.execute("INSERT INTO items VALUES (2, 'local')")
    wait_for_row(a, 1)
    db.execute("UPDATE items SET v = 'updated upstream' WHERE id = 1")
    a.execute("UPDATE items SET v = 'updated here' WHERE id = 2")
    deadline = time.monotonic() + 60
    while a.execute("SELECT v FROM items WHERE id = 1") != [("updated upstream",)]:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    sync(local_only, targets["none"])
    sync(every, targets["any"])
    assert targets["none"].rows(STREAM) == [{"id": 2, "v": "updated here"}]
    assert targets["any"].rows(STREAM) == [
        {"id": 1, "v": "updated upstream"},
        {"id": 2, "v": "updated here"},
    ]


def test_origin_none_is_refused_before_postgresql_16(vdb: TestDb, pg_major: int) -> None:
    if pg_major >= 16:
        pytest.skip("PostgreSQL 16+ has pgoutput's origin option")
    vdb.execute(TABLE)
    config = vdb.config(origin="none")
    run = run_tap(config)
    error = assert_refused(run, "origin = 'none' needs PostgreSQL 16.0 or later")
    assert error.rstrip().endswith("or upgrade the server to PostgreSQL 16+.")
    assert run.returncode == 1
    assert slots_and_publications(vdb.server, vdb.name) == ([], [])  # nothing changed
    checked = run_tap(config, args=["--test"], timeout=60)
    assert checked.returncode == 1
    assert "origin = 'none' needs PostgreSQL 16.0 or later" in checked.stderr
    assert slots_and_publications(vdb.server, vdb.name) == ([], [])
    run_tap(vdb.config(origin="any")).check()  # the default works there
