"""LSN text form: parse, format, round trip and integer order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_pgcdc.pg.lsn import MAX_LSN, format_lsn, parse_lsn


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/16B3748", 0x16B3748),
        ("16/B374D848", 0x16_B374D848),
        ("1/0", 2**32),
        ("FFFFFFFF/FFFFFFFF", MAX_LSN),
    ],
)
def test_fixed_examples_parse_and_format(text: str, value: int) -> None:
    assert parse_lsn(text) == value
    assert format_lsn(value) == text


def test_parse_accepts_lower_case_and_leading_zeros_but_formats_canonically() -> None:
    assert parse_lsn("16/b374d848") == 0x16_B374D848
    assert format_lsn(parse_lsn("00000016/0B374D84")) == "16/B374D84"


@given(st.integers(min_value=0, max_value=MAX_LSN))
def test_round_trip(value: int) -> None:
    text = format_lsn(value)
    assert parse_lsn(text) == value
    assert text == text.upper()


@pytest.mark.parametrize(
    ("low", "high"),
    [("0/9", "0/A"), ("0/FFFFFFFF", "1/0"), ("0/16B3748", "0/16B3749"), ("9/0", "10/0")],
)
def test_order_is_integer_order(low: str, high: str) -> None:
    assert parse_lsn(high) > parse_lsn(low)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "/",
        "0/",
        "/0",
        "0//0",
        "0/0/0",
        "0x1/0",
        "+1/0",
        "-1/0",
        "1_0/0",
        " 0/0",
        "0/0 ",
        "0/0\n",
        "123456789/0",
        "0/123456789",
        "G/0",
        "0/\u0661",  # an Arabic-Indic digit: int() would take it, Postgres would not
    ],
)
def test_parse_rejects_garbage_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="invalid LSN") as info:
        parse_lsn(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("value", [-1, MAX_LSN + 1])
def test_format_rejects_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="invalid LSN"):
        format_lsn(value)
