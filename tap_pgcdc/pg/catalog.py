"""The catalog as the tap reads it: tables, their columns, keys and resolved types.

Discovery reads `pg_catalog` directly rather than through SQLAlchemy reflection: we need things
reflection does not give (partition parents, typmods, domains resolved to their base types,
replica identity, row estimates), and the same type resolution serves the log reader when a
Relation message announces a changed table. Plain SQL over psycopg2: no Singer imports.
"""

from __future__ import annotations

import fnmatch
import typing as t
from dataclasses import dataclass

import psycopg2.extensions

from tap_pgcdc import typemap
from tap_pgcdc.pg.quoting import quote_ident
from tap_pgcdc.typemap import PgType

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

RELKIND_TABLE = "r"
RELKIND_PARTITIONED = "p"
RELKIND_VIEW = "v"
RELKIND_MATVIEW = "m"

# PostgreSQL 12 cannot publish a partitioned table (publish_via_partition_root came with 13):
# there its partitions are the LOG_BASED streams, and the parent only a FULL_TABLE one.
PUBLISH_PARTITION_ROOT_SINCE = 130000


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """One column of a table as the catalog describes it."""

    name: str
    attnum: int
    type: PgType
    typmod: int
    not_null: bool
    generated: bool  # stored generated columns: pgoutput before PG 18 does not send them
    sql_type: str  # format_type(): schema-qualified where needed, usable in casts
    dims: int = 0  # pg_attribute.attndims: the array dimensions declared (integer[][]: 2)


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A table, partitioned parent, view or materialized view."""

    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind
    columns: tuple[ColumnInfo, ...]
    # The columns the log identifies a row by, in key order: the replica identity index's under
    # REPLICA IDENTITY USING INDEX, else the primary key's (none for a table without one).
    key: tuple[str, ...]
    row_estimate: int
    replica_identity: str  # pg_class.relreplident: d default, n nothing, f full, i index
    primary_key: tuple[str, ...] = ()  # the primary key's columns, in key order
    extension: str | None = None  # the extension that owns it (PostGIS' spatial_ref_sys), if any

    @property
    def stream_name(self) -> str:
        """The Singer stream id: `schema-name`, the schema escaped (see `stream_id`)."""
        return stream_id(self.schema, self.name)

    @property
    def is_view(self) -> bool:
        """Whether it is a view or materialized view (no change stream, FULL_TABLE only)."""
        return self.kind in (RELKIND_VIEW, RELKIND_MATVIEW)

    @property
    def quoted_name(self) -> str:
        """`"schema"."name"`, for SQL."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    def column(self, name: str) -> ColumnInfo:
        """The column called `name`.

        Raises:
            KeyError: The table has no such column.
        """
        for col in self.columns:
            if col.name == name:
                return col
        msg = f"{self.schema}.{self.name} has no column {name!r}"
        raise KeyError(msg)


def stream_id(schema: str, name: str) -> str:
    """The Singer stream id of a table: `schema-name`, unique and reversible.

    The first unescaped `-` separates the schema from the name, so `%` and `-` in the schema are
    written `%25` and `%2D`; the name is kept as is. `"x-y".z` is `x%2Dy-z`, `x."y-z"` is
    `x-y-z`. Ids of schemas without `-` or `%` are the plain `schema-name` of earlier versions.
    """
    return f"{schema.replace('%', '%25').replace('-', '%2D')}-{name}"


def split_stream_id(stream: str) -> tuple[str, str]:
    """The schema and the name a stream id stands for (the inverse of `stream_id`).

    Raises:
        ValueError: `stream` has no `-`.
    """
    schema, sep, name = stream.partition("-")
    if not sep:
        msg = f"stream id {stream!r} has no '-' between schema and table"
        raise ValueError(msg)
    return schema.replace("%2D", "-").replace("%25", "%"), name


_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.reltuples::bigint, c.relreplident,
       (SELECT e.extname FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
        LIMIT 1)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm')
  AND (NOT c.relispartition OR %(with_partitions)s)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
  AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
  AND (%(oids)s::oid[] IS NULL OR c.oid = ANY(%(oids)s::oid[]))
ORDER BY n.nspname, c.relname
"""

_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, a.attnum, a.atttypid, a.atttypmod, a.attnotnull,
       a.attgenerated <> '', pg_catalog.format_type(a.atttypid, a.atttypmod), a.attndims
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_PKEY_SQL = """
SELECT i.indrelid, array_agg(a.attname ORDER BY k.ord)
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indisprimary AND i.indrelid = ANY(%s)
GROUP BY i.indrelid
"""

# The index REPLICA IDENTITY USING INDEX names (if it still exists): what the log identifies by.
_IDENTITY_INDEX_SQL = _PKEY_SQL.replace("i.indisprimary", "i.indisreplident")

# Types are resolved recursively: arrays to their element, domains to their base type.
_TYPES_SQL = """
WITH RECURSIVE wanted(oid) AS (
    SELECT unnest(%s::oid[])
  UNION
    SELECT x.oid
    FROM wanted w
    JOIN pg_catalog.pg_type t ON t.oid = w.oid
    CROSS JOIN LATERAL (VALUES
        (CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0 END),
        (t.typbasetype)) AS x(oid)
    WHERE x.oid <> 0
)
SELECT t.oid, t.typname, t.typtype, t.typcategory,
       CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0 END,
       t.typbasetype, t.typdelim,
       CASE WHEN t.typtype = 'e' THEN ARRAY(
           SELECT e.enumlabel::text FROM pg_catalog.pg_enum e
           WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END
FROM pg_catalog.pg_type t
WHERE t.oid IN (SELECT oid FROM wanted)
"""


def resolve_types(conn: psycopg2.extensions.connection, oids: Iterable[int]) -> dict[int, PgType]:
    """Resolve type OIDs (with their element and base types) to PgType objects."""
    wanted = sorted(set(oids))
    if not wanted:
        return {}
    with conn.cursor() as cur:
        cur.execute(_TYPES_SQL, (wanted,))
        rows = {row[0]: row for row in cur.fetchall()}
    resolved: dict[int, PgType] = {}

    def build(oid: int) -> PgType:
        if oid in resolved:
            return resolved[oid]
        row = rows.get(oid)
        if row is None:  # dropped concurrently or invisible: treat as text
            return typemap.BUILTIN_TYPES.get(oid) or PgType(oid=oid, name="unknown")
        _, name, kind, category, elem, base, _delim, labels = row
        element = build(elem) if elem else None
        pg_type = PgType(
            oid=oid,
            name=name,
            kind=kind,
            category=category,
            element=element,
            base=build(base) if base else None,
            delimiter=rows[elem][6] if elem and elem in rows else ",",
            enum_labels=tuple(labels or ()),
        )
        resolved[oid] = pg_type
        return pg_type

    for oid in wanted:
        build(oid)
    return resolved


def load_table(conn: psycopg2.extensions.connection, oid: int) -> TableInfo | None:
    """The table with this OID as the catalog describes it now (None: gone or unreadable).

    Unlike `load_tables`, partitions are found too: a Relation message may name one.
    """
    found = load_tables(conn, oids=[oid], with_partitions=True)
    return found[0] if found else None


def load_tables(
    conn: psycopg2.extensions.connection,
    *,
    filter_schemas: Sequence[str] | None = None,
    filter_tables: Sequence[str] | None = None,
    oids: Sequence[int] | None = None,
    with_partitions: bool | None = None,
) -> list[TableInfo]:
    """Read tables (and views) the user may SELECT, honouring the schema/table filters.

    Partitions are streams of their own only on PostgreSQL 12 (`with_partitions`: None).
    """
    if with_partitions is None:
        with_partitions = conn.server_version < PUBLISH_PARTITION_ROOT_SINCE
    with conn.cursor() as cur:
        cur.execute(
            _TABLES_SQL,
            {"with_partitions": with_partitions, "oids": None if oids is None else list(oids)},
        )
        tables = cur.fetchall()
    if filter_schemas:
        schemas = set(filter_schemas)
        tables = [row for row in tables if row[1] in schemas]
    if filter_tables:
        tables = [
            row
            for row in tables
            if any(fnmatch.fnmatchcase(f"{row[1]}.{row[2]}", pat) for pat in filter_tables)
        ]
    if not tables:
        return []
    table_oids = [row[0] for row in tables]
    with conn.cursor() as cur:
        cur.execute(_COLUMNS_SQL, (table_oids,))
        columns = cur.fetchall()
        cur.execute(_PKEY_SQL, (table_oids,))
        keys = {row[0]: tuple(row[1]) for row in cur.fetchall()}
        cur.execute(_IDENTITY_INDEX_SQL, (table_oids,))
        identity_keys = {row[0]: tuple(row[1]) for row in cur.fetchall()}
    types = resolve_types(conn, (row[3] for row in columns))
    by_table: dict[int, list[ColumnInfo]] = {}
    for relid, name, attnum, typid, typmod, not_null, generated, sql_type, dims in columns:
        by_table.setdefault(relid, []).append(
            ColumnInfo(
                name=name,
                attnum=attnum,
                type=types[typid],
                typmod=typmod,
                not_null=not_null,
                generated=generated,
                sql_type=sql_type,
                dims=dims,
            )
        )
    return [
        TableInfo(
            oid=oid,
            schema=schema,
            name=name,
            kind=kind,
            columns=tuple(by_table.get(oid, ())),
            key=(identity_keys.get(oid) if replident == "i" else None) or keys.get(oid, ()),
            row_estimate=max(int(reltuples), 0),
            replica_identity=replident,
            primary_key=keys.get(oid, ()),
            extension=extension,
        )
        for oid, schema, name, kind, reltuples, replident, extension in tables
    ]
