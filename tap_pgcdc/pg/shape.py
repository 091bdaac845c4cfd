"""A table's shape: what the log cannot show about its existing rows, read from the catalog.

The log carries row changes. Some DDL changes rows without a row change: a column renamed, a
column added with a default or a generated value, a type changed by a rewrite, the table dropped
and created again, a partition truncated, attached or detached. A bookmark records the shape of
its table (`TableShape.record`); the next look at the catalog compares it with the live one
(`tap_pgcdc.recovery.plan_shape_recovery`), which tells whether the stream must be snapshotted
again. What is recorded, per table:

- its OID (a table dropped and created again under the same name has another);
- its columns by attnum (a renamed column keeps its attnum, an added one gets a new one);
- the files its rows live in: the table's relfilenode, or each leaf partition's, with the
  transactions that attached the leaf (its pg_inherits rows' xmin, up to the table), since
  TRUNCATE of a single partition is not in the log when partitions publish via their root.

Plain SQL over psycopg2: no Singer imports.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

import psycopg2
import psycopg2.errors

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import psycopg2.extensions


@dataclass(frozen=True, slots=True)
class ColumnShape:
    """One column as the shape knows it."""

    attnum: int
    name: str
    type_oid: int
    typmod: int
    # Live only (not recorded): whether rows that existed when the column was added took a
    # value from it (a default, a generated expression, an identity sequence).
    fills_existing: bool = False


@dataclass(frozen=True, slots=True)
class LeafFile:
    """Where some of the table's rows live: the table itself, or one leaf partition."""

    oid: int
    name: str  # schema-qualified, quoted: for messages and queries
    relfilenode: int  # a new one after TRUNCATE, VACUUM FULL, CLUSTER or a rewriting ALTER
    attached: str  # the xmins of the pg_inherits rows from the leaf up ("" for a plain table)


@dataclass(frozen=True, slots=True)
class TableShape:
    """The facts about a table's rows that a bookmark keeps (see the module docstring)."""

    oid: int
    columns: tuple[ColumnShape, ...]
    files: tuple[LeafFile, ...]
    partitioned: bool = False

    def record(self) -> dict[str, t.Any]:
        """The JSON the bookmark keeps (state.SHAPE_KEY)."""
        return {
            "oid": self.oid,
            "columns": [[c.attnum, c.name, c.type_oid, c.typmod] for c in self.columns],
            "files": [[f.oid, f.name, f.relfilenode, f.attached] for f in self.files],
            **({"partitioned": True} if self.partitioned else {}),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, t.Any]) -> TableShape:
        """The shape a bookmark recorded (checked by `state.check_bookmark`)."""
        return cls(
            oid=int(record["oid"]),
            columns=tuple(
                ColumnShape(int(a), str(n), int(o), int(m)) for a, n, o, m in record["columns"]
            ),
            files=tuple(LeafFile(int(o), str(n), int(f), str(x)) for o, n, f, x in record["files"]),
            partitioned=bool(record.get("partitioned", False)),
        )


_COLUMNS_SQL = """
SELECT a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod,
       a.atthasdef OR a.atthasmissing OR a.attgenerated <> '' OR a.attidentity <> ''
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

# Each table's files: itself (a plain table), or its leaf partitions with the xmins of the
# pg_inherits rows on the way up to it (a leaf detached and attached again has new ones).
_FILES_SQL = """
SELECT c.oid, c.relkind, leaf.oid,
       pg_catalog.quote_ident(ln.nspname) || '.' || pg_catalog.quote_ident(leaf.relname),
       leaf.relfilenode,
       CASE WHEN c.relkind = 'p' THEN (
           SELECT pg_catalog.string_agg(i.xmin::text, '.' ORDER BY i.inhrelid)
           FROM pg_catalog.pg_inherits i
           WHERE i.inhrelid IN (SELECT pg_catalog.pg_partition_ancestors(leaf.oid))
             AND i.inhrelid <> c.oid) ELSE '' END
FROM pg_catalog.pg_class c
CROSS JOIN LATERAL (
    SELECT c.oid AS relid WHERE c.relkind <> 'p'
    UNION ALL
    SELECT t.relid FROM pg_catalog.pg_partition_tree(c.oid) t WHERE t.isleaf AND c.relkind = 'p'
) AS files
JOIN pg_catalog.pg_class leaf ON leaf.oid = files.relid
JOIN pg_catalog.pg_namespace ln ON ln.oid = leaf.relnamespace
WHERE c.oid = ANY(%s)
ORDER BY c.oid, leaf.oid
"""


def current_oids(conn: psycopg2.extensions.connection, tables: Mapping[str, str]) -> dict[str, int]:
    """The OID each quoted table name stands for now, by key (a table gone is left out)."""
    keys = list(tables)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT n.i, pg_catalog.to_regclass(n.name)::oid "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS n(name, i)",
            ([tables[k] for k in keys],),
        )
        rows = cur.fetchall()
    return {keys[int(i) - 1]: int(oid) for i, oid in rows if oid is not None}


def fetch_shapes(
    conn: psycopg2.extensions.connection, oids: Iterable[int]
) -> dict[int, TableShape]:
    """The live shape of each table in `oids` (by OID; a table gone since is absent)."""
    wanted = sorted(set(oids))
    if not wanted:
        return {}
    with conn.cursor() as cur:
        cur.execute(_COLUMNS_SQL, (wanted,))
        columns = cur.fetchall()
        cur.execute(_FILES_SQL, (wanted,))
        files = cur.fetchall()
    by_table: dict[int, list[ColumnShape]] = {}
    for relid, attnum, name, type_oid, typmod, fills in columns:
        by_table.setdefault(relid, []).append(ColumnShape(attnum, name, type_oid, typmod, fills))
    leaves: dict[int, list[LeafFile]] = {}
    kinds: dict[int, str] = {}
    for relid, kind, leaf, name, relfilenode, attached in files:
        kinds[relid] = kind
        leaves.setdefault(relid, []).append(LeafFile(leaf, name, int(relfilenode), attached or ""))
    return {
        oid: TableShape(
            oid=oid,
            columns=tuple(by_table.get(oid, ())),
            files=tuple(leaves.get(oid, ())),
            partitioned=kinds.get(oid) == "p",
        )
        for oid in wanted
        if oid in kinds
    }


# Whether a leaf holds a row no younger than the newest attachment on its way up to the table:
# a row that was there before the leaf became part of the table (or written in the transaction
# that attached it, before or after: taken as before), so its insert may not be in the log as a
# change of the table. age() counts back from now, so it is safe across xid wraparound for
# rows younger than two billion transactions; a negative age is an older, wrapped xid.
_PREDATES_SQL = """
SELECT EXISTS (
    SELECT 1 FROM {rows}
    WHERE pg_catalog.age(xmin) >= (
        SELECT pg_catalog.min(pg_catalog.age(i.xmin)) FROM pg_catalog.pg_inherits i
        WHERE i.inhrelid IN (SELECT pg_catalog.pg_partition_ancestors(%(leaf)s::oid))
          AND i.inhrelid <> %(table)s::oid)
       OR pg_catalog.age(xmin) < 0
)
"""


def rows_predate_attach(
    conn: psycopg2.extensions.connection, table: int, table_name: str, leaf: LeafFile
) -> bool:
    """Whether the leaf partition holds rows it had before it was attached to the table.

    CREATE TABLE ... PARTITION OF makes an empty leaf whose rows all arrive through the log;
    ATTACH PARTITION of a table that has rows brings rows the log never showed as the table's.
    Read from the leaf itself, or through the table for a role that may only read the table.
    """
    params = {"leaf": leaf.oid, "table": table}
    try:
        with conn.cursor() as cur:
            cur.execute(_PREDATES_SQL.format(rows=leaf.name), params)
            row = cur.fetchone()
    except psycopg2.errors.InsufficientPrivilege:
        if not conn.autocommit:
            conn.rollback()
        rows = f"{table_name} WHERE tableoid = {int(leaf.oid)}"
        with conn.cursor() as cur:
            cur.execute(_PREDATES_SQL.format(rows=f"(SELECT xmin FROM {rows}) AS r"), params)
            row = cur.fetchone()
    return bool(row and row[0])
