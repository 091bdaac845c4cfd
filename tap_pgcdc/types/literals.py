"""Parsers for the container text formats of PostgreSQL output functions: arrays and hstore.

They run once per value, so the common shapes take a fast path (a flat array with nothing quoted
is one `str.split`) and the rest is one compiled regular expression walked token by token. The
input is what the server's output functions print (`array_out`, `hstore_out`), not everything
their input functions would accept: anything else raises `ValueError` rather than guessing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

Converter = Callable[[str], Any]
"""Text of one non-NULL value -> the Python value the record carries (SQL NULL never gets here)."""

# array_out writes a NULL element as the bare word NULL; an element that spells "null" in any
# case is double-quoted, so only unquoted tokens are compared against these.
_NULL_SPELLINGS = frozenset(a + b + c + d for a in "Nn" for b in "Uu" for c in "Ll" for d in "Ll")
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_QUOTED = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_HSTORE_PAIR = re.compile(rf"({_QUOTED})=>(?:({_QUOTED})|NULL)", re.DOTALL)


def _unquote(token: str) -> str:
    """Strip the double quotes around `token` and undo its backslash escapes."""
    body = token[1:-1]
    return _ESCAPED.sub(r"\1", body) if "\\" in body else body


def _malformed(what: str, text: str) -> ValueError:
    return ValueError(f"malformed {what}: {text[:80]!r}")


# Array grammar states, named after the last token. After '{' come an element, '{' or '}'; after
# a delimiter an element or '{'; after an element or '}' a delimiter or '}'.
_AFTER_OPEN, _AFTER_DELIMITER, _AFTER_VALUE = range(3)


@functools.cache
def _array_tokens(delimiter: str) -> re.Pattern[str]:
    d = re.escape(delimiter)
    return re.compile(rf'{_QUOTED}|[{{}}]|{d}|[^{{}}"{d}]+', re.DOTALL)


def array_parser(element: Converter, delimiter: str = ",") -> Converter:
    """Return a parser for array literals whose elements `element` converts.

    Args:
        element: converter for one non-NULL element's text; `str` means keep the text.
        delimiter: the element type's `typdelim` (`;` for box, `,` for everything else).

    Returns:
        A function from the literal (e.g. `{1,NULL,3}`, `[0:1]={{"a b",c}}`) to nested lists,
        with NULL elements as None. Dimension decorations are dropped: lists start at index 0.
    """
    tokens = _array_tokens(delimiter)
    convert = None if element is str else element

    def parse(text: str) -> list[Any]:
        if text[:1] == "[":
            # "[lb:ub]...=" precedes the braces when a lower bound is not 1; it holds no '='.
            text = text[text.find("=") + 1 :]
        if text[:1] != "{" or text[-1:] != "}":
            raise _malformed("array literal", text)
        if '"' not in text and text.find("{", 1) < 0:
            body = text[1:-1]
            if not body:
                return []
            items = body.split(delimiter)
            if "}" in body or "" in items:
                raise _malformed("array literal", text)
            if _NULL_SPELLINGS.isdisjoint(items):
                return items if convert is None else list(map(convert, items))
            if convert is None:
                return [None if item in _NULL_SPELLINGS else item for item in items]
            return [None if item in _NULL_SPELLINGS else convert(item) for item in items]
        return _parse_array(text, tokens, convert, delimiter)

    return parse


def _parse_array(
    text: str, tokens: re.Pattern[str], convert: Converter | None, delimiter: str
) -> list[Any]:
    """Parse a nested or quoted array literal; the grammar is checked token by token."""
    found = tokens.findall(text)
    if "".join(found) != text:  # a character no token matches, e.g. an unterminated quote
        raise _malformed("array literal", text)
    root: list[Any] = []  # holds the top-level array, so no token needs a None check
    outer: list[list[Any]] = []
    current = root
    depth = 0
    leaf_depth = -1  # elements all sit at one depth: "{{1},2}" is not an array
    state = _AFTER_DELIMITER
    for token in found:
        first = token[0]
        if first == "{":
            if state == _AFTER_VALUE or 0 <= leaf_depth <= depth:
                break
            nested: list[Any] = []
            current.append(nested)
            outer.append(current)
            current = nested
            depth += 1
            state = _AFTER_OPEN
        elif first == "}":
            if state == _AFTER_DELIMITER or not outer:
                break
            current = outer.pop()
            depth -= 1
            state = _AFTER_VALUE
        elif token == delimiter:
            if state != _AFTER_VALUE:
                break
            state = _AFTER_DELIMITER
        else:
            if state == _AFTER_VALUE:
                break
            if leaf_depth != depth:
                if leaf_depth >= 0:
                    break
                leaf_depth = depth
            if first == '"':
                value = _unquote(token)
                current.append(value if convert is None else convert(value))
            elif token in _NULL_SPELLINGS:
                current.append(None)
            else:
                current.append(token if convert is None else convert(token))
            state = _AFTER_VALUE
    else:
        if depth == 0 and len(root) == 1:
            array: list[Any] = root[0]
            return array
    raise _malformed("array literal", text)


def parse_hstore(text: str) -> dict[str, str | None]:
    """Parse hstore output: `"k"=>"v", "k2"=>NULL` (keys and values quoted, NULL bare)."""
    result: dict[str, str | None] = {}
    match_pair = _HSTORE_PAIR.match
    end = len(text)
    pos = 0
    while pos < end:
        match = match_pair(text, pos)
        if match is None:
            break
        key, value = match.group(1, 2)
        result[_unquote(key)] = None if value is None else _unquote(value)
        pos = match.end()
        if pos == end:
            return result
        if not text.startswith(", ", pos):
            break
        pos += 2
    else:
        if not text:
            return result
    raise _malformed("hstore", text)
