"""The pure judgements over server, slot and replica identity facts (no server).

The run and `--test` judge the same facts with these functions; the facts are built by hand
here, and whole problem lists are compared: the exception type of each and its message.
"""

from __future__ import annotations

from typing import Any

from tap_pgcdc.errors import (
    ConfigError,
    PrivilegeError,
    ServerConfigError,
    SlotError,
    TapPgCdcError,
)
from tap_pgcdc.replication.identity import ReplicaIdentity, by_table, judge_replica_identity
from tap_pgcdc.replication.publication import Decoding
from tap_pgcdc.replication.server import judge_server
from tap_pgcdc.replication.slot import SlotFacts, SlotInfo, invalidation, judge_slot
from tests.facts import server_info


def problems(found: list[TapPgCdcError]) -> list[tuple[type[TapPgCdcError], str]]:
    return [(type(problem), str(problem)) for problem in found]


# --- the server ---------------------------------------------------------------------------------


def test_a_server_ready_for_logical_replication_has_no_problem() -> None:
    assert judge_server(server_info()) == []
    assert judge_server(server_info(max_replication_slots=2, slots_in_use=2), need_slots=0) == []


def test_every_server_problem_is_listed_in_the_order_a_user_fixes_them() -> None:
    info = server_info(
        version_num=110022,
        wal_level="replica",
        can_replicate=False,
        max_replication_slots=3,
        slots_in_use=3,
        max_wal_senders=2,
        senders_in_use=2,
    )
    assert problems(judge_server(info, need_slots=2, need_senders=1)) == [
        (
            ServerConfigError,
            "PostgreSQL 11.22 is not supported: tap-pgcdc needs PostgreSQL 12.0 or later. Fix: "
            "upgrade the server.",
        ),
        (
            ServerConfigError,
            "wal_level is 'replica' on this server, but logical replication needs 'logical'. "
            "Fix: run ALTER SYSTEM SET wal_level = logical; as a superuser and restart "
            "PostgreSQL. On managed services: AWS RDS/Aurora: set rds.logical_replication = 1 "
            "in the DB parameter group and reboot; Google Cloud SQL: set the flag "
            "cloudsql.logical_decoding = on; Azure Database for PostgreSQL: set the server "
            "parameter wal_level = logical (flexible server) or azure.replication_support = "
            "logical (single server) and restart.",
        ),
        (
            PrivilegeError,
            "Role 'tap' may not use replication: it is not a superuser and has no REPLICATION "
            'attribute. Fix: as a superuser run ALTER ROLE "tap" REPLICATION; (AWS RDS/Aurora: '
            'GRANT rds_replication TO "tap"; Google Cloud SQL and Azure: ALTER ROLE "tap" '
            "REPLICATION; as cloudsqlsuperuser / azure_pg_admin).",
        ),
        (
            ServerConfigError,
            "No free replication slot: max_replication_slots = 3 and 3 slots exist, but this "
            "run needs 2 more. Fix: drop slots nobody uses (list them with SELECT slot_name, "
            "database, active FROM pg_replication_slots; drop one with SELECT "
            "pg_drop_replication_slot('name');), or raise the limit with ALTER SYSTEM SET "
            "max_replication_slots = 5; and restart PostgreSQL (on a managed service, change it "
            "in the parameter group / server parameters).",
        ),
        (
            ServerConfigError,
            "No free WAL sender: max_wal_senders = 2 and 2 replication connections are open, "
            "but this run needs 1. Fix: stop replication clients that are no longer needed "
            "(list them with SELECT pid, application_name, client_addr FROM "
            "pg_stat_replication;), or raise the limit with ALTER SYSTEM SET max_wal_senders = "
            "3; and restart PostgreSQL.",
        ),
    ]


def test_origin_none_needs_postgresql_16() -> None:
    for version in (120022, 150014):
        assert problems(judge_server(server_info(version_num=version), origin="none")) == [
            (
                ServerConfigError,
                f"origin = 'none' needs PostgreSQL 16.0 or later (pgoutput's origin option), and "
                f"this server is {version // 10000}.{version % 10000}: it cannot tell changes made "
                "here from changes a subscription applied, so the log would deliver both. Fix: set "
                "origin to 'any' (the default: every change; meltano config set tap-pgcdc origin "
                "any), or upgrade the server to PostgreSQL 16+.",
            )
        ]
        assert judge_server(server_info(version_num=version), origin="any") == []
    for version in (160000, 180001):
        assert judge_server(server_info(version_num=version), origin="none") == []
    # An unsupported server is refused for its version alone, not twice.
    assert len(judge_server(server_info(version_num=110022), origin="none")) == 1


# --- the slot -----------------------------------------------------------------------------------


def slot_info(**changes: Any) -> SlotInfo:
    values: dict[str, Any] = {
        "name": "tap_pgcdc",
        "plugin": "pgoutput",
        "slot_type": "logical",
        "database": "app",
        "temporary": False,
        "active": False,
        "active_pid": None,
        "restart_lsn": 0x1_6000_0000,
        "confirmed_flush_lsn": 0x1_6000_0100,
        "wal_status": "reserved",
        "invalidation_reason": None,
        "conflicting": False,
    }
    values.update(changes)
    return SlotInfo(**values)


def slot_facts(slot: SlotInfo | None = None, **changes: Any) -> SlotFacts:
    values: dict[str, Any] = {
        "name": slot.name if slot else "tap_pgcdc",
        "slot": slot,
        "failover": None,
        "server_version": 170002,
        "database": "app",
        "dbname": "app",
        "backend_pid": 4242,
    }
    values.update(changes)
    return SlotFacts(**values)


def test_a_usable_or_creatable_slot_has_no_problem() -> None:
    assert judge_slot(slot_facts(slot_info()), create=False) == []
    assert judge_slot(slot_facts(), create=True) == []
    # This session's own use of the slot is no conflict.
    mine = slot_info(active=True, active_pid=4242)
    assert judge_slot(slot_facts(mine), create=True) == []
    failover = slot_facts(slot_info(), failover=True)
    assert judge_slot(failover, create=True, failover=True) == []


def test_settings_are_judged_before_the_slot() -> None:
    facts = slot_facts(slot_info(slot_type="physical"), name="Tap-Slot")
    assert problems(judge_slot(facts, create=True)) == [
        (
            ConfigError,
            "slot_name 'Tap-Slot' is not a valid replication slot name. Fix: use 1 to 63 "
            "characters out of lower-case letters, digits and underscores, e.g. 'tap_pgcdc'.",
        )
    ]
    old = slot_facts(server_version=160004)
    assert problems(judge_slot(old, create=True, failover=True)) == [
        (
            ConfigError,
            "slot_failover is true, but PostgreSQL 16.4 has no failover slots (PostgreSQL 17 "
            "added them). Fix: set slot_failover = false (after a failover, the tap then needs "
            "a new slot and a new snapshot), or upgrade to PostgreSQL 17+.",
        )
    ]


def test_a_missing_slot_without_create_slot_gives_the_sql() -> None:
    assert problems(judge_slot(slot_facts(), create=False, failover=True)) == [
        (
            SlotError,
            "Replication slot 'tap_pgcdc' does not exist and create_slot is false. Fix: create "
            "it in database 'app' with SELECT pg_create_logical_replication_slot('tap_pgcdc', "
            "'pgoutput', false, false, true); or set create_slot = true to let the tap create it.",
        )
    ]


def test_slots_of_something_else_are_refused_one_reason_at_a_time() -> None:
    def only(slot: SlotInfo) -> str:
        [(kind, message)] = problems(judge_slot(slot_facts(slot), create=True))
        assert kind is SlotError
        return message

    # A physical slot has no plugin either: only the first reason is given.
    assert only(slot_info(slot_type="physical", plugin=None, database=None)) == (
        "Replication slot 'tap_pgcdc' is a physical slot (used by a standby or a backup tool), "
        "not a logical one. Fix: set slot_name to another name; tap-pgcdc creates its own slot."
    )
    assert only(slot_info(plugin="wal2json")) == (
        "Replication slot 'tap_pgcdc' uses the output plugin 'wal2json', but tap-pgcdc needs "
        "'pgoutput': it probably belongs to another tool. Fix: set slot_name to another name; "
        "or, if nothing uses this slot, drop it with SELECT "
        "pg_drop_replication_slot('tap_pgcdc'); and let the tap create a new one (the tables "
        "are then snapshotted again)."
    )
    assert only(slot_info(database="other")) == (
        "Replication slot 'tap_pgcdc' belongs to database 'other', but the tap is connected to "
        "'app'; a logical slot only decodes its own database. Fix: set slot_name to a name "
        "unique to this database (e.g. 'tap_pgcdc_app'), or set database = 'other'."
    )
    assert only(slot_info(temporary=True, active=True, active_pid=77)) == (
        "Replication slot 'tap_pgcdc' is a temporary slot of another session (pid 77) and "
        "disappears when that session ends. Fix: set slot_name to another name."
    )
    assert only(slot_info(active=True, active_pid=77)) == (
        "Replication slot 'tap_pgcdc' is in use by another session (pid 77): another tap-pgcdc "
        "run or another consumer is reading it. Fix: stop that run, or give this tap a "
        "different slot_name; if that session is stale, end it with SELECT "
        "pg_terminate_backend(77);"
    )


def test_a_slot_made_without_failover_is_refused_when_failover_is_asked() -> None:
    facts = slot_facts(slot_info(), failover=False)
    assert judge_slot(facts, create=True) == []
    assert problems(judge_slot(facts, create=True, failover=True)) == [
        (
            SlotError,
            "slot_failover is true, but replication slot 'tap_pgcdc' was created without "
            "failover, so it would be lost when a standby is promoted. Fix: make it a failover "
            'slot while no tap run reads it, over a replication connection: psql "dbname=app '
            'replication=database" -c "ALTER_REPLICATION_SLOT tap_pgcdc (FAILOVER true)"; or '
            "set slot_failover = false.",
        )
    ]


def test_an_invalidated_slot_is_refused_unless_the_caller_recovers() -> None:
    lost = slot_info(
        wal_status="lost", invalidation_reason="wal_removed", restart_lsn=None, conflicting=True
    )
    assert invalidation(lost) == (
        "wal_status=lost, invalidation_reason=wal_removed",
        "the WAL it still needed was removed (it fell further behind than "
        "max_slot_wal_keep_size allows), so the changes since its last confirmed position are "
        "lost",
    )
    assert problems(judge_slot(slot_facts(lost), create=True)) == [
        (
            SlotError,
            "Replication slot 'tap_pgcdc' was invalidated (wal_status=lost, "
            "invalidation_reason=wal_removed): the WAL it still needed was removed (it fell "
            "further behind than max_slot_wal_keep_size allows), so the changes since its last "
            "confirmed position are lost. The changes it held cannot be read any more. Fix: "
            "recover by re-snapshotting: set on_slot_lost = resnapshot and run the tap (it drops "
            "and recreates the slot and snapshots the streams again), or drop the slot with "
            "SELECT pg_drop_replication_slot('tap_pgcdc'); then run the tap without its state. "
            "To prevent it, run the tap more often or raise max_slot_wal_keep_size.",
        )
    ]
    assert judge_slot(slot_facts(lost), create=True, allow_invalidated=True) == []
    # Invalidated on a standby: no advice about max_slot_wal_keep_size.
    conflicted = slot_info(conflicting=True, wal_status="reserved")
    [(kind, message)] = problems(judge_slot(slot_facts(conflicted), create=True))
    assert kind is SlotError
    assert message.startswith(
        "Replication slot 'tap_pgcdc' was invalidated (conflicting=true): it conflicted with "
        "recovery on this standby. The changes"
    )
    assert message.endswith("then run the tap without its state.")


def test_invalidation_reads_each_servers_way_of_saying_it() -> None:
    wal_removed = invalidation(slot_info(wal_status="lost"))
    assert wal_removed is not None and wal_removed[0] == "wal_status=lost"
    pg13 = invalidation(slot_info(wal_status=None, restart_lsn=None, conflicting=None))
    assert pg13 is not None and pg13[0] == "restart_lsn is NULL"
    idle = invalidation(slot_info(invalidation_reason="idle_timeout"))
    assert idle == (
        "invalidation_reason=idle_timeout",
        "it was idle for longer than idle_replication_slot_timeout",
    )
    assert invalidation(slot_info(invalidation_reason="new_reason"))[1] == (  # type: ignore[index]
        "the server invalidated it"
    )
    assert invalidation(slot_info()) is None


# --- replica identity ---------------------------------------------------------------------------


PG15 = Decoding(server_version=150004, publication="pub", publishes_generated=False)


def identity(name: str, replident: str, **changes: Any) -> ReplicaIdentity:
    values: dict[str, Any] = {
        "top_schema": "public",
        "top_name": name,
        "schema": "public",
        "name": name,
        "replident": replident,
        "has_primary_key": False,
        "has_identity_index": False,
    }
    values.update(changes)
    return ReplicaIdentity(**values)


def test_replica_identity_problems_name_each_table_and_the_fix() -> None:
    unidentified = (
        "so its UPDATEs and DELETEs cannot be identified (Postgres refuses them while the table "
        "is published). Fix: "
    )
    found = judge_replica_identity(
        [
            identity("with_pk", "d", has_primary_key=True),
            identity("full_id", "f"),
            identity("by_index", "i", has_identity_index=True),
            identity("no_pk", "d"),
            identity("nothing", "n", has_primary_key=True),
            identity("dropped", "i"),
            identity("logs_b", "d", top_name="logs"),
            identity("scratch", "d", has_primary_key=True, persistence="u"),
        ],
        PG15,
    )
    assert [str(verdict) for verdict in found] == [
        "public.no_pk cannot be captured from the log: it has no primary key and REPLICA "
        f'IDENTITY DEFAULT, {unidentified}ALTER TABLE "public"."no_pk" REPLICA IDENTITY FULL, '
        "or add a primary key.",
        "public.nothing cannot be captured from the log: it has REPLICA IDENTITY NOTHING, "
        f'{unidentified}ALTER TABLE "public"."nothing" REPLICA IDENTITY FULL (or DEFAULT, if it '
        "has a primary key).",
        "public.dropped cannot be captured from the log: its REPLICA IDENTITY USING INDEX names "
        f'an index that was dropped, {unidentified}ALTER TABLE "public"."dropped" REPLICA '
        "IDENTITY FULL (or DEFAULT, if it has a primary key).",
        "public.logs_b (a partition of public.logs) cannot be captured from the log: it has no "
        f'primary key and REPLICA IDENTITY DEFAULT, {unidentified}ALTER TABLE "public"."logs_b" '
        "REPLICA IDENTITY FULL, or add a primary key.",
        "public.scratch cannot be captured from the log: it is UNLOGGED, so none of its changes "
        'reach the WAL. Fix: ALTER TABLE "public"."scratch" SET LOGGED.',
    ]
    # A partition's verdict belongs to the partitioned table that was selected.
    assert [(v.top_name, v.name) for v in by_table(found)[("public", "logs")]] == [
        ("logs", "logs_b")
    ]
    assert judge_replica_identity([], PG15) == []
