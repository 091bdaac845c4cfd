"""Singer message output: exact numbers, strict JSON, stdout flushed at STATE.

Two differences from the SDK's writer, both about fidelity and speed:
- Decimals are written with every digit, and a non-finite float is an error instead of a null
  (the SDK's default writes null, which silently replaces a value). NaN and ±Infinity of real,
  double precision and numeric columns arrive here as the strings "NaN", "Infinity",
  "-Infinity" (typemap.py), so the output is strict JSON (RFC 8259) that every parser reads.
- stdout is flushed when a STATE message is written rather than after every record. A STATE is
  only ever written after the records it covers, so a crash before a flush loses at most records
  whose STATE was never emitted: the next run, resuming from the previous state, sends them again.
  This holds even where PYTHONUNBUFFERED is set (Docker images often set it), which would
  otherwise turn every record into a write system call.
"""

from __future__ import annotations

import io
import sys
import typing as t

from singer_sdk.singerlib.encoding import SimpleSingerWriter
from singer_sdk.singerlib.messages import StateMessage

from tap_pgcdc.output.jsontext import serialize

if t.TYPE_CHECKING:
    from singer_sdk.singerlib.encoding.simple import Message

__all__ = ["PgCdcWriter", "buffer_stdout", "serialize"]


def buffer_stdout() -> None:
    """Let stdout buffer between flushes, whatever PYTHONUNBUFFERED says (see module docstring)."""
    out = sys.stdout
    # Only the process's own stdout: a replacement (a test's capture) keeps its behaviour.
    if out is sys.__stdout__ and isinstance(out, io.TextIOWrapper) and out.write_through:
        out.reconfigure(write_through=False)


class PgCdcWriter(SimpleSingerWriter):
    """The tap's Singer writer."""

    def __init__(self) -> None:
        super().__init__()
        buffer_stdout()

    def serialize_message(self, message: Message) -> str:
        """One message as a JSON line (without the newline), see `jsontext.serialize`."""
        return serialize(message.to_dict())

    def write_message(self, message: Message) -> None:
        """Write one message; flush stdout after a STATE (see the module docstring)."""
        out = sys.stdout
        out.write(self.serialize_message(message) + "\n")
        if isinstance(message, StateMessage):
            out.flush()
