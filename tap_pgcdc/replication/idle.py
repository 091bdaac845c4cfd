"""PostgreSQL 18's idle_replication_slot_timeout: how long the slot has been idle, and the warning.

PostgreSQL 18 invalidates, at a checkpoint, a slot that no connection has read for longer than
`idle_replication_slot_timeout` (seconds; 0, the default, turns it off): exactly what a tap
scheduled every few hours looks like to the server. Once invalidated, the changes it held are
lost. The run and `--test` measure the time since the slot was last read, from the state's
`last_run_at` (the server's time at the start of the run that wrote it) and the slot's own
`inactive_since` (PostgreSQL 17+), and warn when it passes `WARN_FRACTION` of the timeout.
"""

from __future__ import annotations

import datetime

WARN_FRACTION = 0.5
"""Warn when the slot has been idle for more than this share of the timeout."""

IDLE_SETTING = "idle_replication_slot_timeout"

PREVENTION = (
    f"To prevent it, run the tap more often than {IDLE_SETTING} (SHOW {IDLE_SETTING};), or "
    f"raise it (ALTER SYSTEM SET {IDLE_SETTING} = '2d'; SELECT pg_reload_conf();), or set it "
    "to 0 to turn it off."
)
"""What keeps an idle slot from being invalidated again (appended to the invalidation error)."""


def idle_seconds(
    now: datetime.datetime | None,
    last_run_at: datetime.datetime | None,
    inactive_since: datetime.datetime | None,
) -> float | None:
    """Seconds since the slot was last read (None: unknown).

    The later of the two times counts: the server measures from the slot's `inactive_since`
    (when the last reader let go of it), which a run, or another reader, moves past the state's
    time; a slot read now (`inactive_since` NULL) falls back to the state's time.
    """
    known = [moment for moment in (last_run_at, inactive_since) if moment is not None]
    if now is None or not known:
        return None
    return max((now - max(known)).total_seconds(), 0.0)


def idle_warning(slot_name: str, timeout_seconds: int, idle: float | None) -> str | None:
    """The warning when the slot's idle time comes near the server's timeout, else None."""
    if timeout_seconds <= 0 or idle is None or idle <= timeout_seconds * WARN_FRACTION:
        return None
    share = idle / timeout_seconds
    return (
        f"Replication slot {slot_name!r} was idle for {_duration(idle)} before this run, "
        f"{share:.0%} of {IDLE_SETTING} ({_duration(timeout_seconds)}) on this server: "
        "PostgreSQL invalidates a slot idle for longer at its next checkpoint, and the "
        "changes it held are then lost (the streams must be snapshotted again). Fix: run the "
        f"tap at least every {_duration(timeout_seconds * WARN_FRACTION)}, or raise "
        f"{IDLE_SETTING} (ALTER SYSTEM SET {IDLE_SETTING} = "
        f"'{_setting_value(timeout_seconds * 4)}'; SELECT pg_reload_conf();), or set it to 0."
    )


def _duration(seconds: float) -> str:
    """3725 -> '1h 2min', 42 -> '42 s'."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}min"]
    return " ".join(part for part in parts if part and part != "0min") or f"{minutes}min"


def _setting_value(seconds: float) -> str:
    """A value for ALTER SYSTEM in the largest whole unit: 86400 -> '1d', 90 -> '90s'."""
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"
