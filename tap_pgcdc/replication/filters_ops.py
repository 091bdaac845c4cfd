"""Reading the facts `filters` judges: a table's columns, its leaves' replica identities, and
what the server makes of a row filter (a trial inside a transaction that is rolled back)."""

from __future__ import annotations

import typing as t
import uuid
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from tap_pgcdc.pg.connect import transaction
from tap_pgcdc.pg.quoting import quote_ident
from tap_pgcdc.replication.filters import Leaf, TableColumns
from tap_pgcdc.replication.publication import PUBLISH_GENERATED_SINCE

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

Connection: t.TypeAlias = psycopg2.extensions.connection

# Per selected table: its columns by attnum with attgenerated; per leaf (the table itself, or
# each leaf partition) its replica identity and that identity's columns (by name: a partition's
# attnums may differ from its parent's).
_COLUMNS_SQL = """
SELECT c.oid, n.nspname, c.relname,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       ARRAY(SELECT a.attgenerated::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = ANY(%s::oid[])
"""

_LEAVES_SQL = """
SELECT x.top, n.nspname, c.relname, c.relreplident,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_attribute a
               ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])
             WHERE i.indrelid = c.oid
               AND CASE WHEN c.relreplident = 'i' THEN i.indisreplident
                        WHEN c.relreplident = 'd' THEN i.indisprimary ELSE false END)
FROM (SELECT s.oid AS top, COALESCE(p.relid, s.oid) AS rel
      FROM unnest(%s::oid[]) AS s(oid)
      LEFT JOIN LATERAL pg_catalog.pg_partition_tree(s.oid) p ON p.isleaf) x
JOIN pg_catalog.pg_class c ON c.oid = x.rel
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
ORDER BY n.nspname, c.relname
"""


def fetch_table_columns(conn: Connection, oids: Sequence[int]) -> dict[int, TableColumns]:
    """The column facts of each table (by OID) that still exists."""
    version = conn.server_version
    with transaction(conn) as cur:
        cur.execute(_COLUMNS_SQL, (list(oids),))
        tables = cur.fetchall()
        cur.execute(_LEAVES_SQL, (list(oids),))
        leaf_rows = cur.fetchall()
    leaves: dict[int, list[Leaf]] = {}
    for top, schema, name, replident, identity in leaf_rows:
        leaves.setdefault(top, []).append(
            Leaf(
                name=f"{schema}.{name}",
                sql=f"{quote_ident(schema)}.{quote_ident(name)}",
                full=replident == "f",
                identity=frozenset(identity),
            )
        )
    found = {}
    for oid, schema, name, columns, generated in tables:
        # Before 18 no generated column can be listed; 18 lists stored ones, never virtual ones.
        unlistable = {"s", "v"} if version < PUBLISH_GENERATED_SINCE else {"v"}
        found[oid] = TableColumns(
            oid=oid,
            display=f"{schema}.{name}",
            columns=tuple(columns),
            unlistable=frozenset(
                col for col, kind in zip(columns, generated, strict=True) if kind in unlistable
            ),
            leaves=tuple(leaves.get(oid, ())),
        )
    return found


@dataclass(frozen=True, slots=True)
class Trial:
    """What the server made of a row filter: its printed form and the columns it reads, or why
    it refused it (syntax, an unknown column, a function a filter may not call...)."""

    deparsed: str = ""
    referenced: frozenset[str] = frozenset()
    error: str | None = None
    privilege: bool = False  # refused for the role's rights, not for the expression


_TRIAL_FACTS_SQL = """
SELECT pg_catalog.pg_get_expr(pr.prqual, pr.prrelid),
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_depend d
             JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_catalog.pg_publication_rel'::regclass AND d.objid = pr.oid
               AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjsubid > 0)
FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
WHERE p.pubname = %s AND pr.prrelid = %s
"""


def trial_row_filters(
    conn: Connection, filters: Mapping[int, tuple[str, str]], existing: str | None = None
) -> dict[int, Trial]:
    """Let the server parse each row filter, in a transaction that is rolled back.

    For each table OID -> (its quoted name, the expression), a publication listing that table
    with the filter is made and read back: the server checks the expression (a boolean over the
    table's columns, only what a publication filter allows) and records which columns it reads
    (pg_depend). Nothing outlives the transaction. With `existing` (the tap's publication,
    which its role may alter) that publication is set to the table, needing what managing it
    needs anyway (owning the table); else a publication is created, which also needs CREATE on
    the database.
    """
    trials: dict[int, Trial] = {}
    if not filters:
        return trials
    cur = conn.cursor()
    try:
        # READ WRITE: `--test` runs it too, in its read-only session; it is rolled back.
        cur.execute("BEGIN READ WRITE")
        for oid, (sql, expression) in filters.items():
            name = existing or f"tap_pgcdc_trial_{uuid.uuid4().hex[:12]}"
            listing = f"TABLE ONLY {sql} WHERE ({expression})"
            statement = (
                f"ALTER PUBLICATION {quote_ident(name)} SET {listing}; ALTER PUBLICATION "
                f"{quote_ident(name)} SET (publish_via_partition_root = true)"
                if existing
                else f"CREATE PUBLICATION {quote_ident(name)} FOR {listing} "
                "WITH (publish_via_partition_root = true)"
            )
            cur.execute("SAVEPOINT trial")
            try:
                cur.execute(statement)
            except psycopg2.Error as exc:
                cur.execute("ROLLBACK TO SAVEPOINT trial")
                trials[oid] = Trial(
                    error=" ".join(str(exc).split()),
                    privilege=isinstance(exc, psycopg2.errors.InsufficientPrivilege),
                )
                continue
            cur.execute(_TRIAL_FACTS_SQL, (name, oid))
            row = cur.fetchone()
            assert row is not None  # just created, with that one table
            trials[oid] = Trial(deparsed=row[0], referenced=frozenset(row[1]))
    finally:
        cur.execute("ROLLBACK")
        cur.close()
    return trials
