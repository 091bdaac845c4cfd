"""Slot-loss and bookmark decisions: pure functions over facts the run fetched once.

The run and `--test` call the same functions; neither changes anything here. The run then acts
on the verdict (drop the invalidated slot, mark streams for a re-snapshot); `--test` only
reports it. Every rule below exists so that a gap in the changes is never skipped silently.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from tap_pgcdc.errors import SlotError
from tap_pgcdc.pg.lsn import format_lsn

if t.TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, slots=True)
class SlotFacts:
    """What the decision needs to know about the tap's slot, from pg_replication_slots."""

    name: str
    exists: bool
    confirmed_flush_lsn: int | None = None
    invalidation: tuple[str, str] | None = None  # (what the catalog says, why), if invalidated


@dataclass(frozen=True, slots=True)
class SlotRecovery:
    """The verdict: which streams must be snapshotted again, and whether to drop the slot."""

    lost: tuple[str, ...] = ()  # streams whose bookmarks point at changes that are gone
    drop_slot: bool = False  # the slot is invalidated: drop it before creating it again
    reason: str = ""  # why, for the warning the run logs

    @property
    def needed(self) -> bool:
        """Whether the run must recover at all."""
        return bool(self.lost) or self.drop_slot

    def describe(self, *, slot_missing: bool) -> str:
        """What the recovery does, for the run's warning and the --test report."""
        return (
            f"{self.reason}. on_slot_lost = resnapshot: snapshotting "
            f"{', '.join(self.lost) or 'no stream'} again"
            f"{' with a new slot' if self.drop_slot or slot_missing else ''}."
        )


def plan_slot_recovery(
    slot: SlotFacts, positions: Mapping[str, int | None], *, resnapshot: bool
) -> SlotRecovery:
    """Find streams whose changes the slot can no longer deliver; refuse, or plan re-snapshots.

    Changes are lost when the slot is gone while the state holds positions in it (dropped, or a
    failover to a server without it), when the server invalidated it (wal_status = lost), or
    when a bookmark is older than its confirmed position (the server starts decoding there,
    skipping what lies between). Reading on would leave a silent gap. With on_slot_lost =
    resnapshot those streams lose their bookmarks and are snapshotted again after an
    ACTIVATE_VERSION; the state keeps the mark, so a re-snapshot interrupted before it starts
    still sends it.

    Args:
        slot: The tap's slot as the server reports it.
        positions: Each LOG_BASED stream's bookmark (None: no position yet).
        resnapshot: on_slot_lost = resnapshot.

    Raises:
        SlotError: Changes were lost and on_slot_lost is fail.
    """
    bookmarked = [(name, pos) for name, pos in positions.items() if pos is not None]
    names = ", ".join(name for name, _ in bookmarked)
    drop = False
    if not slot.exists:
        lost = bookmarked
        why = (
            f"Replication slot {slot.name!r} does not exist, but the input state holds "
            f"positions in it for {names}: the slot was dropped (or the server was replaced, "
            "e.g. by a failover to a standby without it), so the changes since those "
            "positions are lost"
        )
    elif slot.invalidation is not None:
        lost, drop = bookmarked, True
        why = (
            f"Replication slot {slot.name!r} was invalidated ({slot.invalidation[0]}): "
            f"{slot.invalidation[1]}"
        )
    else:
        confirmed = slot.confirmed_flush_lsn or 0
        lost = [(name, pos) for name, pos in bookmarked if pos < confirmed]
        lowest = min((pos for _, pos in lost), default=0)
        why = (
            f"The state's position {format_lsn(lowest)} for "
            f"{', '.join(name for name, _ in lost)} is older than slot {slot.name}'s confirmed "
            f"position {format_lsn(confirmed)}: the changes between them are no longer "
            "available (this happens when the tap is given an older state than the one it "
            "last confirmed: a restored target, another state id)"
        )
    if not lost and not drop:
        return SlotRecovery()
    if not resnapshot:
        msg = (
            f"{why}. Continuing would leave a silent gap in the target. Fix: set on_slot_lost "
            "= resnapshot to "
            + ("drop and recreate the slot and " if drop else "")
            + ("create the slot and " if not slot.exists else "")
            + "snapshot the affected streams again (an ACTIVATE_VERSION first lets targets "
            "that support it drop rows deleted meanwhile), or pass the latest state if this "
            "one is stale, or run without state to snapshot everything again."
        )
        raise SlotError(msg)
    return SlotRecovery(lost=tuple(name for name, _ in lost), drop_slot=drop, reason=why)


def confirmable_position(
    slot_name: str, confirmed_flush_lsn: int | None, positions: Mapping[str, int | None]
) -> int:
    """The LSN this run may confirm to the slot: the lowest bookmark of the input state.

    The input state is what the target stored (Meltano hands the tap the last STATE the target
    emitted). Confirming it lets Postgres recycle WAL the target no longer needs; confirming
    anything past it could drop changes the target never stored. 0: nothing to confirm.

    Raises:
        SlotError: A bookmark is older than the slot's confirmed position (a silent gap).
    """
    known = [pos for pos in positions.values() if pos is not None]
    if not known:
        return 0
    lowest = min(known)
    confirmed = confirmed_flush_lsn or 0
    behind = [name for name, pos in positions.items() if pos is not None and pos < confirmed]
    if behind:
        msg = (
            f"The state's position {format_lsn(lowest)} for {', '.join(behind)} is older "
            f"than slot {slot_name}'s confirmed position {format_lsn(confirmed)}: changes "
            "between them are no longer available, so continuing would leave a silent gap. "
            "This happens when the tap is given an older state than the one it last "
            "confirmed (a restored target, another state id). Fix: pass the latest state, or "
            "set on_slot_lost = resnapshot to snapshot these streams again."
        )
        raise SlotError(msg)
    return lowest
