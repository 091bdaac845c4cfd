"""Fuzzing the decoder: whatever the bytes, it returns a message or raises ProtocolError.

A second oracle makes acceptance meaningful: anything the decoder accepts must re-encode to exactly
the input bytes, so it cannot accept a message by misreading or skipping part of it.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tap_pgcdc.errors import ProtocolError
from tap_pgcdc.replication.decoder import decode
from tests.unit import pgoutput_build as build
from tests.unit.test_decoder import messages

TYPE_BYTES = b"BCORYIUDTMSEcAbPKrp"
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_decodes_or_rejects(data: bytes, in_stream: bool) -> None:
    try:
        message = decode(data, in_stream=in_stream)
    except ProtocolError:
        return
    assert build.encode(message) == data


@FUZZ
@given(st.binary(max_size=64), st.booleans())
def test_random_bytes(data: bytes, in_stream: bool) -> None:
    check_decodes_or_rejects(data, in_stream)


@FUZZ
@given(st.sampled_from(TYPE_BYTES), st.binary(max_size=64), st.booleans())
def test_random_bodies_behind_known_type_bytes(
    type_byte: int, body: bytes, in_stream: bool
) -> None:
    check_decodes_or_rejects(bytes([type_byte]) + body, in_stream)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A valid message with a few random flips, insertions, deletions or a truncation."""
    data = bytearray(build.encode(draw(messages)))
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif at == len(data):
            continue
        elif operation == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set":
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, *TYPE_BYTES, *b"ntubKON"]))
        elif operation == "delete":
            del data[at]
        else:
            del data[at:]
    return bytes(data), draw(st.booleans())


@FUZZ
@given(mutated())
def test_mutated_valid_messages(case: tuple[bytes, bool]) -> None:
    check_decodes_or_rejects(*case)


HUGE_DECLARATIONS = {
    "text length 2**31-1": bytes.fromhex("49 00004001 4E 0001 74 7FFFFFFF 41"),
    "binary length 2**31-1": bytes.fromhex("49 00004001 4E 0001 62 7FFFFFFF 41"),
    "column count 32767": bytes.fromhex("49 00004001 4E 7FFF 6E 6E"),
    "column count 65535": bytes.fromhex("55 00004001 4B FFFF 6E 4E 0000"),
    "relation columns 65535": bytes.fromhex("52 00004001 00 7500 64 FFFF 00 6100 00000017"),
    "truncate relations 2**32-1": bytes.fromhex("54 FFFFFFFF 00 00004001"),
    "message content 2**31-1": bytes.fromhex("4D 00 00000000 00000001 00 7FFFFFFF 41"),
}


@pytest.mark.parametrize("data", HUGE_DECLARATIONS.values(), ids=HUGE_DECLARATIONS.keys())
def test_huge_declared_lengths_fail_fast_without_allocating(data: bytes) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ProtocolError, match="truncated"):
            decode(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 256 * 1024
