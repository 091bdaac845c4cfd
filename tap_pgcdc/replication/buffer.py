"""A bounds-checked big-endian reader for pgoutput message bodies.

Every read checks that the bytes are there before touching them, so a short or corrupt message
fails with a :class:`ProtocolError` naming the message and offset, never with ``IndexError`` or
``struct.error`` and never by silently reading a truncated slice.
"""

from __future__ import annotations

import struct

from tap_pgcdc.errors import ProtocolError

# Precompiled codecs: network byte order, as every integer in the replication protocol is.
U8 = struct.Struct(">B")
I16 = struct.Struct(">h")
U16 = struct.Struct(">H")
I32 = struct.Struct(">i")
U32 = struct.Struct(">I")
I64 = struct.Struct(">q")
U64 = struct.Struct(">Q")

_unpack_u8 = U8.unpack_from
_unpack_i16 = I16.unpack_from
_unpack_u16 = U16.unpack_from
_unpack_i32 = I32.unpack_from
_unpack_u32 = U32.unpack_from
_unpack_i64 = I64.unpack_from
_unpack_u64 = U64.unpack_from


def truncated(what: str, need: int, offset: int, have: int) -> ProtocolError:
    """Build the error for a read past the end of a message.

    Args:
        what: The message name, e.g. ``"Insert"``.
        need: How many bytes the read needed.
        offset: Where the read started, counting the type byte as offset 0.
        have: How many bytes were left from ``offset``.

    Returns:
        The error to raise (returned, not raised, so callers write ``raise truncated(...)`` and
        type checkers see the branch end).
    """
    return ProtocolError(
        f"{what} message truncated: need {need} bytes at offset {offset}, have {max(have, 0)}"
    )


class Reader:
    """Sequential big-endian reads over one message, raising ProtocolError on short input.

    Integer widths and signedness follow the protocol: OIDs, xids and counts are unsigned,
    LSNs are uint64, timestamps int64 and type modifiers int32.
    """

    __slots__ = ("_buf", "_end", "_pos", "_what")

    def __init__(self, data: bytes | bytearray | memoryview, what: str, pos: int = 0) -> None:
        """Start reading ``data`` at ``pos``.

        Args:
            data: The whole message. A memoryview is copied to bytes once, because finding a
                string's NUL terminator needs ``bytes.find``.
            what: The message name used in error messages, e.g. ``"Relation"``.
            pos: The offset of the first byte to read.
        """
        self._buf = data.tobytes() if isinstance(data, memoryview) else data
        self._end = len(self._buf)
        self._pos = pos
        self._what = what

    @property
    def pos(self) -> int:
        """The offset of the next byte to read."""
        return self._pos

    def remaining(self) -> int:
        """Return how many bytes are left to read."""
        return self._end - self._pos

    def at_end(self) -> bool:
        """Return whether every byte has been read."""
        return self._pos >= self._end

    def expect_end(self) -> None:
        """Raise ProtocolError if bytes are left: a layout bug or a corrupt message.

        Raises:
            ProtocolError: If any byte is left unread.
        """
        if self._pos != self._end:
            raise ProtocolError(
                f"{self._what} message has {self._end - self._pos} unexpected trailing bytes "
                f"at offset {self._pos}"
            )

    def _take(self, n: int) -> int:
        """Advance past ``n`` bytes and return where they start, or raise if they are not there."""
        pos = self._pos
        if pos + n > self._end:
            raise truncated(self._what, n, pos, self._end - pos)
        self._pos = pos + n
        return pos

    def read_u8(self) -> int:
        """Read an unsigned 8-bit integer (flags, kind bytes)."""
        value: int = _unpack_u8(self._buf, self._take(1))[0]
        return value

    def read_i16(self) -> int:
        """Read a signed 16-bit integer."""
        value: int = _unpack_i16(self._buf, self._take(2))[0]
        return value

    def read_u16(self) -> int:
        """Read an unsigned 16-bit integer (column counts)."""
        value: int = _unpack_u16(self._buf, self._take(2))[0]
        return value

    def read_i32(self) -> int:
        """Read a signed 32-bit integer (lengths, type modifiers)."""
        value: int = _unpack_i32(self._buf, self._take(4))[0]
        return value

    def read_u32(self) -> int:
        """Read an unsigned 32-bit integer (OIDs, xids, counts)."""
        value: int = _unpack_u32(self._buf, self._take(4))[0]
        return value

    def read_i64(self) -> int:
        """Read a signed 64-bit integer (timestamps: microseconds since 2000-01-01 UTC)."""
        value: int = _unpack_i64(self._buf, self._take(8))[0]
        return value

    def read_u64(self) -> int:
        """Read an unsigned 64-bit integer (LSNs)."""
        value: int = _unpack_u64(self._buf, self._take(8))[0]
        return value

    def read_u32s(self, count: int) -> tuple[int, ...]:
        """Read ``count`` unsigned 32-bit integers (e.g. relation OIDs).

        The whole length is checked before anything is unpacked, so a corrupt count fails at
        once instead of allocating for it.
        """
        if count < 0:
            raise ProtocolError(f"{self._what} message has negative count {count}")
        start = self._take(4 * count)
        return struct.unpack_from(f">{count}I", self._buf, start)

    def read_bytes(self, n: int) -> bytes:
        """Read exactly ``n`` bytes.

        Raises:
            ProtocolError: If ``n`` is negative or fewer than ``n`` bytes are left.
        """
        if n < 0:
            raise ProtocolError(
                f"{self._what} message has negative length {n} before offset {self._pos}"
            )
        start = self._take(n)
        return bytes(self._buf[start : start + n])

    def read_cstring(self) -> str:
        """Read a NUL-terminated UTF-8 string and step past its terminator.

        Raises:
            ProtocolError: If there is no NUL before the end, or the bytes are not UTF-8.
        """
        start = self._pos
        nul = self._buf.find(b"\0", start, self._end)
        if nul < 0:
            raise ProtocolError(
                f"{self._what} message truncated: string at offset {start} has no NUL terminator"
            )
        self._pos = nul + 1
        try:
            return self._buf[start:nul].decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(
                f"{self._what} message has a string at offset {start} that is not valid UTF-8 "
                f"({exc.reason}); the replication connection must use client_encoding UTF8"
            ) from None
