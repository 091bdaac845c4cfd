"""Whether an input catalog still describes its live table: each column's type, and the key.

A catalog can predate ALTER TABLE: Meltano caches the catalog of an installed plugin, and a
user may keep one for years. Records are always converted with the live column types (the log
and the snapshot carry them), so a SCHEMA built from a stale catalog would say `integer` where
the records carry strings, and a validating target rejects them; a key naming a column that no
longer exists (renamed) is not valid Singer. `fit_catalog` is the one judgement the run (which
sends the SCHEMA it returns) and `--test` (which reports what is stale) share.

A column keeps the catalog's JSON Schema (a user may have edited it, as Meltano's `schema` extra
does) only while the catalog's `sql-datatype` for it is the live column's type; a catalog from
before discovery recorded `sql-datatype` keeps it only while it has the live schema's shape.
"""

from __future__ import annotations

import copy
import typing as t
from dataclasses import dataclass

from tap_pgcdc.connector import SQL_DATATYPE, table_schema

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from tap_pgcdc.pg.catalog import TableInfo

# Keywords that describe a value without constraining it: a user's edits of them never conflict.
_ANNOTATIONS = frozenset({"title", "description", "examples", "default", "$comment", "deprecated"})


@dataclass(frozen=True, slots=True)
class Retyped:
    """A column whose type in the catalog is not its live type."""

    column: str
    catalog: str | None  # the catalog's sql-datatype (None: the catalog records none)
    live: str  # format_type() of the live column


@dataclass(frozen=True, slots=True)
class CatalogFit:
    """What a stream sends for a catalog entry against its live table, and what was stale."""

    stream: str
    properties: dict[str, t.Any]  # the SCHEMA's properties: the live columns, in table order
    key: tuple[str, ...]  # the key_properties to send
    retyped: tuple[Retyped, ...]  # columns whose catalog property was replaced by the live one
    catalog_key: tuple[str, ...]  # the catalog's key_properties
    missing_key: tuple[str, ...]  # the catalog's key columns the table no longer has

    def sentences(self) -> list[str]:
        """What is stale, its consequence and the fix; [] when the catalog fits."""
        found = []
        if self.retyped:
            columns = ", ".join(
                f"{r.column} ({r.catalog or 'a different schema'}, now {r.live})"
                for r in self.retyped
            )
            found.append(
                f"Stream {self.stream}: the catalog describes column(s) {columns} with another "
                "type than the table has now (ALTER COLUMN ... TYPE since discovery). A run "
                "sends the SCHEMA of the live types, so that the records validate, and any edit "
                "the catalog makes to those properties is ignored. Fix: run --discover again "
                "(with Meltano: `meltano run --refresh-catalog ...` once), then re-apply the edits."
            )
        if self.missing_key:
            found.append(
                f"Stream {self.stream}: the catalog's key_properties "
                f"({', '.join(self.catalog_key)}) name column(s) the table no longer has "
                f"({', '.join(self.missing_key)}: renamed or dropped since discovery). A run "
                f"uses the table's key ({', '.join(self.key) or 'none'}) instead; a target that "
                "created its table with the old key may need it re-created. Fix: run "
                "--discover again (with Meltano: `meltano run --refresh-catalog ...` once)."
            )
        return found


def catalog_sql_types(catalog_entry: Mapping[str, t.Any]) -> dict[str, str]:
    """The `sql-datatype` the catalog entry records per top-level property."""
    found: dict[str, str] = {}
    for item in catalog_entry.get("metadata") or ():
        crumb = list(item.get("breadcrumb") or ())
        value = (item.get("metadata") or {}).get(SQL_DATATYPE)
        if len(crumb) == 2 and crumb[0] == "properties" and isinstance(value, str):
            found[str(crumb[1])] = value
    return found


def fit_catalog(
    stream: str,
    properties: Mapping[str, t.Any],
    sql_types: Mapping[str, str],
    catalog_key: Sequence[str],
    table: TableInfo,
    *,
    use_singer_decimal: bool,
) -> CatalogFit:
    """The schema and key a stream sends, from its catalog entry and its live table.

    Args:
        stream: The stream's id (for the sentences).
        properties: The catalog's schema properties.
        sql_types: The catalog's `sql-datatype` per property (`catalog_sql_types`).
        catalog_key: The catalog's key_properties.
        table: The live table.
        use_singer_decimal: The setting, which the live schemas depend on.
    """
    live = table_schema(table, use_singer_decimal=use_singer_decimal)["properties"]
    columns = {col.name: col for col in table.columns}
    merged: dict[str, t.Any] = {}
    retyped: list[Retyped] = []
    for name, prop in live.items():
        known = properties.get(name)
        col = columns.get(name)
        if known is None or col is None:  # a new column, or a metadata field (_sdc_*)
            merged[name] = known if known is not None else prop
            continue
        recorded = sql_types.get(name)
        same = recorded == col.sql_type if recorded is not None else _shape(known) == _shape(prop)
        if same:
            # Nullability is not part of the type: a column that lost NOT NULL sends nulls.
            merged[name] = known if col.not_null else _admitting_null(known)
        else:
            merged[name] = prop
            retyped.append(Retyped(name, recorded, col.sql_type))
    missing = tuple(k for k in catalog_key if k not in columns)
    return CatalogFit(
        stream=stream,
        properties=merged,
        key=fitting_key(catalog_key, table),
        retyped=tuple(retyped),
        catalog_key=tuple(catalog_key),
        missing_key=missing,
    )


def fitting_key(key: Sequence[str], table: TableInfo) -> tuple[str, ...]:
    """`key` while the table has all its columns, else the table's key (the log's).

    A key naming a column the SCHEMA lacks is invalid Singer, and deletes would carry no key. A
    key that differs from the table's but names existing columns is kept: it may be the user's
    choice (`checks.stale_keys` warns about it).
    """
    names = {col.name for col in table.columns}
    return tuple(key) if all(k in names for k in key) else tuple(table.key)


def followed_key(key: Sequence[str], previous: TableInfo, table: TableInfo) -> tuple[str, ...]:
    """The key after the table changed from `previous` to `table` (seen in the log).

    A key that was the table's follows it (a renamed key column, a new replica identity); any
    other key is kept while it names columns the table has (`fitting_key`).
    """
    if tuple(key) == tuple(previous.key):
        return tuple(table.key)
    return fitting_key(key, table)


def _types(prop: Mapping[str, t.Any]) -> list[str]:
    kind = prop.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _shape(prop: Mapping[str, t.Any]) -> dict[str, t.Any]:
    """A property's constraints: without annotations, and without "null" (see `fit_catalog`)."""
    shape = {k: v for k, v in prop.items() if k not in _ANNOTATIONS}
    shape["type"] = sorted(kind for kind in _types(prop) if kind != "null")
    return shape


def _admitting_null(prop: Mapping[str, t.Any]) -> dict[str, t.Any]:
    kinds = _types(prop)
    if "type" not in prop or "null" in kinds:
        return dict(prop)
    return {**copy.deepcopy(dict(prop)), "type": [*kinds, "null"]}
