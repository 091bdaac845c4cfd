"""What the server and the tap's role allow: facts read once, and the pure judgement over them.

`fetch_server` reads the facts in one query; `judge_server` turns them into every problem (with
its fix) that stops logical replication. The run raises the first, `--test` reports them all.
"""

from __future__ import annotations

import datetime
import typing as t
from dataclasses import dataclass

import psycopg2.extensions

from tap_pgcdc.errors import PrivilegeError, ServerConfigError, TapPgCdcError
from tap_pgcdc.pg.connect import transaction
from tap_pgcdc.pg.quoting import quote_ident

if t.TYPE_CHECKING:
    from collections.abc import Sequence

Connection: t.TypeAlias = psycopg2.extensions.connection

MIN_SERVER_VERSION = 120000
ORIGIN_VERSION = 160000  # pgoutput's origin option
MESSAGES_VERSION = 140000  # pgoutput's messages option (logical decoding messages)

WAL_LEVEL_FIX = (
    "run ALTER SYSTEM SET wal_level = logical; as a superuser and restart PostgreSQL. On managed "
    "services: AWS RDS/Aurora: set rds.logical_replication = 1 in the DB parameter group and "
    "reboot; Google Cloud SQL: set the flag cloudsql.logical_decoding = on; Azure Database for "
    "PostgreSQL: set the server parameter wal_level = logical (flexible server) or "
    "azure.replication_support = logical (single server) and restart"
)
"""How to turn on logical decoding, self-hosted and on the managed services."""


def replication_fix(user: str) -> str:
    """How to give `user` the right to use replication, self-hosted and on managed services."""
    role = quote_ident(user)
    return (
        f"as a superuser run ALTER ROLE {role} REPLICATION; (AWS RDS/Aurora: GRANT "
        f"rds_replication TO {role}; Google Cloud SQL and Azure: ALTER ROLE {role} REPLICATION; "
        "as cloudsqlsuperuser / azure_pg_admin)"
    )


def version_text(version_num: int) -> str:
    """server_version_num as `major.minor`, e.g. 150018 -> `15.18`."""
    return f"{version_num // 10000}.{version_num % 10000}"


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
    idle_slot_timeout: int = 0  # idle_replication_slot_timeout in seconds (PG18+); 0: off
    now: datetime.datetime | None = None  # the server's clock, when the facts were read


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
            ELSE '' END,
       COALESCE((SELECT setting::int FROM pg_catalog.pg_settings
                 WHERE name = 'idle_replication_slot_timeout'), 0),
       pg_catalog.now()
FROM pg_catalog.pg_roles r
WHERE r.rolname = current_user
"""


def fetch_server(conn: Connection) -> ServerInfo:
    """Read the server's version, replication settings and what the current role may do."""
    with transaction(conn) as cur:
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
        idle_slot_timeout=row[11],
        now=row[12],
    )


def judge_server(
    info: ServerInfo, *, need_slots: int = 1, need_senders: int = 1, origin: str = "any"
) -> list[TapPgCdcError]:
    """Every reason the server or role cannot serve this run, in the order a user fixes them.

    A run raises the first (`errors.raise_first`); the preflight check (`--test`) lists them all.

    Args:
        info: From `fetch_server`.
        need_slots: Slots this run will create (0 when the tap's slot already exists; one more
            while an initial snapshot holds its temporary slot).
        need_senders: Replication connections this run will hold open at once.
        origin: The `origin` setting: `none` needs PostgreSQL 16+.

    Returns:
        ServerConfigError (unsupported version, wal_level not logical, no free slot or sender,
        an origin filter the server cannot apply) and PrivilegeError (the role may not use replication) instances, with their fixes.
    """
    problems: list[TapPgCdcError] = []
    if info.version_num < MIN_SERVER_VERSION:
        msg = (
            f"PostgreSQL {version_text(info.version_num)} is not supported: tap-pgcdc needs "
            f"PostgreSQL {version_text(MIN_SERVER_VERSION)} or later. Fix: upgrade the server."
        )
        problems.append(ServerConfigError(msg))
    if origin != "any" and MIN_SERVER_VERSION <= info.version_num < ORIGIN_VERSION:
        msg = (
            f"origin = {origin!r} needs PostgreSQL {version_text(ORIGIN_VERSION)} or later "
            f"(pgoutput's origin option), and this server is {version_text(info.version_num)}: "
            "it cannot tell changes made here from changes a subscription applied, so the log "
            "would deliver both. Fix: set origin to 'any' (the default: every change; "
            "meltano config set tap-pgcdc origin any), or upgrade the server to PostgreSQL 16+."
        )
        problems.append(ServerConfigError(msg))
    if info.wal_level != "logical":
        msg = (
            f"wal_level is {info.wal_level!r} on this server, but logical replication needs "
            f"'logical'. Fix: {WAL_LEVEL_FIX}."
        )
        problems.append(ServerConfigError(msg))
    if not info.can_replicate:
        msg = (
            f"Role {info.current_user!r} may not use replication: it is not a superuser and has "
            f"no REPLICATION attribute. Fix: {replication_fix(info.current_user)}."
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


def judge_messages(info: ServerInfo, prefixes: Sequence[str]) -> list[TapPgCdcError]:
    """Whether the server can deliver logical decoding messages (the `messages` setting).

    Args:
        info: From `fetch_server`.
        prefixes: The `messages` setting's prefixes, for a run whose messages stream is selected
            (empty: the stream is off, nothing to judge).

    Returns:
        A ServerConfigError on a server older than PostgreSQL 14 (no `messages` option).
    """
    if not prefixes or info.version_num >= MESSAGES_VERSION:
        return []
    msg = (
        f"messages = {list(prefixes)!r} needs PostgreSQL {version_text(MESSAGES_VERSION)} or "
        f"later (pgoutput's messages option), and this server is "
        f"{version_text(info.version_num)}: it cannot deliver the messages written with "
        "pg_logical_emit_message(). Fix: remove the setting (meltano config unset tap-pgcdc "
        "messages) or deselect the stream pg_logical_messages, or upgrade the server to "
        "PostgreSQL 14+."
    )
    return [ServerConfigError(msg)]
