"""What creating a replication slot waits for: transactions open when it starts.

A logical slot (the tap's own, or the temporary one a snapshot is exported from) becomes usable
only once every transaction running when it was created has ended. An ordinary transaction ends
by itself sooner or later; a prepared (two-phase) transaction stays until someone runs COMMIT
PREPARED or ROLLBACK PREPARED, possibly for ever, and the creation waits with it, saying
nothing. `fetch_blockers` reads both kinds, `prepared_problem` is the pure judgement (a
prepared transaction still there after the allowed wait), and `wait_for_prepared` logs what
the creation would wait for, polls, and raises the judgement's error: the run and `--test` use
the same facts and judgement.
"""

from __future__ import annotations

import logging
import time
import typing as t
from dataclasses import dataclass

import psycopg2.extensions

from tap_pgcdc.errors import SlotError
from tap_pgcdc.pg.connect import transaction
from tap_pgcdc.pg.quoting import quote_literal

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

Connection: t.TypeAlias = psycopg2.extensions.connection

logger = logging.getLogger(__name__)

_PREPARED_SQL = """
SELECT gid, prepared, owner, database, transaction::text
FROM pg_catalog.pg_prepared_xacts ORDER BY prepared, gid
"""

# Sessions with a transaction ID (they have written): the ones slot creation waits for.
_OPEN_SQL = """
SELECT pid, usename, datname, xact_start, state
FROM pg_catalog.pg_stat_activity
WHERE backend_xid IS NOT NULL AND pid <> pg_catalog.pg_backend_pid()
ORDER BY xact_start
"""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A prepared (two-phase) transaction, from pg_prepared_xacts."""

    gid: str  # the name given to PREPARE TRANSACTION
    prepared: datetime  # when it was prepared
    owner: str
    database: str
    xid: str

    def __str__(self) -> str:
        return (
            f"prepared transaction {self.gid!r} (xid {self.xid}, database {self.database!r}, "
            f"owner {self.owner!r}, prepared at {self.prepared.isoformat(sep=' ')})"
        )


@dataclass(frozen=True, slots=True)
class OpenTransaction:
    """A session with a transaction that has written, from pg_stat_activity."""

    pid: int
    user: str | None
    database: str | None
    since: datetime | None
    state: str | None

    def __str__(self) -> str:
        since = self.since.isoformat(sep=" ") if self.since else "unknown"
        return (
            f"pid {self.pid} (user {self.user!r}, database {self.database!r}, "
            f"transaction open since {since}, {self.state or 'state unknown'})"
        )


@dataclass(frozen=True, slots=True)
class Blockers:
    """The transactions a slot created now would wait for."""

    prepared: tuple[Prepared, ...]
    open: tuple[OpenTransaction, ...]


def fetch_blockers(conn: Connection) -> Blockers:
    """Read the prepared transactions and the sessions with a transaction ID, cluster-wide."""
    with transaction(conn) as cur:
        cur.execute(_PREPARED_SQL)
        prepared = tuple(Prepared(*row) for row in cur.fetchall())
        cur.execute(_OPEN_SQL)
        sessions = tuple(OpenTransaction(*row) for row in cur.fetchall())
    return Blockers(prepared=prepared, open=sessions)


def prepared_problem(
    what: str, prepared: Sequence[Prepared], *, waited: float, limit: float
) -> SlotError | None:
    """The error once prepared transactions have held slot creation for `limit` seconds."""
    if not prepared or waited < limit:
        return None
    listed = "; ".join(str(item) for item in prepared)
    ends = " or ".join(
        f"COMMIT PREPARED {quote_literal(item.gid)}; / ROLLBACK PREPARED {quote_literal(item.gid)};"
        for item in prepared
    )
    one = len(prepared) == 1
    msg = (
        f"Creating {what} waits until every transaction open at that moment has ended, and "
        f"{listed} {'is' if one else 'are'} still open: a prepared (two-phase) transaction "
        "stays open until someone commits or rolls it back, so the creation could wait for "
        f"ever (a run waits slot_wait_seconds = {limit:g} s, then stops here). Fix: end "
        f"{'it' if one else 'them'}, in its database, as its owner or a superuser: {ends} "
        "then run the tap again."
    )
    return SlotError(msg)


def wait_for_prepared(
    conn: Connection,
    what: str,
    *,
    limit: float,
    poll: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Before creating a slot: log what it would wait for; stop if a prepared transaction stays.

    Raises:
        SlotError: A prepared transaction is still there after `limit` seconds.
    """
    started = clock()
    blockers = fetch_blockers(conn)
    if blockers.open:
        logger.info(
            "Creating %s waits for the transactions open now to end: %s.",
            what,
            "; ".join(str(item) for item in blockers.open),
        )
    if not blockers.prepared:
        return
    logger.warning(
        "Creating %s waits for %s to be committed or rolled back (COMMIT PREPARED / ROLLBACK "
        "PREPARED); waiting up to %g s.",
        what,
        "; ".join(str(item) for item in blockers.prepared),
        limit,
    )
    while True:
        problem = prepared_problem(what, blockers.prepared, waited=clock() - started, limit=limit)
        if problem is not None:
            raise problem
        sleep(poll)
        blockers = fetch_blockers(conn)
        if not blockers.prepared:
            logger.info("The prepared transactions have ended; creating %s.", what)
            return
