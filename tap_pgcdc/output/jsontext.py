"""JSON text of record values, exactly as the tap writes it.

`serialize` is the writer's encoding of a whole message: strict JSON (RFC 8259: a float NaN or
infinity is an error, the converters turn those values into strings first), Decimals exact,
ASCII only, compact separators. The fast paths render values
one by one instead; :func:`fragment` says how, per converter, so that each value comes out as the
same JSON value `serialize` would give it.
"""

from __future__ import annotations

import datetime
import re
import typing as t

import simplejson
from simplejson.encoder import encode_basestring_ascii

from tap_pgcdc import typemap

if t.TYPE_CHECKING:
    from collections.abc import Callable

Fragment: t.TypeAlias = "Callable[[str], str]"
"""The text of one non-NULL value, as the server prints it -> the JSON of its converted value."""


def _default(obj: t.Any) -> str:
    return obj.isoformat(sep="T") if isinstance(obj, datetime.datetime) else str(obj)


def serialize(obj: object) -> str:
    """One JSON line: strict JSON, Decimals exact, compact separators.

    Raises:
        ValueError: on a float or Decimal NaN or infinity, which JSON cannot express.
    """
    text: str = simplejson.dumps(
        obj, use_decimal=True, allow_nan=False, default=_default, separators=(",", ":")
    )
    return text


json_string: Callable[[str], str] = encode_basestring_ascii
"""A str as a JSON string, escaped exactly as `serialize` escapes it."""


def fragment(convert: typemap.Converter) -> Fragment | None:
    """How a value's text becomes the JSON `serialize` writes for `convert(text)`.

    Returns None when the text already is that JSON (see `typemap.TEXT_IS_JSON`): an integer
    prints the same digits; a jsonb document the same JSON value (`serialize` would drop the
    spaces after ':' and ','). A finite numeric prints the same decimal (`str(Decimal)` may write
    "1E-7" where Postgres writes "0.0000001": the same sign, digits and exponent once parsed),
    NaN and ±Infinity become strings. The other converters get `serialize`'s own spelling: its
    string escaping, its float and bool tokens, or for the rest (json, arrays, hstore, money)
    `serialize` applied to the converted value.
    """
    if convert in typemap.TEXT_IS_JSON:
        return None
    if convert is str:
        return json_string
    if convert in typemap.STRING_CONVERTERS:
        return lambda text: json_string(convert(text))
    if convert is typemap.NUMERIC_CONVERTER:
        return _numeric_json
    if convert is typemap.FLOAT_CONVERTER:
        return _float_json
    if convert is typemap.BOOL_CONVERTER:
        return _bool_json
    return lambda text: serialize(convert(text))


_BOOL_JSON = {"t": "true", "f": "false"}
_NON_FINITE_JSON = {text: json_string(text) for text in typemap.NON_FINITE}


def _float_json(text: str) -> str:
    """simplejson's float encoding (repr); NaN, Infinity, -Infinity as strings."""
    rendered = _NON_FINITE_JSON.get(text)
    return float.__repr__(float(text)) if rendered is None else rendered


def _numeric_json(text: str) -> str:
    """A numeric's text is its JSON number; NaN, Infinity, -Infinity as strings."""
    rendered = _NON_FINITE_JSON.get(text)
    return text if rendered is None else rendered


def _bool_json(text: str) -> str:
    rendered = _BOOL_JSON.get(text)
    if rendered is None:  # not t/f: the converter raises its error
        return "true" if typemap.BOOL_CONVERTER(text) else "false"
    return rendered


_NOT_ASCII = re.compile("[\x7f-\U0010ffff]+")


def ascii_json(text: str) -> str:
    """Escape DEL and non-ASCII characters in JSON text as \\uXXXX, the way `serialize` does.

    Valid because in JSON text such characters only occur inside strings, where the escape
    means the same character; the result is ASCII, like everything else the tap writes.
    """
    if text.isascii() and "\x7f" not in text:
        return text
    return _NOT_ASCII.sub(lambda m: json_string(m.group())[1:-1], text)
