"""The replication connection: the only module that touches psycopg2's replication API.

Why we read the COPY BOTH stream through libpq ourselves: psycopg2's `read_message()` answers
keepalives on its own, and before the first data message it moves its `flush_lsn` forward to the
keepalive's WAL end, then reports it to the server. That would confirm positions to the slot that
the target never stored, the exact way peer taps lose data. So psycopg2 opens the connection and
issues START_REPLICATION (so SSL, auth and options behave as everywhere else), and from then on
this module calls libpq's PQgetCopyData/PQputCopyData on psycopg2's own PGconn. Every standby
status update that reaches the server is sent from here, built (`protocol.status_update`) from the
LSN the caller gives us.
"""

from __future__ import annotations

import ctypes
import select
import typing as t
from dataclasses import dataclass

import psycopg2
import psycopg2.extras

from tap_pgcdc.errors import ReplicationError
from tap_pgcdc.pg.connect import connect
from tap_pgcdc.pg.lsn import format_lsn, parse_lsn
from tap_pgcdc.replication.libpq import LibPq, libpq
from tap_pgcdc.replication.protocol import Frame, status_update

if t.TYPE_CHECKING:
    from collections.abc import Mapping


def open_replication_connection(
    config: Mapping[str, t.Any],
) -> psycopg2.extras.LogicalReplicationConnection:
    """A replication=database connection with the tap's pinned session settings.

    Raises:
        ConnectionFailed: The server is unreachable or refused the connection.
    """
    conn = connect(config, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    return t.cast("psycopg2.extras.LogicalReplicationConnection", conn)


@dataclass(frozen=True, slots=True)
class ExportedSnapshot:
    """A consistent point in the WAL and the name of the snapshot that sees exactly up to it."""

    consistent_point: int
    snapshot_name: str
    slot_name: str


class SnapshotSession:
    """A temporary slot created with EXPORT_SNAPSHOT, held open while snapshots read.

    The exported snapshot sees exactly the transactions that committed before the slot's
    consistent point, and the main slot (created earlier) delivers every transaction that commits
    after it. Reading a table in that snapshot and replaying the log from the consistent point
    therefore leaves no gap. The snapshot stays valid only while this connection stays idle, so
    nothing else may be sent on it until `close()`; closing drops the temporary slot.
    """

    def __init__(self, config: Mapping[str, t.Any], slot_name: str) -> None:
        self._conn = open_replication_connection(config)
        try:
            cur = self._conn.cursor()
            cur.execute(
                f"CREATE_REPLICATION_SLOT {slot_name} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
            )
            row = cur.fetchone()
        except psycopg2.Error as exc:
            self._conn.close()
            msg = (
                f"Could not create the temporary slot {slot_name} that pins the snapshot: "
                f"{str(exc).strip()}. Fix: free a replication slot or raise "
                "max_replication_slots (a snapshot needs one slot beyond the tap's own)."
            )
            raise ReplicationError(msg) from None
        assert row is not None  # the server always answers CREATE_REPLICATION_SLOT with a row
        self.exported = ExportedSnapshot(
            consistent_point=parse_lsn(row[1]), snapshot_name=row[2], slot_name=slot_name
        )

    def close(self) -> None:
        """Close the connection, which drops the temporary slot and ends the snapshot."""
        self._conn.close()

    def __enter__(self) -> SnapshotSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReplicationStream:
    """A running START_REPLICATION stream of pgoutput messages.

    `read()` returns raw CopyData payloads: XLogData ('w') and primary keepalive ('k') messages.
    The server's keepalive requests are not answered here; the reader answers them with
    `send_status`, so that every flush LSN we report is one the reader chose.
    """

    def __init__(
        self,
        config: Mapping[str, t.Any],
        *,
        slot_name: str,
        publication_name: str,
        start_lsn: int,
        proto_version: int = 1,
        messages: bool = False,
        origin: str | None = None,
    ) -> None:
        self._conn = open_replication_connection(config)
        self._pgconn = ctypes.c_void_p(self._conn.pgconn_ptr)
        self._lib = libpq()
        self._buf = ctypes.c_void_p()
        options = {"proto_version": str(proto_version), "publication_names": publication_name}
        if messages:
            options["messages"] = "true"
        if origin is not None:  # PostgreSQL 16+: 'none' leaves out changes a subscription applied
            options["origin"] = origin
        cur = self._conn.cursor()
        try:
            cur.start_replication(
                slot_name=slot_name, decode=False, start_lsn=format_lsn(start_lsn), options=options
            )
        except psycopg2.Error as exc:
            self._conn.close()
            msg = f"START_REPLICATION on slot {slot_name} failed: {str(exc).strip()}"
            raise ReplicationError(msg) from None
        self._cursor = cur  # keep psycopg2's cursor alive for the connection's lifetime
        self._fd = self._conn.fileno()
        self.bytes_received = 0  # CopyData payload bytes read (the run report's figure)

    def read(self, timeout: float) -> Frame | None:
        """The next CopyData payload, or None if none arrived within `timeout` seconds.

        A payload of `BORROW_FROM` bytes or more is a view of libpq's own copy (see `_borrow`)
        rather than a copy of it: a 90 MB row is then in memory twice (libpq's input buffer and
        its copy), not three times.
        """
        lib = self._lib
        n = lib.get_copy_data(self._pgconn, ctypes.byref(self._buf), 1)
        if n == 0:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                return None
            if not lib.consume_input(self._pgconn):
                self._raise_connection_error()
            n = lib.get_copy_data(self._pgconn, ctypes.byref(self._buf), 1)
            if n == 0:
                return None
        if n > 0:
            self.bytes_received += n
            if n >= BORROW_FROM:
                return _borrow(lib, self._buf, n)
            try:
                return ctypes.string_at(self._buf, n)
            finally:
                lib.freemem(self._buf)
        if n == -1:
            self._raise_stream_end()
        self._raise_connection_error()
        raise AssertionError("unreachable")  # pragma: no cover

    def send_status(self, *, flush_lsn: int, reply: bool = False) -> None:
        """Send a standby status update reporting `flush_lsn` as written, flushed and applied.

        For a logical slot only the flush position matters: the server sets the slot's
        confirmed_flush_lsn to it. Write and apply carry the same value so that monitoring
        (pg_stat_replication) shows what the tap has confirmed, not what it merely read.
        0 means "nothing to confirm" and the server ignores it.
        """
        message = status_update(flush_lsn, reply=reply)
        if self._lib.put_copy_data(self._pgconn, message, len(message)) != 1:
            self._raise_connection_error()
        if self._lib.flush(self._pgconn) != 0:
            self._raise_connection_error()

    def _raise_stream_end(self) -> t.NoReturn:
        res = self._lib.get_result(self._pgconn)
        detail = "the server ended the replication stream"
        if res:
            text = self._lib.result_error_message(res)
            if text:
                detail = text.decode("utf-8", "replace").strip() or detail
            self._lib.clear(res)
        raise ReplicationError(f"Replication stream ended: {detail}")

    def _raise_connection_error(self) -> t.NoReturn:
        text = self._lib.error_message(self._pgconn) or b""
        detail = text.decode("utf-8", "replace").strip() or "connection lost"
        raise ReplicationError(f"Replication connection failed: {detail}")

    def close(self) -> None:
        """Close the replication connection (the server ends the stream)."""
        self._conn.close()

    def __enter__(self) -> ReplicationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "ExportedSnapshot",
    "ReplicationStream",
    "SnapshotSession",
    "open_replication_connection",
]


BORROW_FROM = 1 << 20  # payloads from this size are views of libpq's copy (see `_borrow`)


class _Freed:
    """Frees a libpq buffer when the last view of it is gone."""

    __slots__ = ("_lib", "_ptr")

    def __init__(self, lib: LibPq, ptr: int) -> None:
        self._lib = lib
        self._ptr = ptr

    def __del__(self) -> None:
        self._lib.freemem(self._ptr)


def _borrow(lib: LibPq, buf: ctypes.c_void_p, n: int) -> memoryview:
    """A view of the `n` bytes libpq allocated at `buf`, which frees them with its last view.

    The array over the buffer owns the `_Freed` that frees it, and every memoryview (slices
    included) keeps the array alive: whoever holds a part of the payload holds the buffer, so it
    can never be freed under a reader. `buf` itself is reused by the next read.
    """
    address = t.cast("int", buf.value)
    array = (ctypes.c_char * n).from_address(address)
    array.owner = _Freed(lib, address)  # type: ignore[attr-defined]
    return memoryview(array).cast("B")
