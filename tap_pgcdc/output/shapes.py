"""A table's shape as a Relation message describes it: its columns' types and its key.

Postgres sends a Relation message before a table's first change in a session and again after
DDL; the changes that follow are in its shape, which may differ from the table bound at the
start of the run (changes decoded before an ALTER TABLE carry the old types) and from the table
now. `same_shape` tells whether a stream can keep its table; `adopt` builds the table the
following records conform to: each column's type from the message (so its converter and its
JSON Schema describe the values that follow), its other attributes (NOT NULL, attnum, declared
array dimensions) from the bound table or, for a new column, from the catalog when the column
there has the message's type; the key from the server's replica identity flags (`relation_key`).
"""

from __future__ import annotations

import dataclasses
import typing as t

from tap_pgcdc.pg.catalog import ColumnInfo, TableInfo

if t.TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

    from tap_pgcdc.replication.messages import Relation
    from tap_pgcdc.typemap import PgType

# Replica identities under which the server flags every column (FULL) or none (NOTHING) as key:
# the flags then do not say which columns identify a row.
_UNFLAGGED_IDENTITIES = ("f", "n")


def relation_key(message: Relation, *known_keys: Sequence[str]) -> tuple[str, ...]:
    """The columns the log identifies the message's rows by.

    Old rows of deletes and key changes carry the replica identity's columns, which the message
    flags; they are returned in the order of the first known key with the same columns (the
    index's order), else in the message's. Under REPLICA IDENTITY FULL every column is flagged
    (and none under NOTHING): there the key is the first of `known_keys` (the catalog's primary
    key now, then the keys the stream knew) whose columns the message all has, else none. A
    message from before a key column's rename has the old name, which only an older key knows.
    """
    names = [col.name for col in message.columns]
    if message.replica_identity in _UNFLAGGED_IDENTITIES:
        return next((tuple(k) for k in known_keys if k and all(n in names for n in k)), ())
    flagged = [col.name for col in message.columns if col.is_key]
    return next((tuple(k) for k in known_keys if set(k) == set(flagged)), tuple(flagged))


def _matches(known: ColumnInfo | None, type_oid: int, typmod: int) -> bool:
    return known is not None and known.type.oid == type_oid and known.typmod == typmod


def same_shape(message: Relation, table: TableInfo, absent: Collection[str] = ()) -> bool:
    """Whether the message describes `table`: same columns, types and key.

    Generated columns absent from the message are not a difference: pgoutput before PostgreSQL
    18 never sends them (the change writer reads them by key). Nor are the `absent` ones: the
    deselected columns a publication's column list leaves out.
    """
    existing = {col.name: col for col in table.columns}
    sent = {col.name for col in message.columns}
    return (
        all(_matches(existing.get(c.name), c.type_oid, c.atttypmod) for c in message.columns)
        and all(col.name in sent or col.generated or col.name in absent for col in table.columns)
        and relation_key(message, table.key) == tuple(table.key)
    )


def unknown_types(message: Relation, *tables: TableInfo | None) -> list[int]:
    """The type OIDs of the message's columns that no column of `tables` has (to resolve)."""
    known = {(c.name, c.type.oid, c.typmod) for tbl in tables if tbl for c in tbl.columns}
    return [c.type_oid for c in message.columns if (c.name, c.type_oid, c.atttypmod) not in known]


def adopt(
    message: Relation,
    table: TableInfo,
    current: TableInfo | None,
    types: Mapping[int, PgType],
    format_types: Callable[[Sequence[tuple[int, int]]], Mapping[tuple[int, int], str]],
    catalog_key: Sequence[str] = (),
    absent: Collection[str] = (),
) -> TableInfo:
    """The table the message's changes conform to (see the module docstring).

    Args:
        message: The Relation message.
        table: The stream's table until now.
        current: The table as the catalog describes it now (looked up by the message's OID),
            or None if it is gone or unreadable.
        types: The resolved types of `unknown_types(message, table, current)`.
        format_types: `format_type()` of (type OID, typmod) pairs, one query for all.
        catalog_key: The input catalog's key_properties, the last resort of `relation_key`.
        absent: Deselected columns the publication's column list leaves out: kept as they are.
    """
    existing = {col.name: col for col in table.columns}
    catalog = {col.name: col for col in current.columns} if current else {}
    columns: list[ColumnInfo | None] = []
    untyped: list[tuple[int, int]] = []
    for col in message.columns:
        found = next(
            (
                known
                for known in (existing.get(col.name), catalog.get(col.name))
                if _matches(known, col.type_oid, col.atttypmod)
            ),
            None,
        )
        columns.append(found)
        if found is None:
            untyped.append((col.type_oid, col.atttypmod))
    sql_types = format_types(untyped) if untyped else {}
    adopted: list[ColumnInfo] = []
    for col, found in zip(message.columns, columns, strict=True):
        if found is None:
            # A type the catalog no longer has for this column (a later ALTER): nothing but the
            # type is known, and a column that admits NULL describes its values.
            previous = existing.get(col.name) or catalog.get(col.name)
            found = ColumnInfo(
                name=col.name,
                attnum=previous.attnum if previous else 0,
                type=types[col.type_oid],
                typmod=col.atttypmod,
                not_null=False,
                generated=False,
                sql_type=sql_types.get((col.type_oid, col.atttypmod), "text"),
            )
        adopted.append(found)
    sent = {col.name for col in message.columns}
    # Generated columns are never in the log before PG 18: keep them, fill them by key.
    not_sent = [
        col
        for col in (current or table).columns
        if (col.generated or col.name in absent) and col.name not in sent
    ]
    return dataclasses.replace(
        table,
        columns=tuple(adopted + not_sent),
        key=relation_key(message, *([current.key] if current else []), table.key, catalog_key),
        replica_identity=message.replica_identity,
        primary_key=(current or table).primary_key,
    )
