"""The SQL that renders a row as the record JSON the plain path writes, where that is proven.

Each column's part is a SQL expression that gives exactly the JSON the typemap converter and the
writer give for the column's text, for the types listed in `_rendering`, each with the reason it
is exact. Every other value (other types, non-finite numerics, and dates outside years 1 to
9999, which the converters clamp) arrives as a marker holding the value's output text,
``\\x01<column index>\\x02<text as a JSON string>\\x03``, and `resolve_markers` converts it with
the column's converter and the writer's serializer: the plain path's own code. No other control
character can occur in the rendered text, because every string in it is JSON-escaped.
"""

from __future__ import annotations

import json
import re
import typing as t

from tap_pgcdc import typemap
from tap_pgcdc.output.jsontext import json_string, serialize
from tap_pgcdc.pg.quoting import quote_ident, quote_literal

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from tap_pgcdc.pg.catalog import ColumnInfo

_OID = {pg_type.name: oid for oid, pg_type in typemap.BUILTIN_TYPES.items()}
_INTEGERS = frozenset(_OID[name] for name in ("int2", "int4", "int8", "oid"))
_STRINGS = frozenset(_OID[name] for name in ("text", "varchar", "bpchar", "name"))


def _builtin_converter(name: str) -> typemap.Converter:
    return typemap.converter(typemap.BUILTIN_TYPES[_OID[name]])


_NUMERIC = _builtin_converter("numeric")
_DATE = _builtin_converter("date")
_TIMESTAMP = _builtin_converter("timestamp")
_TIMESTAMPTZ = _builtin_converter("timestamptz")
_JSONB = _builtin_converter("jsonb")
_BYTEA = _builtin_converter("bytea")

MARKER_START = "\x01"
"""Opens a marker: rendered text without it needs no Python conversion."""

_MARKER = re.compile("\x01([0-9]+)\x02(.*?)\x03", re.DOTALL)


def _base(pg_type: typemap.PgType) -> typemap.PgType:
    while pg_type.kind == "d" and pg_type.base is not None:
        pg_type = pg_type.base
    return pg_type


def _rendering(col: ColumnInfo, convert: typemap.Converter) -> tuple[str, str | None] | None:
    """SQL for the JSON of a non-NULL value as the plain path writes it, and when it applies.

    Returns (JSON SQL, condition or None for always), or None where no rendering is proven.
    Sessions are pinned to DateStyle=ISO and TimeZone=UTC (connector.SESSION_SETTINGS). A domain
    behaves as its base type: `::text` converts through the base type and `to_json` looks through
    domains. Casts to text are I/O conversions (the output function), except bool's.
    """
    x = quote_ident(col.name)
    base = _base(col.type)
    oid = base.oid
    if oid in _INTEGERS and convert is int:
        return f"{x}::text", None  # canonical digits, as str(int(text))
    if oid == _OID["numeric"] and convert is _NUMERIC:
        # see jsontext.fragment; NaN and the infinities (compared as text: numeric infinity is
        # new in PostgreSQL 14) go to Python, which writes them as strings
        return f"{x}::text", f"{x}::text NOT IN ('NaN', 'Infinity', '-Infinity')"
    if oid == _OID["numeric"] and convert is str:  # use_singer_decimal: the text, quoted
        return f"'\"' || {x}::text || '\"'", None  # digits, '.', '-', NaN, Infinity
    if oid == _OID["bool"] and convert is typemap.BOOL_CONVERTER:
        return f"{x}::text", None  # the bool-to-text cast spells true/false
    if oid in _STRINGS and convert is str:
        # escape_json: \" \\ \b \f \n \r \t and \u00xx for other controls, as the writer
        # escapes; the non-ASCII characters it leaves are escaped in Python (jsontext.ascii_json).
        return f"to_json({x})::text", None
    if oid == _OID["uuid"] and convert is str:
        return f"'\"' || {x}::text || '\"'", None  # hex digits and dashes
    if base.kind == "e" and convert is str:
        return f"to_json({x}::text)::text", None
    if oid == _OID["bytea"] and convert is _BYTEA:
        # the converter drops the "\\x" of the hex output: the rest is hex digits, which need
        # no escaping (and no marker: a large value is not parsed and written again in Python)
        return f"'\"' || encode({x}, 'hex') || '\"'", None
    if oid == _OID["jsonb"] and convert is _JSONB:
        return f"{x}::text", None  # see jsontext.fragment: the same JSON value, spaced
    # Dates and times: values outside years 1 to 9999 (BC, infinities, five-digit years) are
    # clamped by the converters; those go to Python. Within them:
    if oid == _OID["date"] and convert is _DATE:
        # the ISO text, unchanged by the converter
        return f"'\"' || {x}::text || '\"'", f"{x} BETWEEN '0001-01-01' AND '9999-12-31'"
    # to_json prints the ISO text with 'T' and, in UTC, the offset as "+00:00": what the
    # converters make of the text (a timestamp without time zone gets "+00:00" appended).
    if oid == _OID["timestamp"] and convert is _TIMESTAMP:
        in_range = f"{x} BETWEEN '0001-01-01 00:00:00' AND '{typemap.LAST_TIMESTAMP_TEXT}'"
        return f"left(to_json({x})::text, -1) || '+00:00\"'", in_range
    if oid == _OID["timestamptz"] and convert is _TIMESTAMPTZ:
        last = typemap.LAST_TIMESTAMP_TEXT
        in_range = f"{x} BETWEEN '0001-01-01 00:00:00+00' AND '{last}+00'"
        return f"to_json({x})::text", in_range
    return None


def _marker_sql(col: ColumnInfo, index: int) -> str:
    # concat() calls the output function, as the plain path reads the value (`::text` would trim
    # char(n) and print inet masks); num_nulls, unlike IS NULL, is false for a row of NULLs.
    x = quote_ident(col.name)
    return (
        f"CASE WHEN num_nulls({x}) = 0 THEN "
        f"E'\\x01{index}\\x02' || to_json(concat({x}))::text || E'\\x03' END"
    )


def column_sql(col: ColumnInfo, index: int, convert: typemap.Converter) -> str:
    """SQL for the JSON of one column's value: `null` for NULL, a marker where Python converts.

    Args:
        col: the column, read unqualified from the snapshot query's table.
        index: the column's position in the converters `resolve_markers` is given.
        convert: the column's converter (the plain path's).
    """
    marker = _marker_sql(col, index)
    rendering = _rendering(col, convert)
    if rendering is None:
        value = marker
    else:
        json_sql, condition = rendering
        value = (
            json_sql
            if condition is None
            else f"CASE WHEN {condition} THEN {json_sql} ELSE {marker} END"
        )
    # NULL exactly when the value is NULL (every function above is strict).
    return f"coalesce({value}, 'null')"


def record_sql(fields: Sequence[tuple[str, str]], meta: str) -> str:
    """SQL for a record object: (name, value SQL) pairs, then the constant JSON members `meta`.

    The JSON between values goes in as literals: '{"a":' || a || ',"b":' || b || ',"m":1}'.
    """
    parts: list[str] = []
    text = "{"
    for i, (name, value) in enumerate(fields):
        text += ("," if i else "") + json_string(name) + ":"
        parts.append(quote_literal(text))
        parts.append(value)
        text = ""
    if meta:
        text += ("," if fields else "") + meta
    parts.append(quote_literal(text + "}"))
    return " || ".join(parts)


def resolve_markers(text: str, converters: Sequence[typemap.Converter]) -> str:
    """Replace each marker with the JSON the writer gives the converted value.

    `converters` are indexed by the marker's column index (see `column_sql`).
    """

    def value(match: re.Match[str]) -> str:
        convert = converters[int(match.group(1))]
        return serialize(convert(json.loads(match.group(2))))

    return _MARKER.sub(value, text)
