"""The tap's replication slot: facts read once, a pure judgement over them, and the acts.

`fetch_slot` reads the slot (if any) and what judging it needs about this session;
`judge_slot` turns them into the problem that stops a run, with its fix; `create_slot` and
`drop_slot` act. The run acts on the verdict (`errors.raise_first`); `--test` reports it. Nothing
here moves a slot's confirmed position: only the transport does, after the target has the data.

Create the publication first (see `publication`): pgoutput looks the publication up at the WAL
position it decodes, so it must exist before the slot's starting point. Every function ends the
transaction it uses (commit on success, rollback on error). Slot creation refuses to run in a
transaction that has written, and an open transaction would hold back the server's xmin
horizon; pass a connection that has no transaction of its own in progress.
"""

from __future__ import annotations

import datetime
import logging
import re
import time
import typing as t
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from tap_pgcdc.errors import (
    ConfigError,
    PrivilegeError,
    ServerConfigError,
    SlotError,
    TapPgCdcError,
)
from tap_pgcdc.pg.connect import transaction
from tap_pgcdc.pg.lsn import parse_lsn
from tap_pgcdc.pg.quoting import quote_literal
from tap_pgcdc.replication.idle import PREVENTION
from tap_pgcdc.replication.server import WAL_LEVEL_FIX, replication_fix, version_text

Connection: t.TypeAlias = psycopg2.extensions.connection

logger = logging.getLogger(__name__)

PLUGIN = "pgoutput"

# ReplicationSlotValidateName: 1..NAMEDATALEN-1 characters out of [a-z0-9_].
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")


# --- the facts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """One row of pg_replication_slots."""

    name: str
    plugin: str | None  # None for physical slots
    slot_type: str  # 'logical' or 'physical'
    database: str | None  # None for physical slots
    temporary: bool
    active: bool
    active_pid: int | None
    restart_lsn: int | None  # None once invalidated
    confirmed_flush_lsn: int | None
    wal_status: str | None  # PG13+: reserved, extended, unreserved, lost; None on PG12
    invalidation_reason: str | None  # PG17+; None before
    conflicting: bool | None  # PG16+; None before and for physical slots
    inactive_since: datetime.datetime | None = None  # PG17+: when its last reader let go


@dataclass(frozen=True, slots=True)
class SlotFacts:
    """The slot called `name` (if any) and what judging it needs about this session."""

    name: str
    slot: SlotInfo | None
    failover: bool | None  # the slot's failover flag (PG17+); None before or without a slot
    server_version: int  # server_version_num
    database: str  # current_database(): a logical slot only decodes its own
    dbname: str  # the database the tap connects to, as messages name it
    backend_pid: int  # this session's pid: its own use of the slot is no conflict


def _slot_sql(version: int) -> str:
    wal_status = "wal_status" if version >= 130000 else "NULL::text"
    conflicting = "conflicting" if version >= 160000 else "NULL::boolean"
    reason = "invalidation_reason" if version >= 170000 else "NULL::text"
    failover = "failover" if version >= 170000 else "NULL::boolean"
    inactive = "inactive_since" if version >= 170000 else "NULL::timestamptz"
    return (
        "SELECT slot_name, plugin, slot_type, database, temporary, active, active_pid, "
        f"restart_lsn::text, confirmed_flush_lsn::text, {wal_status}, {reason}, {conflicting}, "
        f"{failover}, {inactive} FROM pg_catalog.pg_replication_slots WHERE slot_name = %s"
    )


def _slot_info(row: tuple[t.Any, ...]) -> SlotInfo:
    return SlotInfo(
        name=row[0],
        plugin=row[1],
        slot_type=row[2],
        database=row[3],
        temporary=row[4],
        active=row[5],
        active_pid=row[6],
        restart_lsn=parse_lsn(row[7]) if row[7] is not None else None,
        confirmed_flush_lsn=parse_lsn(row[8]) if row[8] is not None else None,
        wal_status=row[9],
        invalidation_reason=row[10],
        conflicting=row[11],
        inactive_since=row[13],
    )


def fetch_slot(conn: Connection, name: str) -> SlotFacts:
    """Read the slot called `name` (None if there is none) and this session's facts."""
    version = conn.server_version
    with transaction(conn) as cur:
        cur.execute(_slot_sql(version), (name,))
        row = cur.fetchone()
        cur.execute("SELECT pg_catalog.current_database()")
        database = cur.fetchone()
    return SlotFacts(
        name=name,
        slot=_slot_info(row) if row is not None else None,
        failover=row[12] if row is not None else None,
        server_version=version,
        database=database[0] if database else "",
        dbname=conn.info.dbname,
        backend_pid=conn.info.backend_pid,
    )


def get_slot(conn: Connection, name: str) -> SlotInfo | None:
    """The slot called `name`, or None if there is none."""
    return fetch_slot(conn, name).slot


# --- the judgement ------------------------------------------------------------------------------


def judge_slot(
    facts: SlotFacts, *, create: bool, failover: bool = False, allow_invalidated: bool = False
) -> list[TapPgCdcError]:
    """What stops the run from using the slot, with its fix: at most one problem.

    The checks run in order and each assumes the ones before it passed (a physical slot has no
    plugin to check), so the first problem is the only one.

    Args:
        facts: From `fetch_slot` (or `create_slot`).
        create: The create_slot setting: a missing slot is then no problem (the run creates it).
        failover: The slot_failover setting (PostgreSQL 17+): the slot must be a failover slot,
            which standbys with sync_replication_slots = on keep in sync so that it survives a
            promotion.
        allow_invalidated: Let an invalidated slot pass (the caller recovers from it or refuses
            it; see `invalidation`).

    Returns:
        A ConfigError (invalid name; slot_failover on a server without failover slots) or a
        SlotError (missing without `create`; not a pgoutput slot of this database; temporary;
        not a failover slot; invalidated; in use by another session); or nothing.
    """
    problem: TapPgCdcError | None = _setting_problem(facts, failover=failover)
    if problem is None:
        if facts.slot is None:
            if not create:
                problem = SlotError(_missing_message(facts, failover=failover))
        else:
            problem = identity_problem(facts)
            if problem is None and failover and facts.failover is False:
                problem = SlotError(_not_failover_message(facts))
            if problem is None and not (allow_invalidated and invalidation(facts.slot) is not None):
                problem = _usable_problem(facts.slot, facts.backend_pid)
    return [] if problem is None else [problem]


def _name_problem(name: str) -> ConfigError | None:
    if not _SLOT_NAME.fullmatch(name):
        msg = (
            f"slot_name {name!r} is not a valid replication slot name. Fix: use 1 to 63 "
            "characters out of lower-case letters, digits and underscores, e.g. 'tap_pgcdc'."
        )
        return ConfigError(msg)
    return None


def _setting_problem(facts: SlotFacts, *, failover: bool) -> ConfigError | None:
    """slot_name and slot_failover as the server can take them."""
    named = _name_problem(facts.name)
    if named is not None:
        return named
    if failover and facts.server_version < 170000:
        msg = (
            f"slot_failover is true, but PostgreSQL {version_text(facts.server_version)} has "
            "no failover slots (PostgreSQL 17 added them). Fix: set slot_failover = false (after "
            "a failover, the tap then needs a new slot and a new snapshot), or upgrade to "
            "PostgreSQL 17+."
        )
        return ConfigError(msg)
    return None


def identity_problem(facts: SlotFacts) -> SlotError | None:
    """Refuse a slot that belongs to something else: another tool, database or session."""
    info = facts.slot
    if info is None:
        return None
    name = info.name
    if info.slot_type != "logical":
        msg = (
            f"Replication slot {name!r} is a {info.slot_type} slot (used by a standby or a "
            "backup tool), not a logical one. Fix: set slot_name to another name; tap-pgcdc "
            "creates its own slot."
        )
        return SlotError(msg)
    if info.plugin != PLUGIN:
        msg = (
            f"Replication slot {name!r} uses the output plugin {info.plugin!r}, but tap-pgcdc "
            f"needs {PLUGIN!r}: it probably belongs to another tool. Fix: set slot_name to "
            f"another name; or, if nothing uses this slot, drop it with {_drop_slot_sql(name)} "
            "and let the tap create a new one (the tables are then snapshotted again)."
        )
        return SlotError(msg)
    database = facts.database
    if info.database != database:
        msg = (
            f"Replication slot {name!r} belongs to database {info.database!r}, but the tap is "
            f"connected to {database!r}; a logical slot only decodes its own database. Fix: set "
            f"slot_name to a name unique to this database (e.g. 'tap_pgcdc_{database}'), or "
            f"set database = {info.database!r}."
        )
        return SlotError(msg)
    if info.temporary:
        msg = (
            f"Replication slot {name!r} is a temporary slot of another session (pid "
            f"{info.active_pid}) and disappears when that session ends. Fix: set slot_name to "
            "another name."
        )
        return SlotError(msg)
    return None


def _not_failover_message(facts: SlotFacts) -> str:
    """With slot_failover, an existing slot made without failover is an error, not a surprise."""
    name = facts.name
    return (
        f"slot_failover is true, but replication slot {name!r} was created without "
        "failover, so it would be lost when a standby is promoted. Fix: make it a failover "
        "slot while no tap run reads it, over a replication connection: psql "
        f'"dbname={facts.dbname} replication=database" -c '
        f'"ALTER_REPLICATION_SLOT {name} (FAILOVER true)"; or set slot_failover = false.'
    )


def _missing_message(facts: SlotFacts, *, failover: bool) -> str:
    name = facts.name
    return (
        f"Replication slot {name!r} does not exist and create_slot is false. Fix: create "
        f"it in database {facts.dbname!r} with "
        f"{_create_slot_sql(name, failover=failover)} or set create_slot = true to let "
        "the tap create it."
    )


_INVALIDATION_CAUSES = {
    "wal_removed": (
        "the WAL it still needed was removed (it fell further behind than "
        "max_slot_wal_keep_size allows), so the changes since its last confirmed position are "
        "lost"
    ),
    "rows_removed": (
        "catalog rows it needed were removed on the primary (this server is a standby), so it "
        "can no longer decode"
    ),
    "wal_level_insufficient": "wal_level on the primary was lowered below logical",
    "idle_timeout": "it was idle for longer than idle_replication_slot_timeout",
}


def invalidation(info: SlotInfo) -> tuple[str, str] | None:
    """(what the catalog says, why) if the server invalidated the slot, else None.

    An invalidated slot can never be read again: the changes since its confirmed position are
    gone, and the only way on is a new slot and new snapshots.
    """
    if info.invalidation_reason:  # PG 17+ says why
        cause = _INVALIDATION_CAUSES.get(info.invalidation_reason, "the server invalidated it")
        lost = "wal_status=lost, " if info.wal_status == "lost" else ""
        return f"{lost}invalidation_reason={info.invalidation_reason}", cause
    if info.wal_status == "lost":
        # PG 16 also sets conflicting for this, whatever the cause: lost WAL is what matters.
        return "wal_status=lost", _INVALIDATION_CAUSES["wal_removed"]
    if info.conflicting:
        return "conflicting=true", "it conflicted with recovery on this standby"
    if info.restart_lsn is None:
        # PG 13.0 and 13.1 show a slot invalidated for lost WAL with a NULL restart_lsn and
        # wal_status.
        return "restart_lsn is NULL", _INVALIDATION_CAUSES["wal_removed"]
    return None


def idle_prevention(info: SlotInfo) -> str:
    """For a slot invalidated for being idle (PG18), what keeps it from happening again."""
    return " " + PREVENTION if info.invalidation_reason == "idle_timeout" else ""


def _usable_problem(info: SlotInfo, backend_pid: int) -> SlotError | None:
    name = info.name
    invalidated = invalidation(info)
    if invalidated is not None:
        detail, cause = invalidated
        msg = (
            f"Replication slot {name!r} was invalidated ({detail}): {cause}. The changes it "
            "held cannot be read any more. Fix: recover by re-snapshotting: set on_slot_lost = "
            "resnapshot and run the tap (it drops and recreates the slot and snapshots the "
            "streams again), or drop the slot with "
            f"{_drop_slot_sql(name)} then run the tap without its state."
        )
        if cause == _INVALIDATION_CAUSES["wal_removed"]:
            msg += " To prevent it, run the tap more often or raise max_slot_wal_keep_size."
        msg += idle_prevention(info)
        return SlotError(msg)
    if info.active and info.active_pid != backend_pid:
        pid = info.active_pid
        msg = (
            f"Replication slot {name!r} is in use by another session (pid {pid}): another "
            "tap-pgcdc run or another consumer is reading it. Fix: stop that run, or give this "
            "tap a different slot_name; if that session is stale, end it with "
            f"SELECT pg_terminate_backend({pid});"
        )
        return SlotError(msg)
    return None


def warn_if_unreserved(info: SlotInfo) -> None:
    """Log a warning when the slot is about to lose WAL it needs (wal_status = unreserved)."""
    if info.wal_status == "unreserved":
        logger.warning(
            "Replication slot %s is about to lose WAL it needs (wal_status=unreserved): the "
            "next checkpoint invalidates it unless the tap catches up first.",
            info.name,
        )


# --- the acts -----------------------------------------------------------------------------------


def _create_slot_sql(name: str, *, failover: bool = False) -> str:
    args = f"{quote_literal(name)}, '{PLUGIN}'" + (", false, false, true" if failover else "")
    return f"SELECT pg_create_logical_replication_slot({args});"


def _drop_slot_sql(name: str) -> str:
    return f"SELECT pg_drop_replication_slot({quote_literal(name)});"


def create_slot(conn: Connection, name: str, *, failover: bool = False) -> tuple[SlotFacts, bool]:
    """Create the tap's pgoutput slot (a failover slot with `failover`, PostgreSQL 17+).

    Creating a slot waits until every transaction running at that moment has ended, so a
    long-open transaction delays it. A slot another run created meanwhile is kept, and
    returned: judge it (`judge_slot`) before using it.

    Returns:
        The slot's facts as they now are, and whether this call created it (then nothing
        before its confirmed_flush_lsn can be read from it: the tables need a snapshot).

    Raises:
        PrivilegeError, ServerConfigError: The server refused to create it.
        SlotError: It disappeared right after it was created.
    """
    try:
        with transaction(conn) as cur:
            # PG17+ takes (name, plugin, temporary, twophase, failover).
            args = "%s, %s, false, false, true" if failover else "%s, %s"
            create = f"SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot({args})"
            cur.execute(create, (name, PLUGIN))
            row = cur.fetchone()
    except psycopg2.errors.DuplicateObject:
        row = None  # another run created it between our look and our create: use theirs
    except psycopg2.errors.InsufficientPrivilege as exc:
        msg = (
            f"Cannot create replication slot {name!r}: {str(exc).strip()}. "
            f"Fix: {replication_fix(conn.info.user)}, or have an administrator run "
            f"{_create_slot_sql(name)} and set create_slot = false."
        )
        raise PrivilegeError(msg) from None
    except psycopg2.errors.ConfigurationLimitExceeded as exc:
        msg = (
            f"Cannot create replication slot {name!r}: {str(exc).strip()}. Fix: drop slots "
            "nobody uses (SELECT pg_drop_replication_slot('name');) or raise "
            "max_replication_slots and restart PostgreSQL."
        )
        raise ServerConfigError(msg) from None
    except psycopg2.errors.ObjectNotInPrerequisiteState as exc:
        msg = (
            f"Cannot create replication slot {name!r}: {str(exc).strip()}. Fix: logical "
            f"decoding needs wal_level = logical ({WAL_LEVEL_FIX}) and, before PostgreSQL 16, "
            "a primary server rather than a standby."
        )
        raise ServerConfigError(msg) from None
    facts = fetch_slot(conn, name)
    if facts.slot is None:
        msg = (
            f"Replication slot {name!r} disappeared right after it was created: another "
            "process dropped it. Fix: make sure only one tap-pgcdc instance uses this slot_name."
        )
        raise SlotError(msg)
    if row is not None:
        logger.info("Created replication slot %s at %s", name, row[0])
    return facts, row is not None


def drop_slot(conn: Connection, name: str, *, timeout: float = 5.0) -> None:
    """Drop the tap's slot (the explicit recovery path); a missing slot is not an error.

    A session that was just terminated keeps the slot active until its process has exited, so an
    active slot is retried for up to `timeout` seconds. Slots that are not a pgoutput slot of this
    database are refused, so that a wrong slot_name cannot drop a standby's or another tool's.

    Raises:
        SlotError: The slot belongs to something else, or is still in use after `timeout`.
        PrivilegeError: The role may not use replication.
    """
    named = _name_problem(name)
    if named is not None:
        raise named
    deadline = time.monotonic() + timeout
    while True:
        facts = fetch_slot(conn, name)
        info = facts.slot
        if info is None:
            return
        refused = identity_problem(facts)
        if refused is not None:
            raise refused
        try:
            with transaction(conn) as cur:
                cur.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (name,))
        except psycopg2.errors.UndefinedObject:
            return
        except psycopg2.errors.InsufficientPrivilege as exc:
            msg = (
                f"Cannot drop replication slot {name!r}: {str(exc).strip()}. "
                f"Fix: {replication_fix(conn.info.user)}."
            )
            raise PrivilegeError(msg) from None
        except psycopg2.errors.ObjectInUse:
            if time.monotonic() >= deadline:
                latest = get_slot(conn, name)
                pid = latest.active_pid if latest else info.active_pid
                msg = (
                    f"Cannot drop replication slot {name!r}: it is still in use by pid {pid} "
                    f"after {timeout:g} s. Fix: stop the tap-pgcdc run or consumer reading it, "
                    f"or end that session with SELECT pg_terminate_backend({pid}); and retry."
                )
                raise SlotError(msg) from None
            time.sleep(0.1)
        else:
            logger.info("Dropped replication slot %s", name)
            return
