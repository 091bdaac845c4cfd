"""Typecasters that hand Postgres' text output to the tap's converters untouched."""

from __future__ import annotations

import typing as t

import psycopg2.extensions

if t.TYPE_CHECKING:
    from collections.abc import Iterable


def raw_text_casters(conn: psycopg2.extensions.connection, oids: Iterable[int]) -> None:
    """Make psycopg2 return these types' text output untouched on this connection.

    The converters in typemap.py take Postgres' text output, exactly what pgoutput sends, so
    the snapshot and the log give identical values.
    """
    oid_tuple = tuple(sorted(set(oids)))
    if oid_tuple:
        caster = psycopg2.extensions.new_type(oid_tuple, "TAP_PGCDC_RAW", _identity)
        psycopg2.extensions.register_type(caster, conn)


def _identity(value: str | None, _cursor: object) -> str | None:
    return value
