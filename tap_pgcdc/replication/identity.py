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
from tap_pgcdc.replication.publication import PUBLISH_GENERATED_SINCE

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from tap_pgcdc.pg.catalog import TableInfo
    from tap_pgcdc.replication.publication import Decoding

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
    stored_generated: tuple[str, ...] = ()  # its GENERATED ... STORED columns, by attnum
    virtual_generated: tuple[str, ...] = ()  # its GENERATED ... VIRTUAL columns (PG18+)
    # The generated columns among those the tap keys rows by: the identity index's under
    # REPLICA IDENTITY USING INDEX, else the primary key's (virtual ones cannot be indexed).
    generated_key: tuple[str, ...] = ()


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
       c.relpersistence,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = 's' ORDER BY a.attnum),
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = 'v' ORDER BY a.attnum),
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_attribute a
               ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])
             WHERE i.indrelid = c.oid AND a.attgenerated <> ''
               AND CASE WHEN c.relreplident = 'i' THEN i.indisreplident ELSE i.indisprimary END
             ORDER BY a.attnum)
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
    return tuple(ReplicaIdentity(*row[:8], *(tuple(names) for names in row[8:])) for row in rows)


def judge_replica_identity(
    identities: Sequence[ReplicaIdentity], decoding: Decoding
) -> list[Uncapturable]:
    """One verdict per table (or partition) whose changes the log cannot carry or identify.

    An unlogged table writes nothing to the WAL, so logical decoding never sees its changes. A
    table without a usable replica identity cannot even be updated or deleted from while a
    publication that publishes those changes lists it. Generated columns the log does not
    carry (see `_generated`) are values no record may lack. The caller decides to fall back
    to FULL_TABLE, warn or fail.
    """
    found = []
    for rel in identities:
        sql = f"ALTER TABLE {quote_ident(rel.schema)}.{quote_ident(rel.name)}"
        if rel.persistence == "u":
            why = "it is UNLOGGED"
            consequence = "none of its changes reach the WAL"
            fix = f"{sql} SET LOGGED"
        elif rel.replident == "n":
            why, consequence = "it has REPLICA IDENTITY NOTHING", _UNIDENTIFIED
            fix = f"{sql} REPLICA IDENTITY FULL (or DEFAULT, if it has a primary key)"
        elif rel.replident == "d" and not rel.has_primary_key:
            why, consequence = "it has no primary key and REPLICA IDENTITY DEFAULT", _UNIDENTIFIED
            fix = f"{sql} REPLICA IDENTITY FULL, or add a primary key"
        elif rel.replident == "i" and not rel.has_identity_index:
            why = "its REPLICA IDENTITY USING INDEX names an index that was dropped"
            consequence = _UNIDENTIFIED
            fix = f"{sql} REPLICA IDENTITY FULL (or DEFAULT, if it has a primary key)"
        else:
            generated = _generated(rel, decoding, sql)
            if generated is None:
                continue
            why, consequence, fix = generated
        found.append(
            Uncapturable(rel.top_schema, rel.top_name, rel.schema, rel.name, why, consequence, fix)
        )
    return found


_UNIDENTIFIED = (
    "its UPDATEs and DELETEs cannot be identified (Postgres refuses them while the table is "
    "published)"
)


def _generated(rel: ReplicaIdentity, decoding: Decoding, sql: str) -> tuple[str, str, str] | None:
    """Why generated columns keep the log from carrying the table's changes, the consequence, fix.

    Before PostgreSQL 18 the log never carries generated columns: the tap reads their values by
    key, which a table without a primary key (REPLICA IDENTITY FULL) does not have, and a key
    that is itself generated is missing from every change. PostgreSQL 18 sends stored ones
    where the publication asks, and refuses UPDATE and DELETE of a published table whose replica
    identity (every column, under FULL) includes a generated column the publication does not
    publish: virtual ones never are.
    """
    if decoding.server_version >= PUBLISH_GENERATED_SINCE:
        if rel.replident == "f" and rel.virtual_generated:
            why = (
                f"it has REPLICA IDENTITY FULL and the virtual generated "
                f"{_columns(rel.virtual_generated)}, which no publication publishes"
            )
            fix = f"{sql} REPLICA IDENTITY DEFAULT"
            if not rel.has_primary_key:
                fix = f"add a primary key, then {fix}"
            return why, _UNIDENTIFIED, fix
        unpublished = rel.stored_generated if rel.replident == "f" else rel.generated_key
        if not unpublished or decoding.publishes_generated:
            return None
        why = (
            f"its replica identity includes the generated {_columns(unpublished)}, which "
            f"publication {decoding.publication!r} does not publish"
        )
        fix = (
            f"ALTER PUBLICATION {quote_ident(decoding.publication)} SET "
            "(publish_generated_columns = stored), or set create_publication = true"
        )
        return why, _UNIDENTIFIED, fix
    never = (
        f"PostgreSQL {decoding.server_version // 10000} never writes generated columns to the log"
    )
    later = "or use PostgreSQL 18, whose publish_generated_columns = stored sends them"
    if rel.generated_key:
        why = f"its key is the generated {_columns(rel.generated_key)}, and {never}"
        consequence = "its changes, deletes included, would reach the target without their key"
        fix = (
            "key it by columns that are not generated (a primary key, or REPLICA IDENTITY USING "
            f"INDEX on a unique index of them), {later}"
        )
        return why, consequence, fix
    if rel.replident == "f" and not rel.has_primary_key and rel.stored_generated:
        why = (
            f"it has the generated {_columns(rel.stored_generated)} and no primary key to read "
            f"their values by, and {never}"
        )
        return why, "its records would lack those values", f"add a primary key, {later}"
    return None


def _columns(names: Sequence[str]) -> str:
    """`column a` or `columns a, b`."""
    return f"column{'s' if len(names) > 1 else ''} {', '.join(names)}"


def by_table(verdicts: Sequence[Uncapturable]) -> dict[tuple[str, str], list[Uncapturable]]:
    """The verdicts of each selected table (a partitioned table's: those of its partitions)."""
    grouped: dict[tuple[str, str], list[Uncapturable]] = {}
    for verdict in verdicts:
        grouped.setdefault((verdict.top_schema, verdict.top_name), []).append(verdict)
    return grouped
