"""Log sequence numbers (LSNs): 64-bit WAL positions.

LSNs are plain integers inside the tap, so they compare and subtract correctly; the ``X/Y`` text
form (two 32-bit halves in hex, as Postgres prints them) appears only at the edges: state
bookmarks, logs and SQL parameters.
"""

from __future__ import annotations

import re
from typing import NewType

Lsn = NewType("Lsn", int)
"""An LSN as an integer in ``0 .. 2**64 - 1``; a plain ``int`` works wherever it is expected."""

MAX_LSN = 2**64 - 1

# Postgres' own pg_lsn input accepts exactly 1-8 hex digits on each side of the slash and nothing
# else; int(..., 16) alone would also take "0x", "+", "_" and whitespace, so match first.
_LSN_TEXT = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def parse_lsn(text: str) -> Lsn:
    """Parse the ``X/Y`` text form of an LSN.

    Args:
        text: An LSN as Postgres prints it, e.g. ``"16/B374D848"`` (case-insensitive).

    Returns:
        The LSN as an integer: the high half shifted left 32 bits, plus the low half.

    Raises:
        ValueError: If ``text`` is not exactly two 1-8 digit hex numbers separated by ``/``.
    """
    match = _LSN_TEXT.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        msg = f"invalid LSN {text!r}: expected two hex numbers of 1-8 digits like '16/B374D848'"
        raise ValueError(msg)
    return Lsn(int(match.group(1), 16) << 32 | int(match.group(2), 16))


def format_lsn(lsn: int) -> str:
    """Format an LSN the way Postgres prints it.

    Args:
        lsn: An LSN as an integer in ``0 .. 2**64 - 1``.

    Returns:
        The ``X/Y`` form: upper-case hex halves without zero padding, e.g. ``"16/B374D848"``.

    Raises:
        ValueError: If ``lsn`` is outside the 64-bit unsigned range.
    """
    if not 0 <= lsn <= MAX_LSN:
        msg = f"invalid LSN {lsn!r}: must be an integer in 0..2**64-1"
        raise ValueError(msg)
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
