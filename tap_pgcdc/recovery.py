"""Slot-loss, publication-gap and bookmark decisions: pure functions over facts fetched once.

The run and `--test` call the same functions; neither changes anything here. The run then acts
on the verdict (drop the invalidated slot, mark streams for a re-snapshot); `--test` only
reports it. Every rule below exists so that a gap in the changes is never skipped silently:
where the log cannot deliver what happened to a stream's rows, the stream is snapshotted again
after an ACTIVATE_VERSION (on_slot_lost = resnapshot), or the run stops naming that recovery.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from tap_pgcdc.errors import SlotError
from tap_pgcdc.pg.lsn import format_lsn

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from tap_pgcdc.pg.shape import LeafFile, TableShape


@dataclass(frozen=True, slots=True)
class SlotFacts:
    """What the decision needs to know about the tap's slot, from pg_replication_slots."""

    name: str
    exists: bool
    confirmed_flush_lsn: int | None = None
    invalidation: tuple[str, str] | None = None  # (what the catalog says, why), if invalidated
    prevention: str = ""  # what keeps it from happening again (appended to the error)


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
            + (slot.prevention if drop else "")
        )
        raise SlotError(msg)
    return SlotRecovery(lost=tuple(name for name, _ in lost), drop_slot=drop, reason=why)


@dataclass(frozen=True, slots=True)
class Publishing:
    """How one LOG_BASED stream's table was published when its bookmark was written, and now."""

    stream: str
    position: int | None  # its bookmark (None: no position yet, so nothing to distrust)
    recorded: tuple[int, int] | None  # (publication OID, membership) kept with the bookmark
    member: int | None  # its membership now (`publication.membership`; None: not published)


_RESNAPSHOT_FIX = (
    "snapshot them again (an ACTIVATE_VERSION first lets targets that support it drop rows "
    "deleted meanwhile), or run without state to snapshot everything again"
)


def plan_publication_recovery(
    name: str, oid: int | None, streams: Sequence[Publishing], *, resnapshot: bool
) -> SlotRecovery:
    """Find streams whose changes were not published for a while; refuse, or plan re-snapshots.

    pgoutput sends a change only if its table was in the publication when the change was
    decoded, so a bookmark holds only while its table stayed published. It did not when the
    publication is gone, or is another one of the same name (dropped and created again: its
    OID differs from the one recorded with the bookmark; the slot cannot decode the changes
    made in between, PostgreSQL fails on each or, from 18, skips them), or when the table is
    not in it now (the stream was deselected or filtered out for a run, and the tap removed
    it; or ALTER PUBLICATION ... DROP TABLE) or was added again since (another membership).
    Those streams are snapshotted again after an ACTIVATE_VERSION with on_slot_lost =
    resnapshot; the read then starts at the new consistent point, past the gap. A bookmark
    recorded before the tap kept these facts is trusted while its table is published.

    Args:
        name: The publication_name setting.
        oid: The publication's OID now (None: it does not exist).
        streams: Each LOG_BASED stream's bookmark and membership, then and now.
        resnapshot: on_slot_lost = resnapshot.

    Raises:
        SlotError: Changes were not published and on_slot_lost is fail.
    """
    bookmarked = [s for s in streams if s.position is not None]
    if oid is None:
        lost = bookmarked
        why = (
            f"Publication {name!r} does not exist, but the input state holds positions for "
            f"{_names(lost)} read through it: it was dropped, and the changes made since are "
            "not published"
        )
    else:
        recorded = {s.stream: s.recorded[0] for s in bookmarked if s.recorded is not None}
        replaced = [s for s in bookmarked if recorded.get(s.stream, oid) != oid]
        if replaced:
            lost = bookmarked
            why = (
                f"Publication {name!r} was dropped and created again since the input state's "
                f"positions for {_names(replaced)} were written (its OID is {oid}, the state "
                f"recorded {recorded[replaced[0].stream]}): the "
                "changes made while it did not exist were never published"
            )
        else:
            lost = [
                s
                for s in bookmarked
                if s.member is None or (s.recorded is not None and s.recorded[1] != s.member)
            ]
            why = (
                f"The tables of {_names(lost)} were out of publication {name!r} for a while "
                "since their positions were written (the stream was deselected or filtered out "
                "for a run, and the tap removed its table; or ALTER PUBLICATION ... DROP "
                "TABLE), so their changes meanwhile were never published"
            )
    if not lost:
        return SlotRecovery()
    if not resnapshot:
        msg = (
            f"{why}. Continuing would leave a silent gap in the target. Fix: set on_slot_lost "
            f"= resnapshot to {_RESNAPSHOT_FIX}. With create_publication = false, first "
            "make the publication list them again."
        )
        raise SlotError(msg)
    return SlotRecovery(lost=tuple(s.stream for s in lost), reason=why)


def _names(streams: Sequence[Publishing]) -> str:
    return ", ".join(s.stream for s in streams)


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


@dataclass(frozen=True, slots=True)
class ShapeChange:
    """What DDL did to a table's existing rows since its bookmark recorded its shape."""

    reasons: tuple[str, ...] = ()  # each a change the log cannot express, as a phrase
    new_leaves: tuple[LeafFile, ...] = ()  # partitions attached since: their rows to check

    @property
    def needed(self) -> bool:
        """Whether the stream must be snapshotted again."""
        return bool(self.reasons)


def plan_shape_recovery(recorded: TableShape, live: TableShape) -> ShapeChange:
    """What of the DDL since `recorded` the log cannot express for the table's existing rows.

    The log carries every row change, so a table's rows stay right through DDL that leaves the
    rows as they are: a column added without a value for existing rows (they read NULL, as the
    target's do), a column dropped (the target keeps it, as Singer targets do), a type changed
    in place (varchar(10) to text: no rewrite, the values are the same). It cannot express:

    - the table dropped and created again under the same name (another OID): the old rows are
      gone without a delete, and the new table's first rows may predate the bookmark;
    - a column renamed (same attnum, another name): rows not changed since never get the new
      name's values;
    - a column added with a default, generated or identity value: existing rows took it;
    - a type changed by a rewrite (ALTER COLUMN ... TYPE ... USING): every value may differ;
    - a partition detached or dropped (its rows left the table), truncated (not in the log
      when partitions publish via their root) or rewritten, or detached and attached again.

    A partition attached since is returned in `new_leaves`: whether it brought rows (ATTACH
    PARTITION of a filled table) or was created empty (CREATE TABLE ... PARTITION OF, whose
    rows all arrive through the log) needs a look at its rows (`pg.shape.rows_predate_attach`).

    VACUUM FULL and CLUSTER of a partition give it a new file too; they are taken for a
    TRUNCATE (a re-snapshot that was not needed, never a gap).
    """
    if recorded.oid != live.oid:
        return ShapeChange(
            reasons=(
                f"the table was dropped and created again (its OID is {live.oid}, the "
                f"bookmark's was {recorded.oid})",
            )
        )
    reasons: list[str] = []
    before = {c.attnum: c for c in recorded.columns}
    old_files = {f.oid: f for f in recorded.files}
    rewritten = any(
        f.oid in old_files and old_files[f.oid].relfilenode != f.relfilenode for f in live.files
    )
    for column in live.columns:
        old = before.get(column.attnum)
        if old is None:
            if column.fills_existing:
                reasons.append(
                    f"column {column.name} was added with a default, generated or identity "
                    "value that existing rows took"
                )
        elif old.name != column.name:
            reasons.append(f"column {old.name} was renamed to {column.name}")
        elif (old.type_oid, old.typmod) != (column.type_oid, column.typmod) and rewritten:
            reasons.append(f"column {column.name} changed type and the table was rewritten")
    new_leaves: list[LeafFile] = []
    if live.partitioned:
        now = {f.oid: f for f in live.files}
        for old_file in recorded.files:
            leaf = now.get(old_file.oid)
            if leaf is None:
                reasons.append(f"partition {old_file.name} was detached or dropped")
            elif leaf.attached != old_file.attached:
                reasons.append(f"partition {leaf.name} was detached and attached again")
            elif leaf.relfilenode != old_file.relfilenode:
                reasons.append(
                    f"partition {leaf.name} was truncated or rewritten (a partition's "
                    "TRUNCATE is not in the log)"
                )
        new_leaves = [f for f in live.files if f.oid not in old_files]
    return ShapeChange(reasons=tuple(reasons), new_leaves=tuple(new_leaves))


def describe_shape_change(stream: str, change: ShapeChange) -> str:
    """The run's warning and the --test note for a stream whose shape changed."""
    return (
        f"Stream {stream}: {'; '.join(change.reasons)}. The log cannot express that for rows "
        "not changed since, so the stream is snapshotted again (after an ACTIVATE_VERSION, "
        "which lets targets that support it drop the rows they hold)."
    )
