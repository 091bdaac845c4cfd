"""The replication slot and the publication: create, inspect and validate them over plain SQL.

The tap keeps one pgoutput slot and one publication per instance. This module creates them when
allowed (publication first: pgoutput looks the publication up at the WAL position it decodes, so
it must exist before the slot's starting point), checks that existing ones are usable, and turns
every problem into an error that says what to run. It never moves a slot's confirmed position:
only the transport does, after the target has the data.

Every function ends the transaction it uses (commit on success, rollback on error). Slot creation
refuses to run in a transaction that has written, and an open transaction would hold back the
server's xmin horizon; pass a connection that has no transaction of its own in progress.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import typing as t
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from tap_pgcdc.connector import RELKIND_PARTITIONED, RELKIND_TABLE
from tap_pgcdc.errors import ConfigError, PrivilegeError, ServerConfigError, SlotError
from tap_pgcdc.pg.lsn import parse_lsn
from tap_pgcdc.pg.quoting import quote_ident, quote_literal

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from tap_pgcdc.connector import TableInfo

Connection: t.TypeAlias = psycopg2.extensions.connection

logger = logging.getLogger(__name__)

PLUGIN = "pgoutput"
MIN_SERVER_VERSION = 120000
PUBLISH = ("insert", "update", "delete", "truncate")
PUBLISH_OPTION = ", ".join(PUBLISH)

# ReplicationSlotValidateName: 1..NAMEDATALEN-1 characters out of [a-z0-9_].
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")

_WAL_LEVEL_FIX = (
    "run ALTER SYSTEM SET wal_level = logical; as a superuser and restart PostgreSQL. On managed "
    "services: AWS RDS/Aurora: set rds.logical_replication = 1 in the DB parameter group and "
    "reboot; Google Cloud SQL: set the flag cloudsql.logical_decoding = on; Azure Database for "
    "PostgreSQL: set the server parameter wal_level = logical (flexible server) or "
    "azure.replication_support = logical (single server) and restart"
)


def _replication_fix(user: str) -> str:
    role = quote_ident(user)
    return (
        f"as a superuser run ALTER ROLE {role} REPLICATION; (AWS RDS/Aurora: GRANT "
        f"rds_replication TO {role}; Google Cloud SQL and Azure: ALTER ROLE {role} REPLICATION; "
        "as cloudsqlsuperuser / azure_pg_admin)"
    )


@contextlib.contextmanager
def _cursor(conn: Connection) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor whose transaction is committed on success and rolled back on error."""
    with conn, conn.cursor() as cur:
        yield cur


def _version_text(version_num: int) -> str:
    return f"{version_num // 10000}.{version_num % 10000}"


# --- the server ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the tap needs to know about the server before it touches slots."""

    version_num: int  # server_version_num, e.g. 150018
    wal_level: str
    max_replication_slots: int
    max_wal_senders: int
    slots_in_use: int  # every slot of the cluster, any database, any kind
    senders_in_use: int  # walsender processes, physical and logical
    is_superuser: bool
    can_replicate: bool  # superuser, REPLICATION attribute or member of rds_replication
    current_user: str
    database: str
    system_identifier: str  # pg_control_system(); "" where the role may not call it


_SERVER_SQL = """
SELECT pg_catalog.current_setting('server_version_num')::int,
       pg_catalog.current_setting('wal_level'),
       pg_catalog.current_setting('max_replication_slots')::int,
       pg_catalog.current_setting('max_wal_senders')::int,
       (SELECT count(*) FROM pg_catalog.pg_replication_slots),
       (SELECT count(*) FROM pg_catalog.pg_stat_replication),
       r.rolsuper,
       r.rolsuper OR r.rolreplication OR COALESCE(
           (SELECT pg_catalog.pg_has_role(r.oid, m.oid, 'MEMBER')
            FROM pg_catalog.pg_roles m WHERE m.rolname = 'rds_replication'), false),
       current_user,
       pg_catalog.current_database(),
       CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')
            THEN (SELECT system_identifier::text FROM pg_catalog.pg_control_system())
            ELSE '' END
FROM pg_catalog.pg_roles r
WHERE r.rolname = current_user
"""


def server_info(conn: Connection) -> ServerInfo:
    """Read the server's version, replication settings and what the current role may do."""
    with _cursor(conn) as cur:
        cur.execute(_SERVER_SQL)
        row = cur.fetchone()
    assert row is not None  # current_user always has a pg_roles row
    return ServerInfo(
        version_num=row[0],
        wal_level=row[1],
        max_replication_slots=row[2],
        max_wal_senders=row[3],
        slots_in_use=row[4],
        senders_in_use=row[5],
        is_superuser=row[6],
        can_replicate=row[7],
        current_user=row[8],
        database=row[9],
        system_identifier=row[10],
    )


def check_logical_replication(
    info: ServerInfo, *, need_slots: int = 1, need_senders: int = 1
) -> None:
    """Fail early, with the fix, when the server or role cannot serve logical replication.

    Args:
        info: From `server_info`.
        need_slots: Slots this run will create (0 when the tap's slot already exists; one more
            while an initial snapshot holds its temporary slot).
        need_senders: Replication connections this run will hold open at once.

    Raises:
        ServerConfigError: Unsupported version, wal_level not logical, no free slot or sender.
        PrivilegeError: The role may not use replication.
    """
    problems = server_problems(info, need_slots=need_slots, need_senders=need_senders)
    if problems:
        raise problems[0]


def server_problems(
    info: ServerInfo, *, need_slots: int = 1, need_senders: int = 1
) -> list[ServerConfigError | PrivilegeError]:
    """Every reason the server or role cannot serve this run, in the order a user fixes them.

    `check_logical_replication` raises the first; the preflight check (`--test`) lists them all.
    """
    problems: list[ServerConfigError | PrivilegeError] = []
    if info.version_num < MIN_SERVER_VERSION:
        msg = (
            f"PostgreSQL {_version_text(info.version_num)} is not supported: tap-pgcdc needs "
            f"PostgreSQL {_version_text(MIN_SERVER_VERSION)} or later. Fix: upgrade the server."
        )
        problems.append(ServerConfigError(msg))
    if info.wal_level != "logical":
        msg = (
            f"wal_level is {info.wal_level!r} on this server, but logical replication needs "
            f"'logical'. Fix: {_WAL_LEVEL_FIX}."
        )
        problems.append(ServerConfigError(msg))
    if not info.can_replicate:
        msg = (
            f"Role {info.current_user!r} may not use replication: it is not a superuser and has "
            f"no REPLICATION attribute. Fix: {_replication_fix(info.current_user)}."
        )
        problems.append(PrivilegeError(msg))
    free_slots = info.max_replication_slots - info.slots_in_use
    if free_slots < need_slots:
        msg = (
            f"No free replication slot: max_replication_slots = {info.max_replication_slots} and "
            f"{info.slots_in_use} slots exist, but this run needs {need_slots} more. Fix: drop "
            "slots nobody uses (list them with SELECT slot_name, database, active FROM "
            "pg_replication_slots; drop one with SELECT pg_drop_replication_slot('name');), or "
            "raise the limit with ALTER SYSTEM SET max_replication_slots = "
            f"{info.slots_in_use + need_slots}; and restart PostgreSQL (on a managed service, "
            "change it in the parameter group / server parameters)."
        )
        problems.append(ServerConfigError(msg))
    if info.max_wal_senders - info.senders_in_use < need_senders:
        msg = (
            f"No free WAL sender: max_wal_senders = {info.max_wal_senders} and "
            f"{info.senders_in_use} replication connections are open, but this run needs "
            f"{need_senders}. Fix: stop replication clients that are no longer needed (list "
            "them with SELECT pid, application_name, client_addr FROM pg_stat_replication;), or "
            "raise the limit with ALTER SYSTEM SET max_wal_senders = "
            f"{info.senders_in_use + need_senders}; and restart PostgreSQL."
        )
        problems.append(ServerConfigError(msg))
    return problems


# --- the slot -----------------------------------------------------------------------------------


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


def _slot_sql(version: int) -> str:
    wal_status = "wal_status" if version >= 130000 else "NULL::text"
    conflicting = "conflicting" if version >= 160000 else "NULL::boolean"
    reason = "invalidation_reason" if version >= 170000 else "NULL::text"
    return (
        "SELECT slot_name, plugin, slot_type, database, temporary, active, active_pid, "
        f"restart_lsn::text, confirmed_flush_lsn::text, {wal_status}, {reason}, {conflicting} "
        "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s"
    )


def get_slot(conn: Connection, name: str) -> SlotInfo | None:
    """The slot called `name`, or None if there is none."""
    with _cursor(conn) as cur:
        cur.execute(_slot_sql(conn.server_version), (name,))
        row = cur.fetchone()
    if row is None:
        return None
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
    )


def _create_slot_sql(name: str, *, failover: bool = False) -> str:
    args = f"{quote_literal(name)}, '{PLUGIN}'" + (", false, false, true" if failover else "")
    return f"SELECT pg_create_logical_replication_slot({args});"


def _drop_slot_sql(name: str) -> str:
    return f"SELECT pg_drop_replication_slot({quote_literal(name)});"


def _check_slot_name(name: str) -> None:
    if not _SLOT_NAME.fullmatch(name):
        msg = (
            f"slot_name {name!r} is not a valid replication slot name. Fix: use 1 to 63 "
            "characters out of lower-case letters, digits and underscores, e.g. 'tap_pgcdc'."
        )
        raise ConfigError(msg)


def ensure_slot(
    conn: Connection, name: str, *, create: bool, failover: bool = False
) -> tuple[SlotInfo, bool]:
    """Make sure the tap's slot exists and is usable, creating it if allowed.

    With `failover` (PostgreSQL 17+), the slot is created as a failover slot, which standbys
    with sync_replication_slots = on keep in sync so that it survives a promotion; an existing
    slot must already be one.

    Create the publication first (see `ensure_publication`). Creating a slot waits until every
    transaction running at that moment has ended, so a long-open transaction delays it.

    Returns:
        The slot, and whether it was created by this call (then nothing before its
        confirmed_flush_lsn can be read from it: the tables need a snapshot).

    Raises:
        ConfigError: `name` is not a valid slot name.
        SlotError: Missing while `create` is false; not a pgoutput slot of this database;
            temporary; invalidated; or in use by another session.
        PrivilegeError, ServerConfigError: The server refused to create it.
    """
    _check_slot_name(name)
    if failover:
        _check_failover_supported(conn)
    info = get_slot(conn, name)
    created = False
    if info is None:
        if not create:
            raise SlotError(_missing_slot_message(conn, name, failover=failover))
        info, created = _create_slot(conn, name, failover=failover)
    _check_slot_identity(conn, info)
    if failover:
        _check_failover_slot(conn, info)
    _check_slot_usable(conn, info)
    if info.wal_status == "unreserved":
        logger.warning(
            "Replication slot %s is about to lose WAL it needs (wal_status=unreserved): the "
            "next checkpoint invalidates it unless the tap catches up first.",
            name,
        )
    return info, created


def slot_problems(
    conn: Connection,
    name: str,
    *,
    create: bool,
    failover: bool = False,
    allow_invalidated: bool = False,
) -> list[str]:
    """What `ensure_slot` would refuse, found without creating or changing anything.

    For the checks before a run changes anything, and the preflight check (`--test`). An empty
    list: the slot is usable, or missing and `create` lets the tap create it. With
    `allow_invalidated`, an invalidated slot passes (the caller recovers from it or refuses it).
    """
    try:
        _check_slot_name(name)
        if failover:
            _check_failover_supported(conn)
    except ConfigError as exc:
        return [str(exc)]
    info = get_slot(conn, name)
    if info is None:
        return [] if create else [_missing_slot_message(conn, name, failover=failover)]
    try:
        _check_slot_identity(conn, info)
        if failover:
            _check_failover_slot(conn, info)
        if not (allow_invalidated and _invalidation(info) is not None):
            _check_slot_usable(conn, info)
    except SlotError as exc:
        return [str(exc)]
    return []


def _missing_slot_message(conn: Connection, name: str, *, failover: bool) -> str:
    return (
        f"Replication slot {name!r} does not exist and create_slot is false. Fix: create "
        f"it in database {conn.info.dbname!r} with "
        f"{_create_slot_sql(name, failover=failover)} or set create_slot = true to let "
        "the tap create it."
    )


def _create_slot(conn: Connection, name: str, *, failover: bool = False) -> tuple[SlotInfo, bool]:
    try:
        with _cursor(conn) as cur:
            if failover:  # PG17+: (name, plugin, temporary, twophase, failover)
                cur.execute(
                    "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot("
                    "%s, %s, false, false, true)",
                    (name, PLUGIN),
                )
            else:
                cur.execute(
                    "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot(%s, %s)",
                    (name, PLUGIN),
                )
            row = cur.fetchone()
    except psycopg2.errors.DuplicateObject:
        row = None  # another run created it between our look and our create: use theirs
    except psycopg2.errors.InsufficientPrivilege as exc:
        msg = (
            f"Cannot create replication slot {name!r}: {str(exc).strip()}. "
            f"Fix: {_replication_fix(conn.info.user)}, or have an administrator run "
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
            f"decoding needs wal_level = logical ({_WAL_LEVEL_FIX}) and, before PostgreSQL 16, "
            "a primary server rather than a standby."
        )
        raise ServerConfigError(msg) from None
    info = get_slot(conn, name)
    if info is None:
        msg = (
            f"Replication slot {name!r} disappeared right after it was created: another "
            "process dropped it. Fix: make sure only one tap-pgcdc instance uses this slot_name."
        )
        raise SlotError(msg)
    if row is not None:
        logger.info("Created replication slot %s at %s", name, row[0])
    return info, row is not None


def _check_failover_supported(conn: Connection) -> None:
    if conn.server_version < 170000:
        msg = (
            f"slot_failover is true, but PostgreSQL {_version_text(conn.server_version)} has no "
            "failover slots (PostgreSQL 17 added them). Fix: set slot_failover = false (after a "
            "failover, the tap then needs a new slot and a new snapshot), or upgrade to "
            "PostgreSQL 17+."
        )
        raise ConfigError(msg)


def _check_failover_slot(conn: Connection, info: SlotInfo) -> None:
    """With slot_failover, an existing slot made without failover is an error, not a surprise."""
    with _cursor(conn) as cur:
        cur.execute(
            "SELECT failover FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
            (info.name,),
        )
        row = cur.fetchone()
    if row is not None and not row[0]:
        msg = (
            f"slot_failover is true, but replication slot {info.name!r} was created without "
            "failover, so it would be lost when a standby is promoted. Fix: make it a failover "
            "slot while no tap run reads it, over a replication connection: psql "
            f'"dbname={conn.info.dbname} replication=database" -c '
            f'"ALTER_REPLICATION_SLOT {info.name} (FAILOVER true)"; or set slot_failover = false.'
        )
        raise SlotError(msg)


def _check_slot_identity(conn: Connection, info: SlotInfo) -> None:
    """Refuse slots that belong to something else: another tool, database or session."""
    name = info.name
    if info.slot_type != "logical":
        msg = (
            f"Replication slot {name!r} is a {info.slot_type} slot (used by a standby or a "
            "backup tool), not a logical one. Fix: set slot_name to another name; tap-pgcdc "
            "creates its own slot."
        )
        raise SlotError(msg)
    if info.plugin != PLUGIN:
        msg = (
            f"Replication slot {name!r} uses the output plugin {info.plugin!r}, but tap-pgcdc "
            f"needs {PLUGIN!r}: it probably belongs to another tool. Fix: set slot_name to "
            f"another name; or, if nothing uses this slot, drop it with {_drop_slot_sql(name)} "
            "and let the tap create a new one (the tables are then snapshotted again)."
        )
        raise SlotError(msg)
    with _cursor(conn) as cur:
        cur.execute("SELECT pg_catalog.current_database()")
        row = cur.fetchone()
    database = row[0] if row else None
    if info.database != database:
        msg = (
            f"Replication slot {name!r} belongs to database {info.database!r}, but the tap is "
            f"connected to {database!r}; a logical slot only decodes its own database. Fix: set "
            f"slot_name to a name unique to this database (e.g. 'tap_pgcdc_{database}'), or "
            f"set database = {info.database!r}."
        )
        raise SlotError(msg)
    if info.temporary:
        msg = (
            f"Replication slot {name!r} is a temporary slot of another session (pid "
            f"{info.active_pid}) and disappears when that session ends. Fix: set slot_name to "
            "another name."
        )
        raise SlotError(msg)


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


def _invalidation(info: SlotInfo) -> tuple[str, str] | None:
    """(what the catalog says, why) if the slot was invalidated, else None."""
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


def invalidation(info: SlotInfo) -> tuple[str, str] | None:
    """(what the catalog says, why) if the server invalidated the slot, else None.

    An invalidated slot can never be read again: the changes since its confirmed position are
    gone, and the only way on is a new slot and new snapshots.
    """
    return _invalidation(info)


def _check_slot_usable(conn: Connection, info: SlotInfo) -> None:
    name = info.name
    invalidated = _invalidation(info)
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
        raise SlotError(msg)
    if info.active and info.active_pid != conn.info.backend_pid:
        pid = info.active_pid
        msg = (
            f"Replication slot {name!r} is in use by another session (pid {pid}): another "
            "tap-pgcdc run or another consumer is reading it. Fix: stop that run, or give this "
            "tap a different slot_name; if that session is stale, end it with "
            f"SELECT pg_terminate_backend({pid});"
        )
        raise SlotError(msg)


def drop_slot(conn: Connection, name: str, *, timeout: float = 5.0) -> None:
    """Drop the tap's slot (the explicit recovery path); a missing slot is not an error.

    A session that was just terminated keeps the slot active until its process has exited, so an
    active slot is retried for up to `timeout` seconds. Slots that are not a pgoutput slot of this
    database are refused, so that a wrong slot_name cannot drop a standby's or another tool's.

    Raises:
        SlotError: The slot belongs to something else, or is still in use after `timeout`.
        PrivilegeError: The role may not use replication.
    """
    _check_slot_name(name)
    deadline = time.monotonic() + timeout
    while True:
        info = get_slot(conn, name)
        if info is None:
            return
        _check_slot_identity(conn, info)
        try:
            with _cursor(conn) as cur:
                cur.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (name,))
        except psycopg2.errors.UndefinedObject:
            return
        except psycopg2.errors.InsufficientPrivilege as exc:
            msg = (
                f"Cannot drop replication slot {name!r}: {str(exc).strip()}. "
                f"Fix: {_replication_fix(conn.info.user)}."
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


# --- the publication ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublicationInfo:
    """A publication and the tables it lists."""

    name: str
    owner: str
    all_tables: bool
    publish_via_partition_root: bool | None  # None on PG12
    pubinsert: bool
    pubupdate: bool
    pubdelete: bool
    pubtruncate: bool
    # Listed with FOR TABLE or (PG15+) through FOR TABLES IN SCHEMA; empty for FOR ALL TABLES.
    table_oids: frozenset[int]


@dataclass(frozen=True, slots=True)
class _Publication:
    info: PublicationInfo
    oid: int
    tables: dict[int, str]  # oid -> quoted name of each FOR TABLE member
    filtered: frozenset[int]  # FOR TABLE members with a row filter or column list (PG15+)
    schemas: tuple[str, ...]  # quoted names of FOR TABLES IN SCHEMA members (PG15+)


@dataclass(frozen=True, slots=True)
class _Table:
    oid: int
    display: str  # schema.name as written, for messages
    sql: str  # "schema"."name", for SQL
    kind: str
    ancestors: frozenset[int]  # partitioned tables it is a partition of, at any level


def _publication_sql(version: int) -> str:
    viaroot = "p.pubviaroot" if version >= 130000 else "NULL::boolean"
    return (
        "SELECT p.oid, p.pubname, pg_catalog.pg_get_userbyid(p.pubowner), p.puballtables, "
        f"{viaroot}, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate "
        "FROM pg_catalog.pg_publication p WHERE p.pubname = %s"
    )


def _publication_tables_sql(version: int) -> str:
    filtered = "pr.prqual IS NOT NULL OR pr.prattrs IS NOT NULL" if version >= 150000 else "false"
    return (
        f"SELECT c.oid, n.nspname, c.relname, {filtered} "
        "FROM pg_catalog.pg_publication_rel pr "
        "JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE pr.prpubid = %s"
    )


_PUBLICATION_SCHEMAS_SQL = """
SELECT n.nspname,
       ARRAY(SELECT c.oid FROM pg_catalog.pg_class c
             WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p')
FROM pg_catalog.pg_publication_namespace pn
JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid
WHERE pn.pnpubid = %s
"""


def _load_publication(conn: Connection, name: str) -> _Publication | None:
    version = conn.server_version
    with _cursor(conn) as cur:
        cur.execute(_publication_sql(version), (name,))
        row = cur.fetchone()
        if row is None:
            return None
        oid = row[0]
        cur.execute(_publication_tables_sql(version), (oid,))
        members = cur.fetchall()
        schema_rows: list[tuple[str, list[int]]] = []
        if version >= 150000:
            cur.execute(_PUBLICATION_SCHEMAS_SQL, (oid,))
            schema_rows = cur.fetchall()
    tables = {
        relid: f"{quote_ident(schema)}.{quote_ident(table)}" for relid, schema, table, _ in members
    }
    table_oids = set(tables)
    for _, oids in schema_rows:
        table_oids.update(oids)
    info = PublicationInfo(
        name=row[1],
        owner=row[2],
        all_tables=row[3],
        publish_via_partition_root=row[4],
        pubinsert=row[5],
        pubupdate=row[6],
        pubdelete=row[7],
        pubtruncate=row[8],
        table_oids=frozenset(table_oids),
    )
    return _Publication(
        info=info,
        oid=oid,
        tables=tables,
        filtered=frozenset(relid for relid, _, _, filtered in members if filtered),
        schemas=tuple(quote_ident(schema) for schema, _ in schema_rows),
    )


def get_publication(conn: Connection, name: str) -> PublicationInfo | None:
    """The publication called `name`, or None if there is none."""
    publication = _load_publication(conn, name)
    return publication.info if publication else None


_SELECTED_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence,
       ARRAY(SELECT a.relid::oid FROM pg_catalog.pg_partition_ancestors(c.oid) a
             WHERE a.relid <> c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = ANY(%s::oid[])
"""

_LEAF_PARTITIONS_SQL = """
SELECT n.nspname || '.' || c.relname
FROM pg_catalog.pg_partition_tree(%s::oid) p
JOIN pg_catalog.pg_class c ON c.oid = p.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE p.isleaf
ORDER BY 1
"""

_KIND_NAMES = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}


def _selected_tables(conn: Connection, tables: Sequence[TableInfo]) -> list[_Table]:
    """The selected tables as the catalog sees them now, in selection order, checked publishable.

    Names come from the catalog by OID, so a table renamed since discovery is still found.
    """
    version = conn.server_version
    with _cursor(conn) as cur:
        cur.execute(_SELECTED_SQL, ([table.oid for table in tables],))
        rows = {row[0]: row for row in cur.fetchall()}
    selected: dict[int, _Table] = {}
    for table in tables:
        if table.oid in selected:
            continue
        row = rows.get(table.oid)
        if row is None:
            msg = (
                f"Table {table.schema}.{table.name} (oid {table.oid}) no longer exists: it was "
                "dropped or recreated since discovery. Fix: run discovery again and update the "
                "catalog's selection."
            )
            raise ConfigError(msg)
        oid, schema, name, kind, persistence, ancestors = row
        display = f"{schema}.{name}"
        sql = f"{quote_ident(schema)}.{quote_ident(name)}"
        if kind not in (RELKIND_TABLE, RELKIND_PARTITIONED):
            msg = (
                f"{display} is {_KIND_NAMES.get(kind, f'a relation of kind {kind!r}')}, which "
                "has no change stream. Fix: replicate it with FULL_TABLE instead of LOG_BASED."
            )
            raise ConfigError(msg)
        if persistence != "p":
            msg = (
                f"{display} is an UNLOGGED table: its changes are not written to the WAL, so "
                "logical replication cannot see them. Fix: replicate it with FULL_TABLE, or make "
                f"it logged with ALTER TABLE {sql} SET LOGGED;"
            )
            raise ConfigError(msg)
        if kind == RELKIND_PARTITIONED and version < 130000:
            with _cursor(conn) as cur:
                cur.execute(_LEAF_PARTITIONS_SQL, (oid,))
                leaves = [leaf for (leaf,) in cur.fetchall()]
            msg = (
                f"{display} is a partitioned table, and PostgreSQL {version // 10000} cannot "
                "publish partitioned tables (PostgreSQL 13 can). Fix: deselect it and select its partitions instead"
                f" ({', '.join(leaves) or 'it has none yet'}), or upgrade to PostgreSQL 13+."
            )
            raise ConfigError(msg)
        selected[oid] = _Table(
            oid=oid, display=display, sql=sql, kind=kind, ancestors=frozenset(ancestors)
        )
    return list(selected.values())


def _table_list(tables: Iterable[_Table]) -> str:
    # ONLY: without it, a table's inheritance children would join the publication too. For a
    # partitioned table it changes nothing: its partitions are covered through it.
    return ", ".join(f"ONLY {table.sql}" for table in tables)


def _create_publication_sql(name: str, tables: Sequence[_Table], version: int) -> str:
    sql = f"CREATE PUBLICATION {quote_ident(name)}"
    if tables:
        sql += f" FOR TABLE {_table_list(tables)}"
    options = f"publish = {quote_literal(PUBLISH_OPTION)}"
    if version >= 130000:
        options += ", publish_via_partition_root = true"
    return f"{sql} WITH ({options});"


def _alter_publication_sql(publication: _Publication, tables: Sequence[_Table]) -> list[str]:
    """Statements that make the publication list exactly `tables`."""
    name = quote_ident(publication.info.name)
    if tables:
        return [f"ALTER PUBLICATION {name} SET TABLE {_table_list(tables)};"]
    # SET TABLE needs at least one table: empty the publication by dropping its members.
    statements = []
    if publication.tables:
        members = ", ".join(f"ONLY {sql}" for sql in publication.tables.values())
        statements.append(f"ALTER PUBLICATION {name} DROP TABLE {members};")
    if publication.schemas:
        schemas = ", ".join(publication.schemas)
        statements.append(f"ALTER PUBLICATION {name} DROP TABLES IN SCHEMA {schemas};")
    return statements


def ensure_publication(
    conn: Connection, name: str, tables: Sequence[TableInfo], *, create: bool
) -> PublicationInfo:
    """Make sure the publication exists and publishes every change of the selected tables.

    With `create`, a missing publication is created and an existing one is altered to list
    exactly `tables` (a FOR ALL TABLES publication is left as it is: it covers everything).
    Without it, nothing is changed: a missing publication or a missing table is an error giving
    the SQL to run, and tables listed beyond the selection are accepted (their changes are
    decoded and ignored).

    Raises:
        ConfigError: A selected table is gone, a view, unlogged, or partitioned on PG12.
        SlotError: Missing or incomplete while `create` is false; wrong publish options.
        PrivilegeError: Creating or altering it needs ownership the role does not have.
    """
    version = conn.server_version
    selected = _selected_tables(conn, tables)
    publication = _load_publication(conn, name)
    if publication is None:
        sql = _create_publication_sql(name, selected, version)
        if not create:
            raise SlotError(_missing_publication_message(conn, name, sql))
        publication = _create_publication(conn, name, sql)
    _check_publish_options(publication.info, selected)
    info = publication.info
    if info.all_tables:
        return info
    wanted = {table.oid for table in selected}
    if set(publication.tables) == wanted and not publication.schemas and not publication.filtered:
        return info
    if not create:
        _check_publishes_all_of(publication, selected)
        return info
    _alter_publication(conn, publication, selected)
    return _reload_publication(conn, name, "altered").info


def _check_publishes_all_of(publication: _Publication, selected: Sequence[_Table]) -> None:
    """Without create_publication: every selected table must be published, and in full."""
    name = publication.info.name
    listed = publication.info.table_oids
    missing = [
        table for table in selected if table.oid not in listed and not table.ancestors & listed
    ]
    if missing:
        msg = (
            f"Publication {name!r} does not publish "
            f"{', '.join(table.display for table in missing)}, selected for LOG_BASED "
            "replication, and create_publication is false. Fix: add them with ALTER "
            f"PUBLICATION {quote_ident(name)} ADD TABLE {_table_list(missing)}; or set "
            "create_publication = true to let the tap manage the publication."
        )
        raise SlotError(msg)
    covering = {oid for table in selected for oid in (table.oid, *table.ancestors)}
    filtered = [publication.tables[oid] for oid in sorted(publication.filtered & covering)]
    if filtered:
        pub = quote_ident(name)
        readd = " ".join(
            f"ALTER PUBLICATION {pub} DROP TABLE ONLY {table}; "
            f"ALTER PUBLICATION {pub} ADD TABLE ONLY {table};"
            for table in filtered
        )
        msg = (
            f"Publication {name!r} publishes {', '.join(filtered)} with a row filter (WHERE) "
            "or a column list, so the tap would miss rows or columns, and create_publication "
            f"is false. Fix: list them in full, in one transaction: BEGIN; {readd} COMMIT; or "
            "set create_publication = true to let the tap manage the publication."
        )
        raise SlotError(msg)


def _create_publication(conn: Connection, name: str, sql: str) -> _Publication:
    try:
        with _cursor(conn) as cur:
            cur.execute(sql)
    except psycopg2.errors.DuplicateObject:
        pass  # another run created it between our look and our create: check theirs
    except psycopg2.errors.InsufficientPrivilege as exc:
        msg = (
            f"Cannot create publication {name!r}: {str(exc).strip()}. Creating a publication "
            "needs the CREATE privilege on the database (GRANT CREATE ON DATABASE "
            f"{quote_ident(conn.info.dbname)} TO {quote_ident(conn.info.user)};) and ownership "
            "of every table it lists. Fix: grant that, or have the tables' owner or a superuser "
            f"run: {sql} and set create_publication = false."
        )
        raise PrivilegeError(msg) from None
    else:
        logger.info("Created publication %s", name)
    return _reload_publication(conn, name, "created")


def _reload_publication(conn: Connection, name: str, done: str) -> _Publication:
    publication = _load_publication(conn, name)
    if publication is None:
        msg = (
            f"Publication {name!r} disappeared right after it was {done}: another process "
            "dropped it. Fix: make sure only one tap-pgcdc instance uses this publication_name."
        )
        raise SlotError(msg)
    return publication


def _check_publish_options(info: PublicationInfo, selected: Sequence[_Table]) -> None:
    name = quote_ident(info.name)
    flags = (info.pubinsert, info.pubupdate, info.pubdelete, info.pubtruncate)
    unpublished = [op for op, on in zip(PUBLISH, flags, strict=True) if not on]
    if unpublished:
        published = ", ".join(op for op, on in zip(PUBLISH, flags, strict=True) if on)
        msg = (
            f"Publication {info.name!r} does not publish {', '.join(unpublished)} "
            f"(publish = {quote_literal(published)}), so the tap would miss those changes. Fix: "
            f"ALTER PUBLICATION {name} SET (publish = {quote_literal(PUBLISH_OPTION)});"
        )
        raise SlotError(msg)
    # Without publish_via_partition_root a partitioned table's changes arrive under each
    # partition's name, not the selected parent's. It changes nothing for other tables, so a
    # publication shared with other consumers is only required to have it when it matters.
    parents = [table.display for table in selected if table.kind == RELKIND_PARTITIONED]
    if parents and info.publish_via_partition_root is False:
        msg = (
            f"Publication {info.name!r} has publish_via_partition_root = false, so changes to "
            f"the partitions of {', '.join(parents)} would arrive under each partition's name "
            "instead of the selected partitioned table's. Fix: ALTER PUBLICATION "
            f"{name} SET (publish_via_partition_root = true);"
        )
        raise SlotError(msg)


def _alter_publication(
    conn: Connection, publication: _Publication, selected: Sequence[_Table]
) -> None:
    info = publication.info
    statements = _alter_publication_sql(publication, selected)
    foreign = _foreign_owner_problem(conn, publication, statements)
    if foreign:
        raise PrivilegeError(foreign)
    try:
        with _cursor(conn) as cur:
            for statement in statements:
                cur.execute(statement)
    except psycopg2.errors.InsufficientPrivilege as exc:
        msg = (
            f"Cannot change publication {info.name!r} to list exactly the selected tables: "
            f"{str(exc).strip()}. Adding a table to a publication needs ownership of the table. "
            "Fix: run the tap as the tables' owner, or have the owner or a superuser run "
            f"{' '.join(statements)} and set create_publication = false."
        )
        raise PrivilegeError(msg) from None
    added = [table.display for table in selected if table.oid not in publication.tables]
    logger.info(
        "Altered publication %s to list exactly the selected tables (newly listed: %s)",
        info.name,
        ", ".join(added) or "none",
    )


def _foreign_owner_problem(
    conn: Connection, publication: _Publication, statements: Sequence[str]
) -> str | None:
    """Why the role cannot alter the publication (another role owns it), or None."""
    info = publication.info
    with _cursor(conn) as cur:
        cur.execute(
            "SELECT pg_catalog.pg_has_role(pubowner, 'USAGE') FROM pg_catalog.pg_publication "
            "WHERE oid = %s",
            (publication.oid,),
        )
        row = cur.fetchone()
    if row is None or row[0]:
        return None
    user = conn.info.user
    return (
        f"Publication {info.name!r} is owned by role {info.owner!r}, so {user!r} cannot "
        "change it to list exactly the selected tables. Fix: have "
        f"{info.owner!r} or a superuser run ALTER PUBLICATION {quote_ident(info.name)} "
        f"OWNER TO {quote_ident(user)}; or set publication_name to a publication this user "
        "owns; or set create_publication = false and use a publication that already lists "
        f"the tables (here, {info.owner!r} would run: {' '.join(statements)})."
    )


_CREATE_RIGHTS_SQL = """
SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE'),
       ARRAY(SELECT n.nspname || '.' || c.relname
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = ANY(%s::oid[]) AND NOT pg_catalog.pg_has_role(c.relowner, 'USAGE')
             ORDER BY 1)
"""


def publication_problems(
    conn: Connection, name: str, tables: Sequence[TableInfo], *, create: bool
) -> list[str]:
    """What `ensure_publication` would refuse, found without creating or changing anything.

    For the preflight check (`--test`): besides the checks `ensure_publication` makes, it asks
    whether the role could create or alter the publication (the CREATE privilege on the database,
    ownership of the publication and of the tables it would add), which a real run only learns
    from the server's refusal.
    """
    try:
        selected = _selected_tables(conn, tables)
    except ConfigError as exc:
        return [str(exc)]
    publication = _load_publication(conn, name)
    if publication is None:
        sql = _create_publication_sql(name, selected, conn.server_version)
        if not create:
            return [_missing_publication_message(conn, name, sql)]
        return _create_rights_problems(conn, name, selected, sql, creating=True)
    problems = []
    try:
        _check_publish_options(publication.info, selected)
    except SlotError as exc:
        problems.append(str(exc))
    wanted = {table.oid for table in selected}
    if publication.info.all_tables or (
        set(publication.tables) == wanted and not publication.schemas and not publication.filtered
    ):
        return problems
    if not create:
        try:
            _check_publishes_all_of(publication, selected)
        except SlotError as exc:
            problems.append(str(exc))
        return problems
    statements = _alter_publication_sql(publication, selected)
    foreign = _foreign_owner_problem(conn, publication, statements)
    if foreign:
        return [*problems, foreign]
    adding = [table for table in selected if table.oid not in publication.tables]
    return problems + _create_rights_problems(
        conn, name, adding, " ".join(statements), creating=False
    )


def _create_rights_problems(
    conn: Connection, name: str, tables: Sequence[_Table], sql: str, *, creating: bool
) -> list[str]:
    """Privileges missing to create the publication (or add tables to it), as problems."""
    with _cursor(conn) as cur:
        cur.execute(_CREATE_RIGHTS_SQL, ([table.oid for table in tables],))
        row = cur.fetchone()
    assert row is not None  # a SELECT without FROM always returns its row
    can_create, not_owned = row
    user = quote_ident(conn.info.user)
    problems = []
    if creating and not can_create:
        problems.append(
            f"Role {conn.info.user!r} may not create publication {name!r}: it lacks the CREATE "
            f"privilege on database {conn.info.dbname!r}. Fix: GRANT CREATE ON DATABASE "
            f"{quote_ident(conn.info.dbname)} TO {user}; or have the tables' owner or a "
            f"superuser run: {sql} and set create_publication = false."
        )
    if not_owned:
        action = "create publication" if creating else "add tables to publication"
        problems.append(
            f"Role {conn.info.user!r} may not {action} {name!r}: adding a table to a publication "
            f"needs ownership of the table, and {', '.join(not_owned)} belong to other roles. "
            "Fix: run "
            "the tap as the tables' owner (or a role that is a member of it), or have the owner "
            f"or a superuser run: {sql} and set create_publication = false."
        )
    return problems


def _missing_publication_message(conn: Connection, name: str, sql: str) -> str:
    return (
        f"Publication {name!r} does not exist and create_publication is false. Fix: "
        f"create it in database {conn.info.dbname!r} (as the owner of the tables or a "
        f"superuser) with: {sql} or set create_publication = true to let the tap "
        "create it."
    )


# --- replica identity ---------------------------------------------------------------------------

# Partitioned tables are checked through their leaf partitions: an UPDATE or DELETE runs on the
# leaf, and it is the leaf's replica identity that Postgres checks and writes to the WAL.
_REPLICA_IDENTITY_SQL = """
WITH selected AS (
    SELECT s.oid, s.ord FROM unnest(%s::oid[]) WITH ORDINALITY AS s(oid, ord)
), targets AS (
    SELECT s.ord, s.oid AS top, s.oid AS rel
    FROM selected s JOIN pg_catalog.pg_class c ON c.oid = s.oid
    WHERE c.relkind <> 'p'
  UNION ALL
    SELECT s.ord, s.oid, p.relid::oid
    FROM selected s JOIN pg_catalog.pg_class c ON c.oid = s.oid AND c.relkind = 'p'
    CROSS JOIN LATERAL pg_catalog.pg_partition_tree(s.oid) p
    WHERE p.isleaf
)
SELECT tn.nspname, tc.relname, n.nspname, c.relname, c.relreplident,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i
               WHERE i.indrelid = c.oid AND i.indisreplident)
FROM targets x
JOIN pg_catalog.pg_class c ON c.oid = x.rel
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class tc ON tc.oid = x.top
JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
WHERE c.relkind = 'r'
ORDER BY x.ord, n.nspname, c.relname
"""


def replica_identity_problems(conn: Connection, tables: Sequence[TableInfo]) -> list[str]:
    """One message per table (or partition) whose UPDATEs and DELETEs cannot be identified.

    A table without a usable replica identity cannot be updated or deleted from at all while a
    publication that publishes those changes lists it; the caller decides to warn or fail.
    """
    with _cursor(conn) as cur:
        cur.execute(_REPLICA_IDENTITY_SQL, ([table.oid for table in tables],))
        rows = cur.fetchall()
    problems = []
    for top_schema, top_name, schema, name, replident, has_pkey, has_index in rows:
        if replident == "n":
            why, then = "REPLICA IDENTITY NOTHING", " and set REPLICA IDENTITY DEFAULT"
        elif replident == "d" and not has_pkey:
            why, then = "REPLICA IDENTITY DEFAULT and no primary key", ""
        elif replident == "i" and not has_index:
            why = "REPLICA IDENTITY USING INDEX, but that index was dropped"
            then = " and set REPLICA IDENTITY DEFAULT"
        else:
            continue
        display = f"{schema}.{name}"
        if (schema, name) != (top_schema, top_name):
            display += f" (a partition of {top_schema}.{top_name})"
        sql = f"ALTER TABLE {quote_ident(schema)}.{quote_ident(name)}"
        problems.append(
            f"{display} has no replica identity ({why}): UPDATE and DELETE on it will fail in "
            "Postgres itself while it is published (or be unidentifiable). Fix: "
            f"{sql} REPLICA IDENTITY FULL; or add a primary key{then}."
        )
    return problems
