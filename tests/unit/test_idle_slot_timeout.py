"""PostgreSQL 18's idle_replication_slot_timeout: the idle time, the warning, the invalidation error.

Pure judgements over hand-built facts (the run and `--test` share them); the real server's side
is in tests/integration/test_idle_timeout.py.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from tap_pgcdc import recovery
from tap_pgcdc.checks import idle_slot_warning, slot_facts
from tap_pgcdc.errors import SlotError, StateError
from tap_pgcdc.replication.idle import idle_seconds, idle_warning
from tap_pgcdc.replication.slot import judge_slot
from tap_pgcdc.state import check_input_state, identity_record, last_run_time
from tests.facts import server_info
from tests.unit.test_judge_server_slot import slot_facts as judge_facts
from tests.unit.test_judge_server_slot import slot_info

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


def test_the_idle_time_counts_from_the_later_of_the_state_and_the_slot() -> None:
    assert idle_seconds(NOW, NOW - 3 * HOUR, NOW - 2 * HOUR) == 7200
    assert idle_seconds(NOW, NOW - HOUR, NOW - 2 * HOUR) == 3600
    assert idle_seconds(NOW, NOW - HOUR, None) == 3600  # the slot is read now
    assert idle_seconds(NOW, None, NOW - 2 * HOUR) == 7200  # a state from before last_run_at
    assert idle_seconds(NOW, None, None) is None
    assert idle_seconds(None, NOW, NOW) is None
    assert idle_seconds(NOW, NOW + HOUR, None) == 0  # clocks never make it negative


def test_a_warning_past_half_the_timeout_names_the_setting_and_the_fix() -> None:
    assert idle_warning("tap_pgcdc", 6 * 3600, 3 * 3600) is None  # exactly half: not yet
    assert idle_warning("tap_pgcdc", 0, 10**9) is None  # the timeout is off
    assert idle_warning("tap_pgcdc", 6 * 3600, None) is None
    assert idle_warning("tap_pgcdc", 6 * 3600, 4 * 3600 + 90) == (
        "Replication slot 'tap_pgcdc' was idle for 4h 1min before this run, 67% of "
        "idle_replication_slot_timeout (6h) on this server: PostgreSQL invalidates a slot idle "
        "for longer at its next checkpoint, and the changes it held are then lost (the streams "
        "must be snapshotted again). Fix: run the tap at least every 3h, or raise "
        "idle_replication_slot_timeout (ALTER SYSTEM SET idle_replication_slot_timeout = "
        "'1d'; SELECT pg_reload_conf();), or set it to 0."
    )
    short = idle_warning("s", 10, 7)
    assert short is not None
    assert "idle for 7 s" in short and "(10 s)" in short and "every 5 s" in short
    assert "= '40s'" in short


def test_run_and_preflight_warn_from_the_server_slot_and_state_facts() -> None:
    info = server_info(version_num=180001, idle_slot_timeout=3600, now=NOW)
    identity = identity_record(
        slot_name="tap_pgcdc", system_identifier="7310000000000000000", last_run_at=NOW - HOUR
    )
    slot = slot_info(inactive_since=NOW - 40 * datetime.timedelta(minutes=1))
    warning = idle_slot_warning(info, slot, identity)
    assert warning is not None and "idle for 40min" in warning and "67%" in warning
    assert idle_slot_warning(info, slot_info(inactive_since=NOW - HOUR / 4), identity) is None
    assert idle_slot_warning(info, None, identity) is None  # no slot: nothing idle to lose
    lost = slot_info(invalidation_reason="idle_timeout", inactive_since=NOW - 2 * HOUR)
    assert idle_slot_warning(info, lost, identity) is None  # the error says it instead
    older = server_info(version_num=170005, now=NOW)  # no timeout before PostgreSQL 18
    assert idle_slot_warning(older, slot_info(inactive_since=NOW - 50 * HOUR), identity) is None


PREVENTION = (
    " To prevent it, run the tap more often than idle_replication_slot_timeout (SHOW "
    "idle_replication_slot_timeout;), or raise it (ALTER SYSTEM SET "
    "idle_replication_slot_timeout = '2d'; SELECT pg_reload_conf();), or set it to 0 to turn "
    "it off."
)


def test_a_slot_invalidated_for_being_idle_names_the_setting_and_the_recovery() -> None:
    idle = slot_info(invalidation_reason="idle_timeout")
    ((error,),) = [judge_slot(judge_facts(idle), create=True)]
    assert isinstance(error, SlotError)
    assert str(error) == (
        "Replication slot 'tap_pgcdc' was invalidated (invalidation_reason=idle_timeout): it was "
        "idle for longer than idle_replication_slot_timeout. The changes it held cannot be read any more. Fix: recover by "
        "re-snapshotting: set on_slot_lost = resnapshot and run the tap (it drops and recreates "
        "the slot and snapshots the streams again), or drop the slot with SELECT "
        "pg_drop_replication_slot('tap_pgcdc'); then run the tap without its state." + PREVENTION
    )
    # The run's own decision over the same facts (a state with positions in the slot).
    with pytest.raises(SlotError) as raised:
        recovery.plan_slot_recovery(
            slot_facts("tap_pgcdc", idle), {"public-a": 0x1_6000_0100}, resnapshot=False
        )
    message = str(raised.value)
    assert message.startswith(
        "Replication slot 'tap_pgcdc' was invalidated (invalidation_reason=idle_timeout): it was "
        "idle for longer than idle_replication_slot_timeout"
    )
    assert (
        "Fix: set on_slot_lost = resnapshot to drop and recreate the slot and snapshot" in message
    )
    assert message.endswith(PREVENTION)
    plan = recovery.plan_slot_recovery(
        slot_facts("tap_pgcdc", idle), {"public-a": 0x1_6000_0100}, resnapshot=True
    )
    assert (plan.lost, plan.drop_slot) == (("public-a",), True)
    # Other invalidations keep their own advice.
    assert slot_facts("tap_pgcdc", slot_info(invalidation_reason="wal_removed")).prevention == ""


def test_the_state_keeps_the_time_of_the_last_run_and_old_states_stay_valid() -> None:
    record = identity_record(slot_name="s", system_identifier="1", last_run_at=NOW)
    assert record == {"slot_name": "s", "system_identifier": "1", "last_run_at": NOW.isoformat()}
    assert last_run_time(check_input_state({"tap_pgcdc": record})) == NOW
    old: dict[str, Any] = {"tap_pgcdc": {"slot_name": "s", "system_identifier": "1"}}
    assert last_run_time(check_input_state(old)) is None
    assert check_input_state({"bookmarks": {}}) is None
    for bad in ("yesterday", "2026-12-02T12:00:00", 17):
        with pytest.raises(StateError, match=r"tap_pgcdc.last_run_at .* Fix: "):
            check_input_state({"tap_pgcdc": {**record, "last_run_at": bad}})
