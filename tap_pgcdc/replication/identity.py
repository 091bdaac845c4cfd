"""Replica identity: whether the server can identify the rows an UPDATE or DELETE changes.

`fetch_replica_identities` reads, for each table (for a partitioned table: each of its leaf
partitions), its replica identity, the indexes it can rest on and whether it is logged at all;
`judge_replica_identity` turns them into one `Uncapturable` per table whose changes the log cannot
carry or identify. Discovery offers those tables as FULL_TABLE, a run refuses them as LOG_BASED
streams (and warns for them as FULL_TABLE ones), `--test` reports them: one judgement, three
callers.
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
    persistence: str = "p"  # pg_class.relpersistence: p permanent, u unlogged


@dataclass(frozen=True, slots=True)
class Uncapturable:
    """A table (or leaf partition) whose changes the log cannot carry or identify, and the fix."""

    top_schema: str  # the selected table (the partitioned parent, for a partition)
    top_name: str
    schema: str  # the table at fault
    name: str
    why: str  # what is wrong, e.g. "it has no primary key and REPLICA IDENTITY DEFAULT"
    consequence: str  # what the log then does with its changes
    fix: str  # the statements that make it capturable, without a final period

    @property
    def display(self) -> str:
        """`schema.name`, with the partitioned table it belongs to if it is a partition."""
        shown = f"{self.schema}.{self.name}"
        if (self.schema, self.name) != (self.top_schema, self.top_name):
            shown += f" (a partition of {self.top_schema}.{self.top_name})"
        return shown

    def __str__(self) -> str:
        """One sentence: the table, why, the consequence and the fix."""
        return self.sentence()

    def sentence(self, *, opening: str = "", alternative: str = "") -> str:
        """The sentence, after `opening` and with `alternative` as a last fix (", or ...")."""
        return (
            f"{opening}{self.display} cannot be captured from the log: {self.why}, so "
            f"{self.consequence}. Fix: {self.fix}{alternative}."
        )


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
               WHERE i.indrelid = c.oid AND i.indisreplident),
       c.relpersistence
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


def judge_replica_identity(identities: Sequence[ReplicaIdentity]) -> list[Uncapturable]:
    """One verdict per table (or partition) whose changes the log cannot carry or identify.

    An unlogged table writes nothing to the WAL, so logical decoding never sees its changes. A
    table without a usable replica identity cannot even be updated or deleted from while a
    publication that publishes those changes lists it. The caller decides to fall back to
    FULL_TABLE, warn or fail.
    """
    found = []
    unidentified = (
        "its UPDATEs and DELETEs cannot be identified (Postgres refuses them while the table is "
        "published)"
    )
    for rel in identities:
        sql = f"ALTER TABLE {quote_ident(rel.schema)}.{quote_ident(rel.name)}"
        if rel.persistence == "u":
            why = "it is UNLOGGED"
            consequence = "none of its changes reach the WAL"
            fix = f"{sql} SET LOGGED"
        elif rel.replident == "n":
            why, consequence = "it has REPLICA IDENTITY NOTHING", unidentified
            fix = f"{sql} REPLICA IDENTITY FULL (or DEFAULT, if it has a primary key)"
        elif rel.replident == "d" and not rel.has_primary_key:
            why, consequence = "it has no primary key and REPLICA IDENTITY DEFAULT", unidentified
            fix = f"{sql} REPLICA IDENTITY FULL, or add a primary key"
        elif rel.replident == "i" and not rel.has_identity_index:
            why = "its REPLICA IDENTITY USING INDEX names an index that was dropped"
            consequence = unidentified
            fix = f"{sql} REPLICA IDENTITY FULL (or DEFAULT, if it has a primary key)"
        else:
            continue
        found.append(
            Uncapturable(rel.top_schema, rel.top_name, rel.schema, rel.name, why, consequence, fix)
        )
    return found


def by_table(verdicts: Sequence[Uncapturable]) -> dict[tuple[str, str], list[Uncapturable]]:
    """The verdicts of each selected table (a partitioned table's: those of its partitions)."""
    grouped: dict[tuple[str, str], list[Uncapturable]] = {}
    for verdict in verdicts:
        grouped.setdefault((verdict.top_schema, verdict.top_name), []).append(verdict)
    return grouped
