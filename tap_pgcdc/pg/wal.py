"""The server's WAL positions, read over a plain SQL connection."""

from __future__ import annotations

import logging

import psycopg2
import psycopg2.extensions

from tap_pgcdc.pg.lsn import parse_lsn

logger = logging.getLogger(__name__)


def current_flush_lsn(conn: psycopg2.extensions.connection) -> int:
    """Where the server has flushed its WAL: the position a run reads up to.

    A standby (PG16+ decodes there) has no WAL of its own to flush: what it has replayed is
    what its walsender can decode up to.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() "
            "THEN pg_catalog.pg_last_wal_replay_lsn() "
            "ELSE pg_catalog.pg_current_wal_flush_lsn() END::text"
        )
        row = cur.fetchone()
    assert row is not None  # a SELECT without FROM always returns its row
    return parse_lsn(row[0])


def current_wal_lsn(conn: psycopg2.extensions.connection) -> int:
    """The server's current WAL write position (replayed position on a standby), 0 if unknown."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() "
            "THEN pg_catalog.pg_last_wal_replay_lsn() "
            "ELSE pg_catalog.pg_current_wal_lsn() END)::text"
        )
        row = cur.fetchone()
    return parse_lsn(row[0]) if row and row[0] else 0


def flush_past(conn: psycopg2.extensions.connection) -> None:
    """Make sure the WAL up to the current flush position is whole and flushed.

    The flush position can fall inside a record: the WAL writer flushes whole pages, and a
    record such as the running-transactions one that a slot's creation writes is not flushed by
    anyone until more WAL follows. The walsender decodes only whole flushed records, so on a
    server that then falls idle it never reports a position at or past a stop position taken
    now, and a run would wait for unrelated activity (15 s for the next running-transactions
    record, or for ever). Committing a transaction of our own (it takes an XID and changes
    nothing, so nothing is published) writes a commit record after that position and flushes
    everything before it. `conn` must be in autocommit mode.
    """
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL "
                "ELSE pg_catalog.txid_current() END"
            )
    except psycopg2.Error as exc:  # e.g. default_transaction_read_only for this role
        logger.debug("Could not commit a transaction to flush the WAL: %s", exc)
