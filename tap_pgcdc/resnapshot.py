"""Marking streams for a re-snapshot, and following what DDL did to their tables.

Every recovery that re-reads a stream (changes lost with the slot, never published, decoded
without generated values, or changed by DDL the log cannot express) ends the same way: the
stream forgets its position and carries the `resnapshot` mark until its snapshot starts, which
then sends an ACTIVATE_VERSION first (see `Run._snapshot_log_streams`). A run interrupted
before then keeps the mark in its STATE, so the next run still sends it.
"""

from __future__ import annotations

import typing as t

from tap_pgcdc import recovery
from tap_pgcdc.checks import shape_changes
from tap_pgcdc.state import RESNAPSHOT_KEY, SHAPE_KEY

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Collection, Mapping, Sequence

    import psycopg2.extensions

    from tap_pgcdc.streams import PgCdcStream


def mark(streams: Sequence[PgCdcStream], names: Collection[str]) -> list[PgCdcStream]:
    """Mark the streams named for a re-snapshot: positions dropped, `resnapshot` set."""
    marked = [s for s in streams if s.name in names]
    for stream in marked:
        for key in ("lsn", "snapshot"):
            stream.bookmark.pop(key, None)
        stream.bookmark[RESNAPSHOT_KEY] = True
    return marked


def follow_shapes(
    conn: psycopg2.extensions.connection,
    streams: Sequence[PgCdcStream],
    oids: Mapping[str, int],
    logger: logging.Logger,
) -> list[PgCdcStream]:
    """Mark the streams whose rows DDL changed beyond what the log shows; record every shape.

    The log is intact, so this needs no setting: the snapshot replaces the rows the log cannot
    correct (the principle in docs/architecture.md). Changes the shape absorbs (a column added
    without a value, a type changed in place) are recorded, for the next comparison.

    Args:
        conn: An autocommit connection.
        streams: LOG_BASED streams.
        oids: The OID of each stream's table now (see `checks.shape_changes`).
        logger: Where each re-snapshot's reason goes.

    Returns:
        The streams marked.
    """
    changed, shapes = shape_changes(conn, streams, oids)
    for name, change in changed.items():
        logger.warning("%s", recovery.describe_shape_change(name, change))
    for stream in streams:
        if stream.name in shapes:
            stream.bookmark[SHAPE_KEY] = shapes[stream.name].record()
    return mark(streams, changed)
