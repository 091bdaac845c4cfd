"""The state this tap writes and reads back: its format and the checks on an input state.

A state looks like::

    {"bookmarks": {"public-orders": {"lsn": "0/1A2B3C8"}},
     "tap_pgcdc": {"slot_name": "tap_pgcdc", "system_identifier": "7310...",
                   "last_run_at": "2026-12-02T01:00:00.123456+00:00"}}

Per stream (see streams.py): `lsn`, the commit end LSN up to which every change has been
emitted; `snapshot`, an unfinished snapshot's consistent point and the last key emitted;
`version`, the table version of the last TRUNCATE or re-snapshot; `resnapshot`, a mark that the
stream's changes were lost and its re-snapshot must first empty the target (ACTIVATE_VERSION);
`publication`, `{"oid": ..., "member": ...}`: the publication the stream's changes were read
through and what made its table a member (`replication.publication.membership`), checked at the
start of the next run (`recovery.plan_publication_recovery`); `shape`, the table's OID, columns
and files the target's rows follow (`pg.shape.TableShape.record`), compared with the live table
at the start of the next run and after each log read (`recovery.plan_shape_recovery`).
Beside the bookmarks, `tap_pgcdc` names the slot and cluster the positions belong to, and
`last_run_at` the server's time when the run that wrote the state started (how long the slot
has been idle since, see `replication.idle`; states written before it was kept lack it).

A bad state is an error that names the fix, never a silent reset: a reset would re-snapshot
everything, and a misread position could skip changes.
"""

from __future__ import annotations

import datetime
import json
import typing as t

from tap_pgcdc.errors import StateError
from tap_pgcdc.pg.lsn import parse_lsn
from tap_pgcdc.pg.shape import TableShape

STATE_KEY = "tap_pgcdc"
# In a stream's bookmark: its changes were lost (see recovery.plan_slot_recovery) and its
# re-snapshot must first tell the target to drop what it holds (ACTIVATE_VERSION).
RESNAPSHOT_KEY = "resnapshot"
# In a stream's bookmark: the publication and membership its position was read through.
PUBLICATION_KEY = "publication"
# In a stream's bookmark: the shape of its table the target's rows follow (`pg.shape`).
SHAPE_KEY = "shape"
# The publication entry (column list, row filter) the bookmark's changes are read through.
FILTER_KEY = "filter"
# Beside the slot's identity: when the run that wrote the state started (the server's time).
LAST_RUN_KEY = "last_run_at"

_FIX_STATE = (
    "pass the state file this tap wrote (the last STATE message the target stored), or no "
    "--state to start over with new snapshots"
)


def checked_state_text(text: str) -> str:
    """The --state file's text, if it holds a JSON object; otherwise a StateError.

    The SDK would treat a state that is valid JSON but not an object as no state at all,
    silently re-snapshotting everything.
    """
    try:
        state = json.loads(text)
    except ValueError as exc:
        msg = f"The state given with --state is not valid JSON ({exc}). Fix: {_FIX_STATE}."
        raise StateError(msg) from None
    if not isinstance(state, dict):
        msg = (
            f"The state given with --state is a JSON {type(state).__name__}, not an object. "
            f"Fix: {_FIX_STATE}."
        )
        raise StateError(msg)
    return text


def check_input_state(state: object) -> dict[str, t.Any] | None:
    """Validate an input state before the SDK merges it; return its slot/cluster identity.

    Raises:
        StateError: The state, its bookmarks or its identity have the wrong shape.
    """
    if not isinstance(state, dict):
        msg = "The input state is not a JSON object. Fix: pass the state file this tap wrote."
        raise StateError(msg)
    bookmarks = state.get("bookmarks", {})
    if not isinstance(bookmarks, dict):
        msg = "The input state's `bookmarks` is not an object. Fix: pass the state this tap wrote."
        raise StateError(msg)
    for stream, bookmark in bookmarks.items():
        if not isinstance(bookmark, dict):
            msg = f"State bookmark for {stream!r} is not an object. Fix: pass the state this tap wrote."
            raise StateError(msg)
        check_bookmark(stream, bookmark)
    identity = state.get(STATE_KEY)
    if identity is not None and not isinstance(identity, dict):
        msg = (
            f"The input state's {STATE_KEY!r} is not an object (it names the slot and cluster "
            "the positions belong to). Fix: pass the state this tap wrote."
        )
        raise StateError(msg)
    if identity is not None and identity.get(LAST_RUN_KEY) is not None:
        try:
            last_run_time(identity)
        except (TypeError, ValueError):
            msg = (
                f"The input state's {STATE_KEY}.{LAST_RUN_KEY} is not a time with its offset "
                f"({identity[LAST_RUN_KEY]!r}). Fix: pass the state this tap wrote, or remove "
                f"{LAST_RUN_KEY} from it."
            )
            raise StateError(msg) from None
    return identity


def last_run_time(identity: dict[str, t.Any] | None) -> datetime.datetime | None:
    """When the run that wrote the state started, by the server's clock (None: not recorded)."""
    text = (identity or {}).get(LAST_RUN_KEY)
    if text is None:
        return None
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        msg = f"{text!r} has no time zone offset"
        raise ValueError(msg)
    return moment


def check_bookmark(stream: str, bookmark: dict[str, t.Any]) -> None:
    """Refuse a bookmark whose fields this tap would misread (see streams.py for their meaning)."""
    fix = "Fix: pass the state this tap wrote, or remove this stream's bookmark to re-snapshot it."
    lsns = {"lsn": bookmark.get("lsn")}
    snapshot = bookmark.get("snapshot")
    if snapshot is not None:
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("after"), list | None):
            msg = f"State bookmark for {stream!r} has an invalid snapshot progress {snapshot!r}. {fix}"
            raise StateError(msg)
        lsns["snapshot.lsn"] = snapshot.get("lsn")
    for key, value in lsns.items():
        if value is None:
            continue
        try:
            parse_lsn(value)
        except ValueError as exc:
            msg = f"State bookmark for {stream!r} has an invalid {key}: {exc}. {fix}"
            raise StateError(msg) from None
    version = bookmark.get("version")
    if version is not None and not _is_int(version):
        msg = f"State bookmark for {stream!r} has an invalid version {version!r}. {fix}"
        raise StateError(msg)
    published = bookmark.get(PUBLICATION_KEY)
    if published is not None and not (
        isinstance(published, dict)
        and _is_int(published.get("oid"))
        and _is_int(published.get("member"))
    ):
        msg = f"State bookmark for {stream!r} has an invalid {PUBLICATION_KEY} {published!r}. {fix}"
        raise StateError(msg)
    entry = bookmark.get(FILTER_KEY)
    if entry is not None and not (
        isinstance(entry, dict)
        and isinstance(entry.get("where"), str | None)
        and (
            entry.get("columns") is None
            or (
                isinstance(entry["columns"], list)
                and all(isinstance(c, str) for c in entry["columns"])
            )
        )
    ):
        msg = f"State bookmark for {stream!r} has an invalid {FILTER_KEY} {entry!r}. {fix}"
        raise StateError(msg)
    shape = bookmark.get(SHAPE_KEY)
    if shape is not None and not _is_shape(shape):
        msg = f"State bookmark for {stream!r} has an invalid {SHAPE_KEY} {shape!r}. {fix}"
        raise StateError(msg)


def _is_shape(shape: object) -> bool:
    """Whether a bookmark's shape has the form `TableShape.record` writes."""
    if not isinstance(shape, dict) or not _is_int(shape.get("oid")):
        return False
    columns, files = shape.get("columns"), shape.get("files")
    return (
        isinstance(columns, list)
        and isinstance(files, list)
        and all(
            isinstance(c, list)
            and len(c) == 4
            and _is_int(c[0])
            and isinstance(c[1], str)
            and _is_int(c[2])
            and _is_int(c[3])
            for c in columns
        )
        and all(
            isinstance(f, list)
            and len(f) == 4
            and _is_int(f[0])
            and isinstance(f[1], str)
            and _is_int(f[2])
            and isinstance(f[3], str)
            for f in files
        )
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def recorded_publication(bookmark: dict[str, t.Any]) -> tuple[int, int] | None:
    """(publication OID, membership) recorded with a checked bookmark, or None (not recorded)."""
    published = bookmark.get(PUBLICATION_KEY)
    if published is None:
        return None
    return int(published["oid"]), int(published["member"])


def recorded_shape(bookmark: dict[str, t.Any]) -> TableShape | None:
    """The table shape recorded with a checked bookmark, or None (not recorded)."""
    shape = bookmark.get(SHAPE_KEY)
    return None if shape is None else TableShape.from_record(shape)


def publication_record(oid: int, member: int) -> dict[str, int]:
    """What a bookmark records of the publication its changes are read through."""
    return {"oid": oid, "member": member}


def check_identity(
    identity: dict[str, t.Any] | None, *, slot_name: str, system_identifier: str
) -> None:
    """Refuse a state written for another slot or server: its positions mean nothing here."""
    if not identity:
        return
    slot = identity.get("slot_name")
    if slot and slot != slot_name:
        msg = (
            f"The input state was written for slot {slot!r}, but this tap reads slot "
            f"{slot_name!r}. Its positions do not apply. "
            "Fix: use the state of this tap instance (another state id), or set slot_name "
            f"to {slot!r}."
        )
        raise StateError(msg)
    system = identity.get("system_identifier")
    if system and system != system_identifier:
        msg = (
            f"The input state was written for another PostgreSQL cluster (system id {system}, "
            f"this one is {system_identifier}). Its positions do not apply. Fix: use this "
            "server's state, or start without state to re-snapshot."
        )
        raise StateError(msg)


def identity_record(
    *, slot_name: str, system_identifier: str, last_run_at: datetime.datetime | None = None
) -> dict[str, str]:
    """What the state records beside the bookmarks: the slot and cluster of its positions, and
    when this run started (the server's clock)."""
    record = {"slot_name": slot_name, "system_identifier": system_identifier}
    if last_run_at is not None:
        record[LAST_RUN_KEY] = last_run_at.isoformat()
    return record
