"""The slot-loss and confirmation decisions, as pure functions over hand-built facts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_pgcdc.errors import SlotError
from tap_pgcdc.recovery import SlotFacts, SlotRecovery, confirmable_position, plan_slot_recovery

SLOT = SlotFacts(name="tap", exists=True, confirmed_flush_lsn=1000)
LOST = ("wal_status = lost", "the WAL it needed was removed")


def test_a_usable_slot_and_current_bookmarks_need_no_recovery() -> None:
    positions = {"public-a": 1000, "public-b": 2000, "public-new": None}
    for resnapshot in (False, True):
        assert plan_slot_recovery(SLOT, positions, resnapshot=resnapshot) == SlotRecovery()


def test_a_missing_slot_without_bookmarks_is_simply_created() -> None:
    missing = SlotFacts(name="tap", exists=False)
    assert plan_slot_recovery(missing, {"public-a": None}, resnapshot=False) == SlotRecovery()


def test_a_missing_slot_with_bookmarks_fails_naming_the_recovery() -> None:
    missing = SlotFacts(name="tap", exists=False)
    with pytest.raises(SlotError) as caught:
        plan_slot_recovery(missing, {"public-a": 5, "public-b": None}, resnapshot=False)
    message = str(caught.value)
    assert "Replication slot 'tap' does not exist" in message
    assert "positions in it for public-a:" in message
    assert "Fix: set on_slot_lost = resnapshot to create the slot and snapshot" in message


def test_a_missing_slot_with_resnapshot_snapshots_every_bookmarked_stream() -> None:
    missing = SlotFacts(name="tap", exists=False)
    plan = plan_slot_recovery(missing, {"public-a": 5, "public-b": None}, resnapshot=True)
    assert plan.lost == ("public-a",)
    assert not plan.drop_slot
    assert plan.describe(slot_missing=True).endswith(
        "on_slot_lost = resnapshot: snapshotting public-a again with a new slot."
    )


def test_an_invalidated_slot_is_dropped_and_every_bookmarked_stream_resnapshotted() -> None:
    invalid = SlotFacts(name="tap", exists=True, confirmed_flush_lsn=1000, invalidation=LOST)
    positions = {"public-a": 1000, "public-b": 3000, "public-c": None}
    plan = plan_slot_recovery(invalid, positions, resnapshot=True)
    assert plan == SlotRecovery(
        lost=("public-a", "public-b"),
        drop_slot=True,
        reason="Replication slot 'tap' was invalidated (wal_status = lost): "
        "the WAL it needed was removed",
    )
    with pytest.raises(SlotError, match="drop and recreate the slot and snapshot"):
        plan_slot_recovery(invalid, positions, resnapshot=False)


def test_an_invalidated_slot_is_dropped_even_without_bookmarks() -> None:
    invalid = SlotFacts(name="tap", exists=True, invalidation=LOST)
    plan = plan_slot_recovery(invalid, {"public-a": None}, resnapshot=True)
    assert plan.drop_slot and plan.lost == () and plan.needed
    assert "snapshotting no stream again with a new slot." in plan.describe(slot_missing=False)


def test_bookmarks_older_than_the_confirmed_position_are_lost() -> None:
    positions = {"public-a": 999, "public-b": 1000, "public-c": 10}
    plan = plan_slot_recovery(SLOT, positions, resnapshot=True)
    assert plan.lost == ("public-a", "public-c")
    assert not plan.drop_slot
    assert "The state's position 0/A for public-a, public-c is older" in plan.reason
    with pytest.raises(SlotError, match="older than slot tap's confirmed position 0/3E8"):
        plan_slot_recovery(SLOT, positions, resnapshot=False)


def test_the_run_confirms_exactly_the_lowest_input_bookmark() -> None:
    assert confirmable_position("tap", 1000, {"a": 4000, "b": 1000, "c": None}) == 1000
    assert confirmable_position("tap", None, {"a": 7}) == 7
    assert confirmable_position("tap", 1000, {"a": None}) == 0
    assert confirmable_position("tap", 1000, {}) == 0


def test_confirming_behind_the_slot_is_refused() -> None:
    with pytest.raises(SlotError, match=r"The state's position 0/1 for b is older"):
        confirmable_position("tap", 1000, {"a": 4000, "b": 1})


@given(
    confirmed=st.integers(min_value=0, max_value=2**40),
    positions=st.dictionaries(
        st.text("abc", min_size=1, max_size=3),
        st.none() | st.integers(min_value=0, max_value=2**40),
        max_size=5,
    ),
)
def test_the_confirmed_position_never_passes_a_bookmark(
    confirmed: int, positions: dict[str, int | None]
) -> None:
    """Whatever the state holds, the run confirms no position beyond any stream's bookmark."""
    try:
        lsn = confirmable_position("tap", confirmed, positions)
    except SlotError:
        assert any(p is not None and p < confirmed for p in positions.values())
        return
    known = [p for p in positions.values() if p is not None]
    assert lsn == (min(known) if known else 0)
    assert all(lsn <= p for p in known)
    # And the slot-loss plan agrees: nothing is lost exactly when confirming is allowed.
    plan = plan_slot_recovery(
        SlotFacts(name="tap", exists=True, confirmed_flush_lsn=confirmed),
        positions,
        resnapshot=True,
    )
    assert not plan.needed
