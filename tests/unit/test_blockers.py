"""What slot creation waits for: the judgement over prepared transactions (no server)."""

from __future__ import annotations

from datetime import UTC, datetime

from tap_pgcdc.replication.blockers import OpenTransaction, Prepared, prepared_problem

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PREPARED = Prepared(gid="pay-42", prepared=AT, owner="app", database="shop", xid="751")


def test_a_prepared_transaction_stops_slot_creation_after_the_allowed_wait() -> None:
    assert prepared_problem("replication slot s", [PREPARED], waited=59.5, limit=60) is None
    assert prepared_problem("replication slot s", [], waited=600, limit=60) is None
    problem = prepared_problem("replication slot s", [PREPARED], waited=60, limit=60)
    assert problem is not None
    assert str(problem) == (
        "Creating replication slot s waits until every transaction open at that moment has "
        "ended, and prepared transaction 'pay-42' (xid 751, database 'shop', owner 'app', "
        "prepared at 2026-01-02 03:04:05+00:00) is still open: a prepared (two-phase) "
        "transaction stays open until someone commits or rolls it back, so the creation could "
        "wait for ever (a run waits slot_wait_seconds = 60 s, then stops here). Fix: end it, in its "
        "database, as its owner or a superuser: COMMIT PREPARED 'pay-42'; / ROLLBACK PREPARED "
        "'pay-42'; then run the tap again."
    )


def test_open_transactions_are_described_for_the_log() -> None:
    session = OpenTransaction(
        pid=77, user="etl", database="shop", since=AT, state="idle in transaction"
    )
    assert str(session) == (
        "pid 77 (user 'etl', database 'shop', transaction open since 2026-01-02 03:04:05+00:00, "
        "idle in transaction)"
    )
