"""The read-only SQL session a snapshot reads in, optionally inside an exported snapshot.

Every snapshot read (the LOG_BASED streams' first sync, FULL_TABLE streams, the dry run) uses
one REPEATABLE READ, read-only transaction that is rolled back at the end: it sees one
consistent picture of every table it reads and can change nothing. For LOG_BASED streams the
transaction imports the snapshot a temporary slot exported (`SET TRANSACTION SNAPSHOT`), so
that it sees exactly the transactions before the slot's consistent point.
"""

from __future__ import annotations

import contextlib
import typing as t

from tap_pgcdc.pg.connect import connect

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    import psycopg2.extensions

    Readers: t.TypeAlias = "Sequence[psycopg2.extensions.connection]"
    """More connections in one exported snapshot, for parallel readers (`worker_connections`)."""


@contextlib.contextmanager
def snapshot_connection(
    config: Mapping[str, t.Any], *, snapshot_name: str | None = None
) -> Iterator[psycopg2.extensions.connection]:
    """A connection in a read-only REPEATABLE READ transaction, rolled back and closed after.

    Args:
        config: The tap's settings (connection parameters).
        snapshot_name: An exported snapshot to read in (from CREATE_REPLICATION_SLOT ...
            EXPORT_SNAPSHOT); None for a snapshot of the transaction's own.
    """
    conn = connect(config)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        if snapshot_name is not None:
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
        yield conn
        conn.rollback()
    finally:
        conn.close()


@contextlib.contextmanager
def worker_connections(
    config: Mapping[str, t.Any], snapshot_name: str, workers: int
) -> Iterator[list[psycopg2.extensions.connection]]:
    """`workers` - 1 more connections in the exported snapshot, for parallel readers.

    Opened while the exporting session still holds the snapshot (it must, for the import);
    none where `workers` is 1. All are rolled back and closed after.
    """
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(snapshot_connection(config, snapshot_name=snapshot_name))
            for _ in range(workers - 1)
        ]
