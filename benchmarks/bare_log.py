"""The log baseline: a bare psycopg2 replication loop that only counts pgoutput messages.

    python benchmarks/bare_log.py DSN SLOT PUBLICATION START_LSN STOP_LSN

Reads SLOT (a throwaway copy: psycopg2 confirms what it reads) with the same options as the tap
(pgoutput, proto_version 1, the publication), raw bytes, from START_LSN until a transaction
ending at or past STOP_LSN, or until the server reports it has nothing more before STOP_LSN.
Prints the number of messages.
"""

from __future__ import annotations

import select
import sys

import psycopg2
import psycopg2.extras

COMMIT = ord("C")


def lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def main() -> None:
    dsn, slot, publication, start, stop_text = sys.argv[1:6]
    stop = lsn(stop_text)
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = conn.cursor()
    cur.start_replication(
        slot_name=slot,
        decode=False,
        start_lsn=start,
        options={"proto_version": "1", "publication_names": publication},
    )
    count = 0
    while True:
        message = cur.read_message()
        if message is None:
            if cur.wal_end >= stop:
                break
            # Idle: ask for a keepalive, whose WAL end says whether anything is left to read.
            cur.send_feedback(reply=True)
            select.select([cur], [], [], 0.5)
            continue
        count += 1
        payload = message.payload
        # Commit: type, flags, commit LSN, end LSN (big-endian uint64 at offset 10).
        if payload[0] == COMMIT and int.from_bytes(payload[10:18], "big") >= stop:
            break
    conn.close()
    print(count)


if __name__ == "__main__":
    main()
