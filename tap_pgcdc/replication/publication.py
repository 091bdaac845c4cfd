"""The tap's publication: its facts and the pure judgement over them (no I/O here).

`publication_ops.fetch_publication` reads the facts (the selected tables as the catalog sees them
now, the publication, and for `--test` the role's rights to create or extend it);
`judge_publication` turns them into every problem that stops a run, each with its fix; then
`publication_ops.apply_publication` creates the publication or alters it to list exactly the
selection. The run acts on the first problem (`errors.raise_first`); `--test` reports them all.

The publication must exist before the slot's starting point: pgoutput looks it up at the WAL
position it decodes, so a change is published only if its table was listed when the change was
decoded.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from tap_pgcdc.errors import ConfigError, PrivilegeError, SlotError, TapPgCdcError
from tap_pgcdc.pg.catalog import RELKIND_PARTITIONED, RELKIND_TABLE
from tap_pgcdc.pg.quoting import quote_ident, quote_literal
from tap_pgcdc.replication.filters import NO_ENTRY, Entry

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

PUBLISH = ("insert", "update", "delete", "truncate")
PUBLISH_OPTION = ", ".join(PUBLISH)

# PostgreSQL 18 publishes stored generated columns where a publication asks
# (publish_generated_columns = stored); before, pgoutput never sends them.
PUBLISH_GENERATED_SINCE = 180000
GENERATED_OPTION = "publish_generated_columns = stored"

_KIND_NAMES = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}


# --- the facts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublicationInfo:
    """A publication and the tables it lists."""

    name: str
    owner: str
    all_tables: bool
    publish_via_partition_root: bool | None  # None on PG12
    pubinsert: bool
    pubupdate: bool
    pubdelete: bool
    pubtruncate: bool
    # Listed with FOR TABLE or (PG15+) through FOR TABLES IN SCHEMA; empty for FOR ALL TABLES.
    table_oids: frozenset[int]
    # pg_publication.pubgencols (PG18+): 's' stored generated columns are published, 'n' not;
    # None before 18.
    publish_generated: str | None = None


@dataclass(frozen=True, slots=True)
class Publication:
    """A publication with what altering it needs: its members by kind, and who may change it."""

    info: PublicationInfo
    oid: int
    tables: Mapping[int, str]  # oid -> quoted name of each FOR TABLE member, in catalog order
    filtered: frozenset[int]  # FOR TABLE members with a row filter or column list (PG15+)
    schemas: tuple[str, ...]  # quoted names of FOR TABLES IN SCHEMA members (PG15+)
    owned: bool  # the role owns it (or is a member of its owner), so it may alter it
    # Table oid -> the OID of the catalog row that makes it a member (pg_publication_rel, or
    # pg_publication_namespace for FOR TABLES IN SCHEMA): a new one when it is removed and
    # added again, so a gap in its membership shows (see `membership`).
    members: Mapping[int, int] = field(default_factory=dict)
    # Table oid -> its column list and row filter, for the `filtered` members (PG15+).
    entries: Mapping[int, Entry] = field(default_factory=dict)

    def entry(self, oid: int) -> Entry:
        """The member's column list and row filter (none: the whole table)."""
        return self.entries.get(oid, NO_ENTRY)


@dataclass(frozen=True, slots=True)
class Requested:
    """A table the caller selected, as discovery saw it."""

    oid: int
    schema: str
    name: str


@dataclass(frozen=True, slots=True)
class CatalogTable:
    """A selected table as the catalog sees it now (found by OID: renames do not matter)."""

    oid: int
    display: str  # schema.name as written, for messages
    sql: str  # "schema"."name", for SQL
    kind: str  # pg_class.relkind
    persistence: str  # pg_class.relpersistence: p permanent, u unlogged, t temporary
    ancestors: frozenset[int]  # partitioned tables it is a partition of, at any level
    leaves: tuple[str, ...]  # its leaf partitions, read only where PG12 cannot publish it


@dataclass(frozen=True, slots=True)
class PublicationRights:
    """What the role may do to create or extend the publication (read for `--test` only)."""

    can_create: bool  # the CREATE privilege on the database
    not_owned: tuple[tuple[int, str], ...]  # selected tables of other roles: (oid, schema.name)


@dataclass(frozen=True, slots=True)
class PublicationFacts:
    """Everything `judge_publication` and `apply_publication` need, read in one transaction."""

    name: str
    server_version: int
    user: str  # the role the tap connects as
    dbname: str  # the database the tap connects to
    requested: tuple[Requested, ...]  # in selection order
    catalog: Mapping[int, CatalogTable]  # the requested tables that still exist, by OID
    publication: Publication | None
    # None: not read (a run), so the judgement leaves privileges to the server's refusal.
    rights: PublicationRights | None = None
    # Table oid -> the column list and row filter the publication is to have for it (PG15+,
    # `filters`); a table not here is listed whole.
    entries: Mapping[int, Entry] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decoding:
    """What the log carries of generated columns: the server's version and the publication's."""

    server_version: int  # server_version_num
    publication: str  # the publication_name setting, for the fixes
    # Stored generated columns are in the log: PG18+ and publish_generated_columns = stored on
    # the publication, or the tap sets it (see `publishes_generated`).
    publishes_generated: bool


def decoding(facts: PublicationFacts, *, create: bool) -> Decoding:
    """What the log will carry of generated columns, from the publication's facts."""
    return Decoding(
        server_version=facts.server_version,
        publication=facts.name,
        publishes_generated=publishes_generated(facts, create=create),
    )


def membership(publication: Publication | None, table: CatalogTable | None) -> int | None:
    """What publishes `table` now: an id that changes whenever it stops being published.

    The OID of its pg_publication_rel row (or its schema's pg_publication_namespace row, or its
    nearest listed ancestor's), 0 for a FOR ALL TABLES publication; None if the publication
    does not publish it. Recorded beside a bookmark, it tells the next run whether the table
    stayed published since: a table removed from the publication and added again gets a new
    row, and its changes in between were never sent (see `recovery.plan_publication_recovery`).
    """
    if publication is None or table is None:
        return None
    if publication.info.all_tables:
        return 0
    for oid in (table.oid, *sorted(table.ancestors)):
        member = publication.members.get(oid)
        if member is not None:
            return member
    return None


# --- the judgement ------------------------------------------------------------------------------


def judge_publication(facts: PublicationFacts, *, create: bool) -> list[TapPgCdcError]:
    """Every problem that stops a run from using the publication, in the order a run meets them.

    With `create` (create_publication), a missing publication is to be created and an existing
    one altered to list exactly the selection (a FOR ALL TABLES publication is left as it is: it
    covers everything). Without it, nothing is to change: a missing publication or a missing
    table is a problem giving the SQL to run, and tables listed beyond the selection are
    accepted (their changes are decoded and ignored).

    Returns:
        ConfigError (a selected table is gone, a view, unlogged, or partitioned on PG12; then
        the only problem), SlotError (missing or incomplete without `create`; wrong publish
        options) and PrivilegeError (another role owns it; with `facts.rights`, the role may
        not create it or add the tables) instances, with their fixes.
    """
    selected, error = selection(facts)
    if error is not None:
        return [error]
    publication = facts.publication
    if publication is None:
        sql = create_publication_sql(facts.name, selected, facts.server_version, facts.entries)
        if not create:
            return [SlotError(_missing_message(facts, sql))]
        return _rights_problems(facts, selected, sql, creating=True)
    problems: list[TapPgCdcError] = []
    options = _publish_options_problem(publication.info, selected)
    if options is not None:
        problems.append(options)
    generated = create and needs_generated_option(publication.info, facts.server_version)
    listing = needs_change(publication, selected, facts.entries)
    if not listing and not generated:
        return problems
    if not create:
        coverage = _coverage_problem(publication, selected, facts.entries)
        if coverage is not None:
            problems.append(coverage)
        return problems
    statements = alter_publication_sql(publication, selected, facts.entries) if listing else []
    if generated:
        statements.append(generated_option_sql(publication.info.name))
    if not publication.owned:
        change = "list exactly the selected tables" if listing else "publish generated columns"
        message = _foreign_owner_message(facts, publication, statements, change)
        return [*problems, PrivilegeError(message)]
    adding = [table for table in selected if table.oid not in publication.tables]
    return problems + _rights_problems(facts, adding, " ".join(statements), creating=False)


def selection(facts: PublicationFacts) -> tuple[list[CatalogTable], ConfigError | None]:
    """The selected tables, once each in selection order, and the first that cannot be published.

    Returns:
        The tables and None, or an empty list and the ConfigError of the first unpublishable one.
    """
    selected: dict[int, CatalogTable] = {}
    for table in facts.requested:
        if table.oid in selected:
            continue
        found = facts.catalog.get(table.oid)
        if found is None:
            msg = (
                f"Table {table.schema}.{table.name} (oid {table.oid}) no longer exists: it was "
                "dropped or recreated since discovery. Fix: run discovery again and update the "
                "catalog's selection."
            )
            return [], ConfigError(msg)
        kind = found.kind
        if kind not in (RELKIND_TABLE, RELKIND_PARTITIONED):
            msg = (
                f"{found.display} is {_KIND_NAMES.get(kind, f'a relation of kind {kind!r}')}, "
                "which has no change stream. Fix: replicate it with FULL_TABLE instead of "
                "LOG_BASED."
            )
            return [], ConfigError(msg)
        if found.persistence != "p":
            msg = (
                f"{found.display} is an UNLOGGED table: its changes are not written to the WAL, "
                "so logical replication cannot see them. Fix: replicate it with FULL_TABLE, or "
                f"make it logged with ALTER TABLE {found.sql} SET LOGGED;"
            )
            return [], ConfigError(msg)
        if kind == RELKIND_PARTITIONED and facts.server_version < 130000:
            msg = (
                f"{found.display} is a partitioned table, and PostgreSQL "
                f"{facts.server_version // 10000} cannot publish partitioned tables (PostgreSQL "
                "13 can). Fix: deselect it and select its partitions instead "
                f"({', '.join(found.leaves) or 'it has none yet'}), or upgrade to PostgreSQL 13+."
            )
            return [], ConfigError(msg)
        selected[table.oid] = found
    return list(selected.values()), None


def needs_change(
    publication: Publication,
    selected: Sequence[CatalogTable],
    entries: Mapping[int, Entry] | None = None,
) -> bool:
    """Whether a managed publication must be altered to list exactly `selected` (each with its
    column list and row filter in `entries`)."""
    if publication.info.all_tables:
        return False
    wanted = {table.oid for table in selected}
    exact = set(publication.tables) == wanted and not publication.schemas
    entries = entries or {}
    return not (
        exact and all(publication.entry(oid) == entries.get(oid, NO_ENTRY) for oid in wanted)
    )


def needs_generated_option(info: PublicationInfo, version: int) -> bool:
    """Whether a managed publication must be set to publish stored generated columns (PG18+).

    Without the option, PostgreSQL 18 leaves generated columns out of the log and refuses
    UPDATEs and DELETEs of a published table whose replica identity includes one.
    """
    return version >= PUBLISH_GENERATED_SINCE and info.publish_generated != "s"


def publishes_generated(facts: PublicationFacts, *, create: bool) -> bool:
    """Whether the log the tap reads will carry the values of stored generated columns.

    Only PostgreSQL 18+ can send them, where the publication asks: a managed one
    (create_publication) is created or altered to ask, a user's must already.
    """
    if facts.server_version < PUBLISH_GENERATED_SINCE:
        return False
    if create:
        return True
    publication = facts.publication
    return publication is not None and publication.info.publish_generated == "s"


def _publish_options_problem(
    info: PublicationInfo, selected: Sequence[CatalogTable]
) -> SlotError | None:
    name = quote_ident(info.name)
    flags = (info.pubinsert, info.pubupdate, info.pubdelete, info.pubtruncate)
    unpublished = [op for op, on in zip(PUBLISH, flags, strict=True) if not on]
    if unpublished:
        published = ", ".join(op for op, on in zip(PUBLISH, flags, strict=True) if on)
        msg = (
            f"Publication {info.name!r} does not publish {', '.join(unpublished)} "
            f"(publish = {quote_literal(published)}), so the tap would miss those changes. Fix: "
            f"ALTER PUBLICATION {name} SET (publish = {quote_literal(PUBLISH_OPTION)});"
        )
        return SlotError(msg)
    # Without publish_via_partition_root a partitioned table's changes arrive under each
    # partition's name, not the selected parent's. It changes nothing for other tables, so a
    # publication shared with other consumers is only required to have it when it matters.
    parents = [table.display for table in selected if table.kind == RELKIND_PARTITIONED]
    if parents and info.publish_via_partition_root is False:
        msg = (
            f"Publication {info.name!r} has publish_via_partition_root = false, so changes to "
            f"the partitions of {', '.join(parents)} would arrive under each partition's name "
            "instead of the selected partitioned table's. Fix: ALTER PUBLICATION "
            f"{name} SET (publish_via_partition_root = true);"
        )
        return SlotError(msg)
    return None


def _coverage_problem(
    publication: Publication, selected: Sequence[CatalogTable], entries: Mapping[int, Entry]
) -> SlotError | None:
    """Without create_publication: every selected table must be published, and in full."""
    name = publication.info.name
    listed = publication.info.table_oids
    missing = [
        table for table in selected if table.oid not in listed and not table.ancestors & listed
    ]
    if missing:
        msg = (
            f"Publication {name!r} does not publish "
            f"{', '.join(table.display for table in missing)}, selected for LOG_BASED "
            "replication, and create_publication is false. Fix: add them with ALTER "
            f"PUBLICATION {quote_ident(name)} ADD TABLE {_table_list(missing)}; or set "
            "create_publication = true to let the tap manage the publication."
        )
        return SlotError(msg)
    covering = {oid for table in selected for oid in (table.oid, *table.ancestors)}
    # A member filtered as row_filters says (`entries`) is what the tap reads and snapshots.
    filtered = [
        publication.tables[oid]
        for oid in sorted(publication.filtered & covering)
        if publication.entry(oid) != entries.get(oid, NO_ENTRY)
    ]
    if filtered:
        pub = quote_ident(name)
        readd = " ".join(
            f"ALTER PUBLICATION {pub} DROP TABLE ONLY {table}; "
            f"ALTER PUBLICATION {pub} ADD TABLE ONLY {table};"
            for table in filtered
        )
        msg = (
            f"Publication {name!r} publishes {', '.join(filtered)} with a row filter (WHERE) "
            "or a column list, so the tap would miss rows or columns, and create_publication "
            f"is false. Fix: list them in full, in one transaction: BEGIN; {readd} COMMIT; or "
            "set create_publication = true to let the tap manage the publication (a row "
            "filter without a column list is accepted when row_filters sets the same "
            "expression for the stream)."
        )
        return SlotError(msg)
    return None


def _foreign_owner_message(
    facts: PublicationFacts, publication: Publication, statements: Sequence[str], change: str
) -> str:
    """Why the role cannot alter the publication (to make it `change`): another role owns it."""
    info = publication.info
    user = facts.user
    return (
        f"Publication {info.name!r} is owned by role {info.owner!r}, so {user!r} cannot "
        f"change it to {change}. Fix: have "
        f"{info.owner!r} or a superuser run ALTER PUBLICATION {quote_ident(info.name)} "
        f"OWNER TO {quote_ident(user)}; or set publication_name to a publication this user "
        "owns; or set create_publication = false and use a publication that already lists "
        f"the tables (here, {info.owner!r} would run: {' '.join(statements)})."
    )


def _rights_problems(
    facts: PublicationFacts, tables: Sequence[CatalogTable], sql: str, *, creating: bool
) -> list[TapPgCdcError]:
    """Privileges missing to create the publication (or add tables to it), if they were read."""
    rights = facts.rights
    if rights is None:
        return []
    name, user = facts.name, quote_ident(facts.user)
    problems: list[TapPgCdcError] = []
    if creating and not rights.can_create:
        msg = (
            f"Role {facts.user!r} may not create publication {name!r}: it lacks the CREATE "
            f"privilege on database {facts.dbname!r}. Fix: GRANT CREATE ON DATABASE "
            f"{quote_ident(facts.dbname)} TO {user}; or have the tables' owner or a "
            f"superuser run: {sql} and set create_publication = false."
        )
        problems.append(PrivilegeError(msg))
    oids = {table.oid for table in tables}
    not_owned = [display for oid, display in rights.not_owned if oid in oids]
    if not_owned:
        action = "create publication" if creating else "add tables to publication"
        msg = (
            f"Role {facts.user!r} may not {action} {name!r}: adding a table to a publication "
            f"needs ownership of the table, and {', '.join(not_owned)} belong to other roles. "
            "Fix: run the tap as the tables' owner (or a role that is a member of it), or have "
            f"the owner or a superuser run: {sql} and set create_publication = false."
        )
        problems.append(PrivilegeError(msg))
    return problems


def _missing_message(facts: PublicationFacts, sql: str) -> str:
    return (
        f"Publication {facts.name!r} does not exist and create_publication is false. Fix: "
        f"create it in database {facts.dbname!r} (as the owner of the tables or a "
        f"superuser) with: {sql} or set create_publication = true to let the tap "
        "create it."
    )


# --- the SQL the acts run (and the messages quote) ----------------------------------------------


def _table_list(tables: Iterable[CatalogTable], entries: Mapping[int, Entry] | None = None) -> str:
    # ONLY: without it, a table's inheritance children would join the publication too. For a
    # partitioned table it changes nothing: its partitions are covered through it.
    entries = entries or {}
    return ", ".join(
        f"ONLY {table.sql}{entries.get(table.oid, NO_ENTRY).sql()}" for table in tables
    )


def create_publication_sql(
    name: str,
    tables: Sequence[CatalogTable],
    version: int,
    entries: Mapping[int, Entry] | None = None,
) -> str:
    """The CREATE PUBLICATION statement for exactly `tables`, with the options the tap needs."""
    sql = f"CREATE PUBLICATION {quote_ident(name)}"
    if tables:
        sql += f" FOR TABLE {_table_list(tables, entries)}"
    options = f"publish = {quote_literal(PUBLISH_OPTION)}"
    if version >= 130000:
        options += ", publish_via_partition_root = true"
    if version >= PUBLISH_GENERATED_SINCE:
        options += f", {GENERATED_OPTION}"
    return f"{sql} WITH ({options});"


def generated_option_sql(name: str) -> str:
    """The statement that makes a publication send stored generated columns (PG18+)."""
    return f"ALTER PUBLICATION {quote_ident(name)} SET ({GENERATED_OPTION});"


def alter_publication_sql(
    publication: Publication,
    tables: Sequence[CatalogTable],
    entries: Mapping[int, Entry] | None = None,
) -> list[str]:
    """Statements that make the publication list exactly `tables` (with their `entries`).

    SET TABLE keeps the catalog row of a member whose column list and filter stay the same,
    and creates a new one for a member whose entry changes (see `membership`).
    """
    name = quote_ident(publication.info.name)
    if tables:
        return [f"ALTER PUBLICATION {name} SET TABLE {_table_list(tables, entries)};"]
    # SET TABLE needs at least one table: empty the publication by dropping its members.
    statements = []
    if publication.tables:
        members = ", ".join(f"ONLY {sql}" for sql in publication.tables.values())
        statements.append(f"ALTER PUBLICATION {name} DROP TABLE {members};")
    if publication.schemas:
        schemas = ", ".join(publication.schemas)
        statements.append(f"ALTER PUBLICATION {name} DROP TABLES IN SCHEMA {schemas};")
    return statements
