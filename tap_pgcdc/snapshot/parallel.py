"""Parallel snapshot readers: a keyed table's chunks read by several connections, written in order.

With `snapshot_workers` > 1 every worker's connection imports the same exported snapshot (see
`session.worker_connections`), so all see the same rows. After a first chunk read alone (it
sizes the rest: `JsonSnapshot._parallel`), one query over the key takes the key of every
chunk-size-th row after the last one written (`ChunkQuery.boundaries`): chunk i is
then exactly "the `size` rows after boundary i-1", the same chunk the one-worker path reads,
by the same query. The workers run those queries; the caller (one writer) gets the chunks
strictly in key order, so the output and the STATE after each chunk ("after" its last key) are
those of the one-worker path, and an interrupted run resumes without a gap.

At most `ahead` chunks are read but not yet written (a worker waits before starting further
ahead), which bounds memory.
"""

from __future__ import annotations

import threading
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

_C = t.TypeVar("_C")
_S = t.TypeVar("_S")
_R = t.TypeVar("_R")


def chunk_starts(
    after: Sequence[str] | None, boundaries: Sequence[Sequence[str]]
) -> list[Sequence[str] | None]:
    """Where each chunk starts: after the resume marker, then after each boundary key.

    `boundaries` are the keys of every size-th row after `after`, in key order; the chunk after
    the last boundary holds the rest (possibly nothing, where the rows are a multiple of size).
    """
    return [after, *boundaries]


def in_order(
    conns: Sequence[_C],
    starts: Sequence[_S],
    read: Callable[[_C, _S], _R],
    *,
    ahead: int,
) -> Generator[_R, None, None]:
    """`read(conn, start)` for each start, run by one thread per connection, yielded in order.

    A worker claims the next start only while fewer than `ahead` chunks are waiting to be
    yielded (or being read). Each connection is used by its own thread only, until every thread
    has been joined, which happens before this returns, also on an error or an early close; the
    first error of a worker is raised here, after the chunks before it have been yielded.
    """
    cond = threading.Condition()
    results: dict[int, _R] = {}
    claimed = 0  # the next start to claim
    given = 0  # the next chunk to yield
    failure: list[BaseException] = []
    stop = False

    def work(conn: _C) -> None:
        nonlocal claimed
        while True:
            with cond:
                while (
                    not stop and not failure and claimed < len(starts) and claimed >= given + ahead
                ):
                    cond.wait()
                if stop or failure or claimed >= len(starts):
                    return
                index = claimed
                claimed += 1
            try:
                result = read(conn, starts[index])
            except BaseException as exc:  # handed to the writer, which raises it
                with cond:
                    failure.append(exc)
                    cond.notify_all()
                return
            with cond:
                results[index] = result
                cond.notify_all()

    threads = [
        threading.Thread(
            target=work, args=(conn,), name=f"tap-pgcdc-snapshot-worker-{n}", daemon=True
        )
        for n, conn in enumerate(conns)
    ]
    for thread in threads:
        thread.start()
    try:
        for index in range(len(starts)):
            with cond:
                while index not in results and not failure:
                    cond.wait()
                if index not in results:
                    raise failure[0]
                result = results.pop(index)
                given = index + 1
                cond.notify_all()
            yield result
    finally:
        with cond:
            stop = True
            cond.notify_all()
        for thread in threads:
            thread.join()  # a worker in a query finishes it first: one chunk at most
