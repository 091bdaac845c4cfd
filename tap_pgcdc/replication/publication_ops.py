"""Reading publications from the server and changing them: the I/O half of `publication`.

`fetch_publication` reads the facts `publication.judge_publication` judges, in one transaction;
`apply_publication` acts on a clean verdict (create, or alter to list exactly the selection).
Every function ends the transaction it uses (commit on success, rollback on error).
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from tap_pgcdc.errors import PrivilegeError, SlotError, raise_first
from tap_pgcdc.pg.catalog import RELKIND_PARTITIONED
from tap_pgcdc.pg.connect import transaction
from tap_pgcdc.pg.quoting import quote_ident
from tap_pgcdc.replication.filters import Entry
from tap_pgcdc.replication.publication import (
    PUBLISH_GENERATED_SINCE,
    CatalogTable,
    Decoding,
    Publication,
    PublicationFacts,
    PublicationInfo,
    PublicationRights,
    Requested,
    alter_publication_sql,
    create_publication_sql,
    decoding,
    generated_option_sql,
    judge_publication,
    needs_change,
    needs_generated_option,
    selection,
)

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from tap_pgcdc.pg.catalog import TableInfo

Connection: t.TypeAlias = psycopg2.extensions.connection

logger = logging.getLogger(__name__)


def _publication_sql(version: int) -> str:
    # The last column: may this role alter it (it owns it or is a member of its owner)?
    viaroot = "p.pubviaroot" if version >= 130000 else "NULL::boolean"
    gencols = "p.pubgencols::text" if version >= PUBLISH_GENERATED_SINCE else "NULL::text"
    return (
        "SELECT p.oid, p.pubname, pg_catalog.pg_get_userbyid(p.pubowner), p.puballtables, "
        f"{viaroot}, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, "
        f"pg_catalog.pg_has_role(p.pubowner, 'USAGE'), {gencols} "
        "FROM pg_catalog.pg_publication p WHERE p.pubname = %s"
    )


def _publication_tables_sql(version: int) -> str:
    if version >= 150000:
        filtered = "pr.prqual IS NOT NULL OR pr.prattrs IS NOT NULL"
        # The column list by name in attnum order (NULL: every column), the filter as printed.
        entry = (
            "CASE WHEN pr.prattrs IS NULL THEN NULL ELSE ARRAY(SELECT a.attname::text FROM "
            "pg_catalog.pg_attribute a WHERE a.attrelid = pr.prrelid AND "
            "a.attnum = ANY(pr.prattrs::int2[]) ORDER BY a.attnum) END, "
            "pg_catalog.pg_get_expr(pr.prqual, pr.prrelid)"
        )
    else:
        filtered, entry = "false", "NULL::text[], NULL::text"
    return (
        f"SELECT c.oid, n.nspname, c.relname, {filtered}, pr.oid, {entry} "
        "FROM pg_catalog.pg_publication_rel pr "
        "JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE pr.prpubid = %s"
    )


_PUBLICATION_SCHEMAS_SQL = """
SELECT pn.oid, n.nspname,
       ARRAY(SELECT c.oid FROM pg_catalog.pg_class c
             WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p')
FROM pg_catalog.pg_publication_namespace pn
JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid
WHERE pn.pnpubid = %s
"""


_SELECTED_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence,
       ARRAY(SELECT a.relid::oid FROM pg_catalog.pg_partition_ancestors(c.oid) a
             WHERE a.relid <> c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = ANY(%s::oid[])
"""

_LEAF_PARTITIONS_SQL = """
SELECT n.nspname || '.' || c.relname
FROM pg_catalog.pg_partition_tree(%s::oid) p
JOIN pg_catalog.pg_class c ON c.oid = p.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE p.isleaf
ORDER BY 1
"""

_CAN_CREATE_SQL = (
    "SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')"
)

# Ordered by name as the server sorts it, so that messages list them as they always have.
_NOT_OWNED_SQL = """
SELECT c.oid, n.nspname || '.' || c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = ANY(%s::oid[]) AND NOT pg_catalog.pg_has_role(c.relowner, 'USAGE')
ORDER BY 2
"""


def fetch_publication(
    conn: Connection,
    name: str,
    tables: Sequence[TableInfo],
    *,
    rights: bool = False,
    entries: Mapping[int, Entry] | None = None,
) -> PublicationFacts:
    """Read the facts about publication `name` and the selected `tables`.

    Args:
        conn: A connection with no transaction of its own in progress.
        name: The publication_name setting.
        tables: The tables selected for LOG_BASED replication.
        rights: Also read the role's rights to create or extend the publication (for `--test`;
            a run learns them from the server's refusal, with the server's own words).
        entries: The column list and row filter each table is to be listed with (`filters`).
    """
    version = conn.server_version
    oids = [table.oid for table in tables]
    with transaction(conn) as cur:
        cur.execute(_SELECTED_SQL, (oids,))
        rows = cur.fetchall()
        catalog: dict[int, CatalogTable] = {}
        for oid, schema, relname, kind, persistence, ancestors in rows:
            leaves: tuple[str, ...] = ()
            if kind == RELKIND_PARTITIONED and version < 130000:
                cur.execute(_LEAF_PARTITIONS_SQL, (oid,))
                leaves = tuple(leaf for (leaf,) in cur.fetchall())
            catalog[oid] = CatalogTable(
                oid=oid,
                display=f"{schema}.{relname}",
                sql=f"{quote_ident(schema)}.{quote_ident(relname)}",
                kind=kind,
                persistence=persistence,
                ancestors=frozenset(ancestors),
                leaves=leaves,
            )
        publication = _load_publication(cur, name, version)
        found_rights = None
        if rights:
            cur.execute(_CAN_CREATE_SQL)
            row = cur.fetchone()
            assert row is not None  # a SELECT without FROM always returns its row
            cur.execute(_NOT_OWNED_SQL, ([oid for oid in oids if oid in catalog],))
            not_owned = tuple((oid, display) for oid, display in cur.fetchall())
            found_rights = PublicationRights(can_create=row[0], not_owned=not_owned)
    return PublicationFacts(
        name=name,
        server_version=version,
        user=conn.info.user,
        dbname=conn.info.dbname,
        requested=tuple(Requested(table.oid, table.schema, table.name) for table in tables),
        catalog=catalog,
        publication=publication,
        rights=found_rights,
        entries=dict(entries or {}),
    )


def fetch_decoding(conn: Connection, name: str, *, create: bool) -> Decoding:
    """What the log read through publication `name` will carry of generated columns."""
    return decoding(fetch_publication(conn, name, ()), create=create)


def _load_publication(
    cur: psycopg2.extensions.cursor, name: str, version: int
) -> Publication | None:
    cur.execute(_publication_sql(version), (name,))
    row = cur.fetchone()
    if row is None:
        return None
    oid = row[0]
    cur.execute(_publication_tables_sql(version), (oid,))
    members = cur.fetchall()
    schema_rows: list[tuple[int, str, list[int]]] = []
    if version >= 150000:
        cur.execute(_PUBLICATION_SCHEMAS_SQL, (oid,))
        schema_rows = cur.fetchall()
    tables = {
        relid: f"{quote_ident(schema)}.{quote_ident(table)}" for relid, schema, table, *_ in members
    }
    table_oids = set(tables)
    membership: dict[int, int] = {}
    for member_oid, _, schema_oids in schema_rows:
        table_oids.update(schema_oids)
        membership.update(dict.fromkeys(schema_oids, member_oid))
    # Listed by name wins over listed through its schema (that row outlives the schema's).
    membership.update({relid: member_oid for relid, _, _, _, member_oid, *_ in members})
    info = PublicationInfo(
        name=row[1],
        owner=row[2],
        all_tables=row[3],
        publish_via_partition_root=row[4],
        pubinsert=row[5],
        pubupdate=row[6],
        pubdelete=row[7],
        pubtruncate=row[8],
        table_oids=frozenset(table_oids),
        publish_generated=row[10],
    )
    return Publication(
        info=info,
        oid=oid,
        tables=tables,
        filtered=frozenset(relid for relid, _, _, filtered, *_ in members if filtered),
        schemas=tuple(quote_ident(schema) for _, schema, _ in schema_rows),
        owned=row[9],
        members=membership,
        entries={
            relid: Entry(columns=None if columns is None else tuple(columns), where=where)
            for relid, _, _, filtered, _, columns, where in members
            if filtered
        },
    )


def get_publication(conn: Connection, name: str) -> PublicationInfo | None:
    """The publication called `name`, or None if there is none."""
    with transaction(conn) as cur:
        publication = _load_publication(cur, name, conn.server_version)
    return publication.info if publication else None


# --- the acts -----------------------------------------------------------------------------------


def apply_publication(
    conn: Connection, facts: PublicationFacts, *, create: bool
) -> PublicationInfo:
    """Make the publication what judged facts call for; the publication as it then is.

    Call it only when `judge_publication(facts, create=create)` found nothing. A missing
    publication is created; with `create`, one that lists other tables than the selection is
    altered to list exactly it. Without `create` nothing changes.

    Raises:
        PrivilegeError: The server refused to create or alter it.
        SlotError: It disappeared right after it was changed (another process dropped it), or
            another run created it meanwhile with options the tap cannot use.
    """
    if facts.publication is None:
        create_publication(conn, facts)
        facts = _refetch(conn, facts, "created")
        # Another run may have created it between our look and our create: judge theirs.
        raise_first(judge_publication(facts, create=create))
    publication = facts.publication
    assert publication is not None  # judged: it exists, or was just created
    selected, _ = selection(facts)
    if create and needs_change(publication, selected, facts.entries):
        alter_publication(conn, facts)
        facts = _refetch(conn, facts, "altered")
        publication = facts.publication
        assert publication is not None  # _refetch raises when it is gone
    if create and needs_generated_option(publication.info, facts.server_version):
        publish_generated_columns(conn, facts)
        publication = _refetch(conn, facts, "altered").publication
        assert publication is not None  # _refetch raises when it is gone
    return publication.info


def create_publication(conn: Connection, facts: PublicationFacts) -> None:
    """Create the publication for exactly the selected tables (one created meanwhile is kept).

    Raises:
        PrivilegeError: The role lacks the CREATE privilege or does not own every table.
    """
    selected, _ = selection(facts)
    sql = create_publication_sql(facts.name, selected, facts.server_version, facts.entries)
    try:
        with transaction(conn) as cur:
            cur.execute(sql)
    except psycopg2.errors.DuplicateObject:
        pass  # another run created it between our look and our create: the caller checks theirs
    except psycopg2.errors.InsufficientPrivilege as exc:
        msg = (
            f"Cannot create publication {facts.name!r}: {str(exc).strip()}. Creating a "
            "publication needs the CREATE privilege on the database (GRANT CREATE ON DATABASE "
            f"{quote_ident(facts.dbname)} TO {quote_ident(facts.user)};) and ownership "
            "of every table it lists. Fix: grant that, or have the tables' owner or a superuser "
            f"run: {sql} and set create_publication = false."
        )
        raise PrivilegeError(msg) from None
    else:
        logger.info("Created publication %s", facts.name)


def alter_publication(conn: Connection, facts: PublicationFacts) -> None:
    """Alter the (existing) publication to list exactly the selected tables.

    Raises:
        PrivilegeError: The role does not own a table it would add.
    """
    publication = facts.publication
    assert publication is not None  # only an existing publication is altered
    selected, _ = selection(facts)
    statements = alter_publication_sql(publication, selected, facts.entries)
    try:
        with transaction(conn) as cur:
            for statement in statements:
                cur.execute(statement)
    except psycopg2.errors.InsufficientPrivilege as exc:
        msg = (
            f"Cannot change publication {facts.name!r} to list exactly the selected tables: "
            f"{str(exc).strip()}. Adding a table to a publication needs ownership of the table. "
            "Fix: run the tap as the tables' owner, or have the owner or a superuser run "
            f"{' '.join(statements)} and set create_publication = false."
        )
        raise PrivilegeError(msg) from None
    added = [table.display for table in selected if table.oid not in publication.tables]
    logger.info(
        "Altered publication %s to list exactly the selected tables (newly listed: %s)",
        facts.name,
        ", ".join(added) or "none",
    )


def publish_generated_columns(conn: Connection, facts: PublicationFacts) -> None:
    """Make the (existing) publication send stored generated columns (PostgreSQL 18+).

    pgoutput reads the option as the catalog was when each change was made: changes already
    in the slot keep the old setting, and their generated values are read by key (see
    `output.changes.StreamSink.fill_missing`).

    Raises:
        PrivilegeError: The role may not alter it.
    """
    sql = generated_option_sql(facts.name)
    try:
        with transaction(conn) as cur:
            cur.execute(sql)
    except psycopg2.errors.InsufficientPrivilege as exc:
        msg = (
            f"Cannot make publication {facts.name!r} publish generated columns: "
            f"{str(exc).strip()}. Fix: run the tap as the publication's owner, or have the owner "
            f"or a superuser run {sql}"
        )
        raise PrivilegeError(msg) from None
    logger.info("Altered publication %s to publish stored generated columns", facts.name)


def _refetch(conn: Connection, facts: PublicationFacts, done: str) -> PublicationFacts:
    """The facts again after an act; the publication must still be there."""
    with transaction(conn) as cur:
        publication = _load_publication(cur, facts.name, facts.server_version)
    if publication is None:
        msg = (
            f"Publication {facts.name!r} disappeared right after it was {done}: another process "
            "dropped it. Fix: make sure only one tap-pgcdc instance uses this publication_name."
        )
        raise SlotError(msg)
    return dataclasses.replace(facts, publication=publication)
