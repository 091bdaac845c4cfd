"""SQL side of the tap: connections, catalog discovery and JSON Schema for each table.

Discovery reads `pg_catalog` directly rather than through SQLAlchemy reflection: we need things
reflection does not give (partition parents, typmods, domains resolved to their base types,
replica identity, row estimates), and the same type resolution serves the log reader when a
Relation message announces a changed table.
"""

from __future__ import annotations

import fnmatch
import typing as t
from dataclasses import dataclass
from functools import cached_property

import psycopg2
import psycopg2.extensions
import sqlalchemy as sa
from singer_sdk.singerlib import CatalogEntry, MetadataMapping, Schema
from singer_sdk.sql import SQLConnector

from tap_pgcdc import tunnel, typemap
from tap_pgcdc.errors import ConnectionFailed
from tap_pgcdc.pg.quoting import quote_ident
from tap_pgcdc.typemap import PgType

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

# Every session, SQL or replication, renders values the same way, so that the snapshot (which
# reads text output) and pgoutput (which sends text output) produce identical strings and the
# one set of converters in typemap.py can rely on these formats.
SESSION_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO",
    "TimeZone": "UTC",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "lc_monetary": "C",
}

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")

# Metadata columns added to every table stream.
SDC_LSN = "_sdc_lsn"
SDC_DELETED_AT = "_sdc_deleted_at"
SDC_COLUMNS_SCHEMA: dict[str, dict[str, t.Any]] = {
    SDC_LSN: {"type": ["integer", "null"]},
    SDC_DELETED_AT: {"type": ["string", "null"], "format": "date-time"},
}

RELKIND_TABLE = "r"
RELKIND_PARTITIONED = "p"
RELKIND_VIEW = "v"
RELKIND_MATVIEW = "m"

# PostgreSQL 12 cannot publish a partitioned table (publish_via_partition_root came with 13):
# there its partitions are the LOG_BASED streams, and the parent only a FULL_TABLE one.
PUBLISH_PARTITION_ROOT_SINCE = 130000


def session_options() -> str:
    """The libpq `options` string that pins our session settings."""
    return " ".join(f"-c {k}={v}" for k, v in SESSION_SETTINGS.items())


def connection_kwargs(config: Mapping[str, t.Any]) -> dict[str, t.Any]:
    """psycopg2/libpq keyword arguments from the tap config (shared by SQL and replication)."""
    kwargs: dict[str, t.Any] = {
        "host": config.get("host", "localhost"),
        "port": int(config.get("port", 5432)),
        "dbname": config["database"],
        "user": config["user"],
        "application_name": "tap-pgcdc",
        "connect_timeout": int(config.get("connect_timeout", 15)),
        "options": session_options(),
        # Detect a dead peer (a killed server, a dropped tunnel) instead of hanging forever.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if config.get("password"):
        kwargs["password"] = config["password"]
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
        if config.get(key):
            kwargs[key] = config[key]
    endpoint = tunnel.local_endpoint(config)
    if endpoint is not None:
        # Connect to the tunnel; `host` stays the name sslmode=verify-full checks.
        kwargs["hostaddr"], kwargs["port"] = endpoint
    return kwargs


def describe_target(config: Mapping[str, t.Any]) -> str:
    """`user@host:port/database` for messages; never includes the password."""
    return (
        f"{config.get('user')}@{config.get('host', 'localhost')}:"
        f"{config.get('port', 5432)}/{config.get('database')}"
    )


def connect(config: Mapping[str, t.Any], **extra: t.Any) -> psycopg2.extensions.connection:
    """Open a SQL connection with the pinned session settings.

    Raises:
        ConnectionFailed: with the server's reason and what to check, never the password.
    """
    kwargs = connection_kwargs(config)
    kwargs.update(extra)
    try:
        return psycopg2.connect(**kwargs)
    except psycopg2.OperationalError as exc:
        raise ConnectionFailed.from_error(exc, config) from None


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


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A table, partitioned parent, view or materialized view."""

    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind
    columns: tuple[ColumnInfo, ...]
    key: tuple[str, ...]  # primary key column names, in key order
    row_estimate: int
    replica_identity: str  # pg_class.relreplident: d default, n nothing, f full, i index

    @property
    def stream_name(self) -> str:
        return f"{self.schema}-{self.name}"

    @property
    def is_view(self) -> bool:
        return self.kind in (RELKIND_VIEW, RELKIND_MATVIEW)

    @property
    def quoted_name(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    def column(self, name: str) -> ColumnInfo:
        for col in self.columns:
            if col.name == name:
                return col
        msg = f"{self.schema}.{self.name} has no column {name!r}"
        raise KeyError(msg)


_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.reltuples::bigint, c.relreplident
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm')
  AND (NOT c.relispartition OR %(with_partitions)s)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
  AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
ORDER BY n.nspname, c.relname
"""

_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, a.attnum, a.atttypid, a.atttypmod, a.attnotnull,
       a.attgenerated <> '', pg_catalog.format_type(a.atttypid, a.atttypmod)
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


def load_tables(
    conn: psycopg2.extensions.connection,
    *,
    filter_schemas: Sequence[str] | None = None,
    filter_tables: Sequence[str] | None = None,
    oids: Sequence[int] | None = None,
) -> list[TableInfo]:
    """Read tables (and views) the user may SELECT, honouring the schema/table filters."""
    with_partitions = conn.server_version < PUBLISH_PARTITION_ROOT_SINCE
    with conn.cursor() as cur:
        cur.execute(_TABLES_SQL, {"with_partitions": with_partitions})
        tables = cur.fetchall()
    if oids is not None:
        wanted_oids = set(oids)
        tables = [row for row in tables if row[0] in wanted_oids]
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
    types = resolve_types(conn, (row[3] for row in columns))
    by_table: dict[int, list[ColumnInfo]] = {}
    for relid, name, attnum, typid, typmod, not_null, generated, sql_type in columns:
        by_table.setdefault(relid, []).append(
            ColumnInfo(
                name=name,
                attnum=attnum,
                type=types[typid],
                typmod=typmod,
                not_null=not_null,
                generated=generated,
                sql_type=sql_type,
            )
        )
    return [
        TableInfo(
            oid=oid,
            schema=schema,
            name=name,
            kind=kind,
            columns=tuple(by_table.get(oid, ())),
            key=keys.get(oid, ()),
            row_estimate=max(int(reltuples), 0),
            replica_identity=replident,
        )
        for oid, schema, name, kind, reltuples, replident in tables
    ]


def column_schema(col: ColumnInfo, *, use_singer_decimal: bool) -> dict[str, t.Any]:
    """The JSON Schema of one column."""
    return typemap.json_schema(
        col.type,
        nullable=not col.not_null,
        typmod=col.typmod,
        use_singer_decimal=use_singer_decimal,
    )


def table_schema(table: TableInfo, *, use_singer_decimal: bool) -> dict[str, t.Any]:
    """The JSON Schema of a table's records, including the _sdc metadata columns of tables."""
    properties = {
        col.name: column_schema(col, use_singer_decimal=use_singer_decimal) for col in table.columns
    }
    if not table.is_view:
        properties.update(SDC_COLUMNS_SCHEMA)
    return {"type": "object", "properties": properties}


def catalog_entry(
    table: TableInfo, *, use_singer_decimal: bool, publishable_parents: bool = True
) -> dict[str, t.Any]:
    """Build the Singer catalog entry (schema and metadata) of a table, as a dict.

    `publishable_parents` is false on PostgreSQL 12, whose partitions are streams of their own:
    a partitioned parent is then offered as FULL_TABLE and not selected by default (selected
    too, it would deliver every row twice).
    """
    schema = table_schema(table, use_singer_decimal=use_singer_decimal)
    unpublishable_parent = table.kind == RELKIND_PARTITIONED and not publishable_parents
    # Views and materialized views have no change stream: they can only be re-read in full.
    full_only = table.is_view or unpublishable_parent
    method = "FULL_TABLE" if full_only else "LOG_BASED"
    metadata = MetadataMapping.get_standard_metadata(
        schema=schema,
        schema_name=table.schema,
        key_properties=list(table.key),
        replication_method="FULL_TABLE" if full_only else None,
        selected_by_default=not unpublishable_parent,
    )
    entry = CatalogEntry(
        tap_stream_id=table.stream_name,
        stream=table.stream_name,
        table=table.name,
        key_properties=list(table.key),
        schema=Schema.from_dict(schema),
        replication_method=method,
        metadata=metadata,
        is_view=table.is_view,
        row_count=table.row_estimate,
    ).to_dict()
    # Root metadata the Singer spec defines for databases; the SDK's classes do not model them.
    for item in entry["metadata"]:
        if item["breadcrumb"] == []:
            item["metadata"].update(
                {
                    "is-view": table.is_view,
                    "row-count": table.row_estimate,
                    "replication-method": method,
                }
            )
    return entry


class PgCdcConnector(SQLConnector):
    """Connector used by the SDK; discovery is ours, the SQLAlchemy URL is kept for SDK tools."""

    def __init__(self, config: dict | None = None, sqlalchemy_url: str | None = None) -> None:
        super().__init__(config=config, sqlalchemy_url=sqlalchemy_url)

    def get_sqlalchemy_url(self, config: dict[str, t.Any]) -> str:
        query = {
            k: config[k] for k in ("sslmode", "sslrootcert", "sslcert", "sslkey") if config.get(k)
        }
        port = int(config.get("port", 5432))
        endpoint = tunnel.local_endpoint(config)
        if endpoint is not None:
            query["hostaddr"], port = endpoint
        url = sa.engine.URL.create(
            drivername="postgresql+psycopg2",
            username=config.get("user"),
            password=config.get("password"),
            host=config.get("host", "localhost"),
            port=port,
            database=config.get("database"),
            query=query,
        )
        return url.render_as_string(hide_password=False)

    @cached_property
    def use_singer_decimal(self) -> bool:
        return bool(self.config.get("use_singer_decimal", False))

    def open(self) -> psycopg2.extensions.connection:
        """A new SQL connection (caller closes it)."""
        return connect(self.config)

    def load_tables(self, oids: Sequence[int] | None = None) -> list[TableInfo]:
        conn = self.open()
        try:
            return load_tables(
                conn,
                filter_schemas=self.config.get("filter_schemas"),
                filter_tables=self.config.get("filter_tables"),
                oids=oids,
            )
        finally:
            conn.close()

    @cached_property
    def server_version(self) -> int:
        conn = self.open()
        try:
            return int(conn.server_version)
        finally:
            conn.close()

    def discover_catalog_entries(self, **_: t.Any) -> list[dict]:
        """Every readable table, partitioned parent, view and materialized view."""
        publishable_parents = self.server_version >= PUBLISH_PARTITION_ROOT_SINCE
        return [
            catalog_entry(
                table,
                use_singer_decimal=self.use_singer_decimal,
                publishable_parents=publishable_parents,
            )
            for table in self.load_tables()
        ]
