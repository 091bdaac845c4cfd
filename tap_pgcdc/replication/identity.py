"""Replica identity: whether the server can identify the rows an UPDATE or DELETE changes.

`fetch_replica_identities` reads, for each selected table (for a partitioned table: each of its
leaf partitions), its replica identity and the indexes it can rest on; `judge_replica_identity`
turns them into one problem per table whose changes cannot be identified. The run fails on them,
`--test` reports them.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

import psycopg2.extensions

from tap_pgcdc.pg.connect import transaction
from tap_pgcdc.pg.quoting import quote_ident

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from tap_pgcdc.pg.catalog import TableInfo

Connection: t.TypeAlias = psycopg2.extensions.connection


@dataclass(frozen=True, slots=True)
class ReplicaIdentity:
    """The replica identity of one table, or of one leaf partition of a selected table."""

    top_schema: str  # the selected table (the partitioned parent, for a partition)
    top_name: str
    schema: str  # the table whose UPDATEs and DELETEs are logged
    name: str
    replident: str  # pg_class.relreplident: d default, n nothing, f full, i index
    has_primary_key: bool
    has_identity_index: bool  # an index marked as the replica identity still exists


# Partitioned tables are checked through their leaf partitions: an UPDATE or DELETE runs on the
# leaf, and it is the leaf's replica identity that Postgres checks and writes to the WAL.
_REPLICA_IDENTITY_SQL = """
WITH selected AS (
    SELECT s.oid, s.ord FROM unnest(%s::oid[]) WITH ORDINALITY AS s(oid, ord)
), targets AS (
    SELECT s.ord, s.oid AS top, s.oid AS rel
    FROM selected s JOIN pg_catalog.pg_class c ON c.oid = s.oid
    WHERE c.relkind <> 'p'
  UNION ALL
    SELECT s.ord, s.oid, p.relid::oid
    FROM selected s JOIN pg_catalog.pg_class c ON c.oid = s.oid AND c.relkind = 'p'
    CROSS JOIN LATERAL pg_catalog.pg_partition_tree(s.oid) p
    WHERE p.isleaf
)
SELECT tn.nspname, tc.relname, n.nspname, c.relname, c.relreplident,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i
               WHERE i.indrelid = c.oid AND i.indisreplident)
FROM targets x
JOIN pg_catalog.pg_class c ON c.oid = x.rel
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class tc ON tc.oid = x.top
JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
WHERE c.relkind = 'r'
ORDER BY x.ord, n.nspname, c.relname
"""


def fetch_replica_identities(
    conn: Connection, tables: Sequence[TableInfo]
) -> tuple[ReplicaIdentity, ...]:
    """The replica identity of each table (each leaf partition of a partitioned one).

    In selection order, a partitioned table's leaves by name.
    """
    with transaction(conn) as cur:
        cur.execute(_REPLICA_IDENTITY_SQL, ([table.oid for table in tables],))
        rows = cur.fetchall()
    return tuple(ReplicaIdentity(*row) for row in rows)


def judge_replica_identity(identities: Sequence[ReplicaIdentity]) -> list[str]:
    """One message per table (or partition) whose UPDATEs and DELETEs cannot be identified.

    A table without a usable replica identity cannot be updated or deleted from at all while a
    publication that publishes those changes lists it; the caller decides to warn or fail.
    """
    problems = []
    for rel in identities:
        if rel.replident == "n":
            why, then = "REPLICA IDENTITY NOTHING", " and set REPLICA IDENTITY DEFAULT"
        elif rel.replident == "d" and not rel.has_primary_key:
            why, then = "REPLICA IDENTITY DEFAULT and no primary key", ""
        elif rel.replident == "i" and not rel.has_identity_index:
            why = "REPLICA IDENTITY USING INDEX, but that index was dropped"
            then = " and set REPLICA IDENTITY DEFAULT"
        else:
            continue
        display = f"{rel.schema}.{rel.name}"
        if (rel.schema, rel.name) != (rel.top_schema, rel.top_name):
            display += f" (a partition of {rel.top_schema}.{rel.top_name})"
        sql = f"ALTER TABLE {quote_ident(rel.schema)}.{quote_ident(rel.name)}"
        problems.append(
            f"{display} has no replica identity ({why}): UPDATE and DELETE on it will fail in "
            "Postgres itself while it is published (or be unidentifiable). Fix: "
            f"{sql} REPLICA IDENTITY FULL; or add a primary key{then}."
        )
    return problems
