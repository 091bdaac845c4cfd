"""PostgreSQL types -> JSON Schema, and PostgreSQL text output -> the value a record carries.

The snapshot and the log both hand us each column as the text its type's output function prints
(pgoutput sends text tuples; the snapshot reads raw text the same way), so one converter per
column serves both paths and they agree by construction. The sessions are pinned to DateStyle=ISO,
TimeZone=UTC, IntervalStyle=iso_8601, extra_float_digits=3, bytea_output=hex, lc_monetary=C and
client_encoding=UTF8; the converters below rely on those formats.

Converters are resolved once per column from the type (kind, then OID, then extension name) and
then called once per value, so each is a builtin or a small closure with no dispatch of its own.
Types we have no rule for keep their text: nothing is lost and nothing fails.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tap_pgcdc.types.literals import Converter, array_parser, parse_hstore
from tap_pgcdc.types.oids import BUILTIN_TYPE_ROWS

__all__ = [
    "BOOL_CONVERTER",
    "BUILTIN_TYPES",
    "DATE_MAX",
    "DATE_MIN",
    "FLOAT_CONVERTER",
    "LAST_TIMESTAMP_TEXT",
    "NON_FINITE",
    "NUMERIC_CONVERTER",
    "STRING_CONVERTERS",
    "TEXT_IS_JSON",
    "TIMESTAMP_MAX",
    "TIMESTAMP_MIN",
    "Converter",
    "PgType",
    "converter",
    "json_schema",
]


@dataclass(frozen=True, slots=True)
class PgType:
    """What we need to know about one `pg_type` row."""

    oid: int
    name: str  # pg_type.typname, e.g. "int4", "_int4", "hstore", "my_enum"
    kind: str = "b"  # typtype: b base, c composite, d domain, e enum, p pseudo, r/m (multi)range
    category: str = "U"  # typcategory: A array, B bool, D datetime, N numeric, S string, U user...
    element: PgType | None = None  # arrays: the element type
    base: PgType | None = None  # domains: the base type (maybe itself a domain or an array)
    delimiter: str = ","  # arrays: the element type's typdelim (box uses ';')
    enum_labels: tuple[str, ...] = ()  # enums: informational only, never put in the schema


def _builtin_types() -> dict[int, PgType]:
    scalars = {
        oid: PgType(oid, name, kind, category, delimiter=delimiter)
        for oid, name, kind, category, element, delimiter in BUILTIN_TYPE_ROWS
        if not element
    }
    arrays = {
        oid: PgType(oid, name, kind, category, scalars[elem], delimiter=scalars[elem].delimiter)
        for oid, name, kind, category, elem, _ in BUILTIN_TYPE_ROWS
        if elem
    }
    return dict(sorted({**scalars, **arrays}.items()))


BUILTIN_TYPES: dict[int, PgType] = _builtin_types()
"""The built-in types by OID (fixed across servers), arrays with their element filled in."""

_OID = {t.name: oid for oid, t in BUILTIN_TYPES.items()}

# int2vector and oidvector are arrays to the catalog (typcategory 'A', typelem set) but print as
# "1 2 3", not as array literals; they are kept as text.
_VECTOR_TYPES = frozenset({"int2vector", "oidvector"})

_INTEGER: dict[str, Any] = {"type": ["integer"]}
_NUMBER: dict[str, Any] = {"type": ["number"]}
# JSON Schema's "pattern" applies to strings only: any number, or one of the three strings.
_NUMBER_OR_NON_FINITE: dict[str, Any] = {
    "type": ["number", "string"],
    "pattern": "^(NaN|Infinity|-Infinity)$",
}
_TIME: dict[str, Any] = {"type": ["string"], "pattern": "^[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?$"}
_TIMETZ: dict[str, Any] = {
    "type": ["string"],
    "pattern": "^[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?[+-][0-9]{2}:[0-9]{2}(:[0-9]{2})?$",
}
_BOOLEAN: dict[str, Any] = {"type": ["boolean"]}
_STRING: dict[str, Any] = {"type": ["string"]}
# A json/jsonb value is any JSON document, including `null`: the schema admits null even for a
# NOT NULL column, because the document null arrives as None just like SQL NULL does.
_JSON: dict[str, Any] = {"type": ["object", "array", "string", "number", "boolean", "null"]}
_HSTORE: dict[str, Any] = {
    "type": ["object"],
    "additionalProperties": {"type": ["string", "null"]},
}


def _string(fmt: str) -> dict[str, Any]:
    return {"type": ["string"], "format": fmt}


# RFC 3339 (JSON Schema's date and date-time) and most warehouses hold years 1 to 9999 only.
# Postgres values outside that range (-infinity, BC dates, years after 9999, infinity) are
# written as the nearest end of it, so that every value validates and loads: "before everything
# a warehouse can hold" and "after everything". The last timestamp is 23:59:59.999, not .999999:
# tools that read a timestamp as float seconds (singer-tools, strict_rfc3339) round .999999 of
# year 9999 up into year 10000.
DATE_MIN, DATE_MAX = "0001-01-01", "9999-12-31"
TIMESTAMP_MIN, TIMESTAMP_MAX = "0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59.999+00:00"
LAST_TIMESTAMP_TEXT = "9999-12-31 23:59:59.999"
"""The last timestamp written as itself (as Postgres prints it); later ones are TIMESTAMP_MAX."""


_LOGGER = logging.getLogger(__name__)
_warned_clamped = False


def _early(text: str) -> bool:
    """Whether a date/timestamp text outside years 1..9999 lies before them ("-infinity", BC).

    Called for every value written as an end of the range: the first finite one (a BC date, a
    five-digit year: not `infinity`, whose ends are the usual convention) is logged, once per
    process, because its exact value is not in the output.
    """
    global _warned_clamped  # one warning per process, whatever the stream
    if not _warned_clamped and not text.endswith("infinity"):
        _warned_clamped = True
        _LOGGER.warning(
            "A date or timestamp outside years 1 to 9999 (%r) is written as the nearest end of "
            "that range (0001-01-01 or 9999-12-31): RFC 3339 and most warehouses cannot hold "
            "it. To keep the exact value, select it as text in a view (README, 'What records "
            "look like'). Logged once per run.",
            text,
        )
    return text[0] == "-" or text[-1] == "C"


def _in_range(text: str) -> bool:
    """Whether a date/timestamp text is in years 1..9999 (four year digits, not BC)."""
    return text[4:5] == "-" and text[-1] != "C"


def _in_timestamp_range(text: str) -> bool:
    """`_in_range`, and not after LAST_TIMESTAMP_TEXT (a string comparison: the same layout)."""
    return _in_range(text) and (text[:4] != "9999" or text <= LAST_TIMESTAMP_TEXT)


def _iso_offset(text: str) -> str:
    """Complete an offset printed as "+HH" to "+HH:MM"; "+HH:MM" and "+HH:MM:SS" stay as is."""
    sign = max(text.rfind("+"), text.rfind("-"))
    return text + ":00" if len(text) - sign == 3 else text


def _date(text: str) -> str:
    if _in_range(text):
        return text  # ISO already
    return DATE_MIN if _early(text) else DATE_MAX


def _timestamp(text: str) -> str:
    """A timestamp without time zone as UTC ("+00:00"), the reading warehouses give it."""
    if _in_timestamp_range(text):
        return text.replace(" ", "T", 1) + "+00:00"
    return TIMESTAMP_MIN if _early(text) else TIMESTAMP_MAX


def _timestamptz(text: str) -> str:
    if _in_timestamp_range(text):
        if text[-3:] == "+00":  # TimeZone=UTC: nearly every value
            return text.replace(" ", "T", 1) + ":00"
        return _iso_offset(text.replace(" ", "T", 1))
    return TIMESTAMP_MIN if _early(text) else TIMESTAMP_MAX


NON_FINITE = frozenset({"NaN", "Infinity", "-Infinity"})
"""How Postgres prints the non-finite real, double precision and numeric values; the tap writes
them as these JSON strings (JSON has no NaN or infinity)."""


def _float(text: str) -> float | str:
    return text if text in NON_FINITE else float(text)


def _numeric(text: str) -> Decimal | str:
    return text if text in NON_FINITE else Decimal(text)


def _bytea(text: str) -> str:
    if not text.startswith("\\x"):
        msg = f"bytea value is not in hex format (is bytea_output=hex?): {text[:20]!r}"
        raise ValueError(msg)
    return text[2:]


_MONEY_NOISE = re.compile(r"[^0-9.]")


def _money_text(text: str) -> str:
    """Rewrite "-$1,234.56" as "-1234.56" (also "($1,234.56)", as some locales write it)."""
    digits = _MONEY_NOISE.sub("", text)
    return "-" + digits if "-" in text or "(" in text else digits


def _money(text: str) -> Decimal:
    return Decimal(_money_text(text))


_JSON_DECODER = json.JSONDecoder(parse_float=Decimal)
_JSON_DECODER_HUGE_INTS = json.JSONDecoder(parse_float=Decimal, parse_int=Decimal)


def _json(text: str) -> Any:
    try:
        return _JSON_DECODER.decode(text)
    except ValueError:
        # Python refuses to turn integer literals over 4300 digits into int; jsonb does not.
        return _JSON_DECODER_HUGE_INTS.decode(text)


def _jsonb(text: str) -> Any:
    """jsonb: parsed like json; its own function so that writers can tell jsonb's text apart.

    jsonb prints a canonical document (keys unique and sorted, no newline outside strings),
    which `tap_pgcdc.output.jsontext` copies into the output instead of parsing and re-serializing it.
    """
    return _json(text)


def _bool(text: str) -> bool:
    if text == "t":
        return True
    if text == "f":
        return False
    msg = f"bool value is neither 't' nor 'f': {text[:20]!r}"
    raise ValueError(msg)


# Built-in scalar types by name: (schema without null, converter). `str` means "keep the text".
# float4/float8: with extra_float_digits=3 the text is the shortest exact representation, so the
# value round-trips. NaN and the infinities (float and numeric alike) become the strings "NaN",
# "Infinity", "-Infinity", which the schema admits beside numbers (bare NaN is not JSON).
# time/timetz carry a pattern, not `format: time`: JSON Schema's time (RFC 3339) requires an
# offset, which a time without time zone has not, and older validators (singer-tools') accept
# no fraction of a second; "24:00:00" is a valid Postgres time, kept as is.
_BUILTIN_SCALARS: dict[str, tuple[dict[str, Any], Converter]] = {
    "int2": (_INTEGER, int),
    "int4": (_INTEGER, int),
    "int8": (_INTEGER, int),
    "oid": (_INTEGER, int),
    "xid": (_INTEGER, int),
    "xid8": (_INTEGER, int),
    "cid": (_INTEGER, int),
    "numeric": (_NUMBER_OR_NON_FINITE, _numeric),  # exact
    "float4": (_NUMBER_OR_NON_FINITE, _float),
    "float8": (_NUMBER_OR_NON_FINITE, _float),
    "money": (_NUMBER, _money),
    "bool": (_BOOLEAN, _bool),
    "bytea": ({"type": ["string"], "contentEncoding": "base16"}, _bytea),
    "date": (_string("date"), _date),
    "timestamp": (_string("date-time"), _timestamp),
    "timestamptz": (_string("date-time"), _timestamptz),
    "time": (_TIME, str),
    "timetz": (_TIMETZ, _iso_offset),
    "interval": (_string("duration"), str),
    "uuid": (_string("uuid"), str),
    "json": (_JSON, _json),
    "jsonb": (_JSON, _jsonb),
}
_SCALARS: dict[int, tuple[dict[str, Any], Converter]] = {
    _OID[name]: rule for name, rule in _BUILTIN_SCALARS.items()
}
# Extension types have no fixed OID, so they are recognised by name.
_EXTENSION_SCALARS: dict[str, tuple[dict[str, Any], Converter]] = {
    "hstore": (_HSTORE, parse_hstore),
    "citext": (_STRING, str),
    # PostGIS prints geometry and geography as hex EWKB; the SQL type rides along as a hint
    # (docs/targets.md: how DuckDB spatial and PostGIS read it).
    "geometry": (
        {"type": ["string"], "contentEncoding": "base16", "x-sql-datatype": "geometry"},
        str,
    ),
    "geography": (
        {"type": ["string"], "contentEncoding": "base16", "x-sql-datatype": "geography"},
        str,
    ),
}
# What writers that render JSON straight from the text (tap_pgcdc/output/jsontext.py) need to know:
STRING_CONVERTERS: frozenset[Converter] = frozenset(
    {str, _date, _timestamp, _timestamptz, _iso_offset, _bytea, _money_text}
)
"""Converters whose result is always a `str`."""
TEXT_IS_JSON: frozenset[Converter] = frozenset({int, _jsonb})
"""Converters whose input, as the server prints it, is already a JSON text of their result: the
same integer, the same jsonb document."""
BOOL_CONVERTER: Converter = _bool
FLOAT_CONVERTER: Converter = _float
NUMERIC_CONVERTER: Converter = _numeric
"""A numeric's text is the JSON of its value (digits and exponent), unless it is non-finite."""

_NUMERIC_OID = _OID["numeric"]
_MONEY_OID = _OID["money"]
_CHARACTER_OIDS = frozenset({_OID["varchar"], _OID["bpchar"]})
# money's range is that of int8 cents, and lc_monetary=C prints two fraction digits.
_MONEY_PRECISION, _MONEY_SCALE = 19, 2


def json_schema(
    t: PgType,
    *,
    nullable: bool,
    typmod: int = -1,
    dims: int = 0,
    use_singer_decimal: bool = False,
) -> dict[str, Any]:
    """Return the JSON Schema of a column of type `t`.

    Args:
        t: the column's type.
        nullable: whether the column admits NULL (adds "null" to "type").
        typmod: `pg_attribute.atttypmod` (-1: none). For arrays it is the element's typmod; for
            a domain pass the domain's `typtypmod`.
        dims: `pg_attribute.attndims`, the dimensions an array column declares: `integer[][]`
            holds arrays of arrays of integers. Postgres does not enforce it; values of other
            dimensions than declared do not match the schema.
        use_singer_decimal: numeric and money as strings in the `x-singer.decimal` format.

    Returns:
        A new dict the caller may modify.
    """
    schema = _schema(t, typmod, use_singer_decimal)
    for _ in range(dims - 1):
        if schema.get("type") != ["array"]:
            break
        schema["items"] = {"type": ["array", "null"], "items": schema["items"]}
    if nullable and "null" not in schema["type"]:
        schema["type"].append("null")
    return schema


def converter(t: PgType, *, use_singer_decimal: bool = False) -> Converter:
    """Return the function from the text output of a `t` value to the record value.

    Args:
        t: the column's type.
        use_singer_decimal: numeric and money as their decimal text, matching `json_schema`.

    Returns:
        A converter. On text the type's output function cannot have printed it raises
        ValueError (decimal.InvalidOperation for numeric and money).
    """
    if t.kind == "d" and t.base is not None:
        return converter(t.base, use_singer_decimal=use_singer_decimal)
    element = _array_element(t)
    if element is not None:
        element_converter = converter(element, use_singer_decimal=use_singer_decimal)
        return array_parser(element_converter, _array_delimiter(t))
    if t.kind != "b":  # enum, range, multirange, composite, pseudo: the text itself
        return str
    if use_singer_decimal and t.oid == _NUMERIC_OID:
        return str
    if use_singer_decimal and t.oid == _MONEY_OID:
        return _money_text
    rule = _SCALARS.get(t.oid) or _EXTENSION_SCALARS.get(t.name)
    return str if rule is None else rule[1]


def _schema(t: PgType, typmod: int, use_singer_decimal: bool) -> dict[str, Any]:
    if t.kind == "d" and t.base is not None:
        return _schema(t.base, typmod, use_singer_decimal)
    element = _array_element(t)
    if element is not None:
        items = json_schema(
            element, nullable=True, typmod=typmod, use_singer_decimal=use_singer_decimal
        )
        return {"type": ["array"], "items": items}
    if t.kind != "b":
        return {"type": ["string"]}
    if use_singer_decimal and t.oid == _NUMERIC_OID:
        return _singer_decimal(*_numeric_precision_scale(typmod))
    if use_singer_decimal and t.oid == _MONEY_OID:
        return _singer_decimal(_MONEY_PRECISION, _MONEY_SCALE)
    if t.oid in _CHARACTER_OIDS and typmod >= 4:  # varchar(n), char(n): typmod is n + 4
        return {"type": ["string"], "maxLength": typmod - 4}
    rule = _SCALARS.get(t.oid) or _EXTENSION_SCALARS.get(t.name)
    return {"type": ["string"]} if rule is None else copy.deepcopy(rule[0])


def _array_element(t: PgType) -> PgType | None:
    """The element type if `t` is an array type (printed as an array literal), else None."""
    if t.kind != "b" or t.name in _VECTOR_TYPES:
        return None
    if t.element is not None:
        return t.element if t.category == "A" or t.name.startswith("_") else None
    builtin = BUILTIN_TYPES.get(t.oid)
    return None if builtin is None else builtin.element


def _array_delimiter(t: PgType) -> str:
    builtin = BUILTIN_TYPES.get(t.oid)  # built-in OIDs are authoritative (box[] uses ';')
    return t.delimiter if builtin is None else builtin.delimiter


def _numeric_precision_scale(typmod: int) -> tuple[int | None, int | None]:
    """Decode numeric(p, s) from its typmod into a DECIMAL(p, s) every target can create.

    PostgreSQL 15 also allows a negative scale (numeric(3,-2) holds 99900) and a scale above the
    precision (numeric(2,5) holds 0.00099); both are widened to the ordinary DECIMAL that holds
    exactly the same values.
    """
    if typmod < 4:
        return None, None
    packed = typmod - 4
    precision = (packed >> 16) & 0xFFFF
    scale = ((packed & 0x7FF) ^ 0x400) - 0x400  # 11-bit two's complement
    if scale < 0:
        return precision - scale, 0
    return max(precision, scale), scale


def _singer_decimal(precision: int | None, scale: int | None) -> dict[str, Any]:
    # "x-singer.decimal" with "precision"/"scale" is what the SDK's targets read
    # (JSONSchemaToSQL); SDK 0.54's own SingerDecimalType still prints "singer.decimal".
    schema: dict[str, Any] = {"type": ["string"], "format": "x-singer.decimal"}
    if precision is not None:
        schema["precision"] = precision
        schema["scale"] = scale
    return schema
