"""The input state's checks: a bad state is an error naming the fix, never a silent reset."""

from __future__ import annotations

import pytest

from tap_pgcdc.errors import StateError
from tap_pgcdc.state import check_identity, check_input_state, checked_state_text, identity_record


def test_a_state_file_must_hold_a_json_object() -> None:
    assert checked_state_text('{"bookmarks": {}}') == '{"bookmarks": {}}'
    with pytest.raises(StateError, match="is not valid JSON"):
        checked_state_text("{")
    with pytest.raises(StateError, match="is a JSON list, not an object"):
        checked_state_text("[]")


def test_the_identity_is_returned_and_bookmarks_are_checked() -> None:
    state = {
        "bookmarks": {"public-t": {"lsn": "0/16B3748", "version": 5}},
        "tap_pgcdc": {"slot_name": "tap", "system_identifier": "1"},
    }
    assert check_input_state(state) == {"slot_name": "tap", "system_identifier": "1"}
    assert check_input_state({}) is None


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ([], "The input state is not a JSON object"),
        ({"bookmarks": []}, "`bookmarks` is not an object"),
        ({"bookmarks": {"s": 1}}, "State bookmark for 's' is not an object"),
        ({"bookmarks": {"s": {"lsn": "nope"}}}, "State bookmark for 's' has an invalid lsn"),
        ({"bookmarks": {"s": {"snapshot": 3}}}, "has an invalid snapshot progress 3"),
        (
            {"bookmarks": {"s": {"snapshot": {"lsn": "x/y", "after": None}}}},
            "has an invalid snapshot.lsn",
        ),
        ({"bookmarks": {"s": {"version": True}}}, "has an invalid version True"),
        ({"bookmarks": {"s": {"publication": 7}}}, "has an invalid publication 7"),
        (
            {"bookmarks": {"s": {"publication": {"oid": 7, "member": "x"}}}},
            "has an invalid publication {'oid': 7, 'member': 'x'}",
        ),
        ({"tap_pgcdc": "x"}, "The input state's 'tap_pgcdc' is not an object"),
    ],
)
def test_malformed_states_are_refused_with_the_fix(state: object, message: str) -> None:
    with pytest.raises(StateError, match="Fix: ") as caught:
        check_input_state(state)
    assert message in str(caught.value)


def test_a_state_of_another_slot_or_cluster_is_refused() -> None:
    mine = identity_record(slot_name="tap", system_identifier="42")
    check_identity(mine, slot_name="tap", system_identifier="42")
    check_identity(None, slot_name="tap", system_identifier="42")
    with pytest.raises(StateError, match="written for slot 'other'"):
        check_identity({"slot_name": "other"}, slot_name="tap", system_identifier="42")
    with pytest.raises(StateError, match="another PostgreSQL cluster"):
        check_identity({"system_identifier": "7"}, slot_name="tap", system_identifier="42")
