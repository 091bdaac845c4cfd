"""The pure judgements over server, slot, publication and replica identity facts (no server).

The run and `--test` judge the same facts with these functions; the facts are built by hand
here, and whole problem lists are compared: the exception type of each and its message.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tap_pgcdc.errors import (
    ConfigError,
    PrivilegeError,
    ServerConfigError,
    SlotError,
    TapPgCdcError,
)
from tap_pgcdc.replication.identity import ReplicaIdentity, judge_replica_identity
from tap_pgcdc.replication.publication import (
    CatalogTable,
    Publication,
    PublicationFacts,
    PublicationInfo,
    PublicationRights,
    Requested,
    judge_publication,
)
from tap_pgcdc.replication.server import ServerInfo, judge_server
from tap_pgcdc.replication.slot import SlotFacts, SlotInfo, invalidation, judge_slot


def problems(found: list[TapPgCdcError]) -> list[tuple[type[TapPgCdcError], str]]:
    return [(type(problem), str(problem)) for problem in found]


# --- the server ---------------------------------------------------------------------------------


def server(**changes: Any) -> ServerInfo:
    values: dict[str, Any] = {
        "version_num": 150018,
        "wal_level": "logical",
        "max_replication_slots": 10,
        "max_wal_senders": 10,
        "slots_in_use": 2,
        "senders_in_use": 1,
        "is_superuser": False,
        "can_replicate": True,
        "current_user": "tap",
        "database": "app",
        "system_identifier": "7310000000000000000",
    }
    values.update(changes)
    return ServerInfo(**values)


def test_a_server_ready_for_logical_replication_has_no_problem() -> None:
    assert judge_server(server()) == []
    assert judge_server(server(max_replication_slots=2, slots_in_use=2), need_slots=0) == []


def test_every_server_problem_is_listed_in_the_order_a_user_fixes_them() -> None:
    info = server(
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


# --- the publication ----------------------------------------------------------------------------


def table(oid: int, name: str, **changes: Any) -> CatalogTable:
    values: dict[str, Any] = {
        "oid": oid,
        "display": f"public.{name}",
        "sql": f'"public"."{name}"',
        "kind": "r",
        "persistence": "p",
        "ancestors": frozenset(),
        "leaves": (),
    }
    values.update(changes)
    return CatalogTable(**values)


PLAIN = table(101, "plain")
OTHER = table(102, "other")
PARTS = table(103, "parts", kind="p")


def publication(
    *members: CatalogTable, owned: bool = True, filtered: frozenset[int] = frozenset(), **info: Any
) -> Publication:
    values: dict[str, Any] = {
        "name": "pub",
        "owner": "tap",
        "all_tables": False,
        "publish_via_partition_root": True,
        "pubinsert": True,
        "pubupdate": True,
        "pubdelete": True,
        "pubtruncate": True,
        "table_oids": frozenset(member.oid for member in members),
    }
    values.update(info)
    return Publication(
        info=PublicationInfo(**values),
        oid=9000,
        tables={member.oid: member.sql for member in members},
        filtered=filtered,
        schemas=(),
        owned=owned,
    )


def pub_facts(
    selected: list[CatalogTable], pub: Publication | None, **changes: Any
) -> PublicationFacts:
    values: dict[str, Any] = {
        "name": "pub",
        "server_version": 150004,
        "user": "tap",
        "dbname": "app",
        "requested": tuple(Requested(t.oid, "public", t.display.split(".")[1]) for t in selected),
        "catalog": {t.oid: t for t in selected},
        "publication": pub,
        "rights": None,
    }
    values.update(changes)
    return PublicationFacts(**values)


WITH = "WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true);"


def test_a_publication_that_lists_the_selection_has_no_problem() -> None:
    for create in (True, False):
        assert judge_publication(pub_facts([PLAIN], publication(PLAIN)), create=create) == []
        everything = publication(all_tables=True, table_oids=frozenset())
        assert judge_publication(pub_facts([PLAIN], everything), create=create) == []
    # Managed: listing other tables is for apply_publication to fix, not a problem.
    assert judge_publication(pub_facts([PLAIN], publication(OTHER)), create=True) == []
    # A missing publication is created (its rights are the server's to refuse in a run).
    assert judge_publication(pub_facts([PLAIN], None), create=True) == []


def test_the_first_unpublishable_table_is_the_only_problem() -> None:
    gone = pub_facts([PLAIN, OTHER], None, catalog={PLAIN.oid: PLAIN})
    assert problems(judge_publication(gone, create=True)) == [
        (
            ConfigError,
            "Table public.other (oid 102) no longer exists: it was dropped or recreated since "
            "discovery. Fix: run discovery again and update the catalog's selection.",
        )
    ]
    view = table(104, "v", kind="v")
    unlogged = table(105, "scratch", persistence="u")
    selection = pub_facts([view, unlogged], publication(PLAIN, pubdelete=False))
    assert problems(judge_publication(selection, create=False)) == [
        (
            ConfigError,
            "public.v is a view, which has no change stream. Fix: replicate it with FULL_TABLE "
            "instead of LOG_BASED.",
        )
    ]
    assert problems(judge_publication(pub_facts([unlogged], None), create=True)) == [
        (
            ConfigError,
            "public.scratch is an UNLOGGED table: its changes are not written to the WAL, so "
            "logical replication cannot see them. Fix: replicate it with FULL_TABLE, or make it "
            'logged with ALTER TABLE "public"."scratch" SET LOGGED;',
        )
    ]
    pg12 = pub_facts(
        [dataclasses.replace(PARTS, leaves=("public.parts_a", "public.parts_b"))],
        None,
        server_version=120020,
    )
    assert problems(judge_publication(pg12, create=True)) == [
        (
            ConfigError,
            "public.parts is a partitioned table, and PostgreSQL 12 cannot publish partitioned "
            "tables (PostgreSQL 13 can). Fix: deselect it and select its partitions instead "
            "(public.parts_a, public.parts_b), or upgrade to PostgreSQL 13+.",
        )
    ]


def test_a_missing_publication_without_create_gives_the_sql() -> None:
    facts = pub_facts([PLAIN, PLAIN, OTHER], None)
    assert problems(judge_publication(facts, create=False)) == [
        (
            SlotError,
            "Publication 'pub' does not exist and create_publication is false. Fix: create it "
            "in database 'app' (as the owner of the tables or a superuser) with: CREATE "
            'PUBLICATION "pub" FOR TABLE ONLY "public"."plain", ONLY "public"."other" '
            f"{WITH} or set create_publication = true to let the tap create it.",
        )
    ]


def test_publish_options_come_first_then_what_is_not_published() -> None:
    pub = publication(PLAIN, pubdelete=False, pubtruncate=False, publish_via_partition_root=False)
    facts = pub_facts([PLAIN, OTHER], pub)
    fix = "ALTER PUBLICATION \"pub\" SET (publish = 'insert, update, delete, truncate');"
    assert problems(judge_publication(facts, create=False)) == [
        (
            SlotError,
            "Publication 'pub' does not publish delete, truncate (publish = 'insert, update'), "
            f"so the tap would miss those changes. Fix: {fix}",
        ),
        (
            SlotError,
            "Publication 'pub' does not publish public.other, selected for LOG_BASED "
            "replication, and create_publication is false. Fix: add them with ALTER PUBLICATION "
            '"pub" ADD TABLE ONLY "public"."other"; or set create_publication = true to let the '
            "tap manage the publication.",
        ),
    ]
    parents = pub_facts([PARTS], publication(PARTS, publish_via_partition_root=False))
    assert problems(judge_publication(parents, create=True)) == [
        (
            SlotError,
            "Publication 'pub' has publish_via_partition_root = false, so changes to the "
            "partitions of public.parts would arrive under each partition's name instead of the "
            'selected partitioned table\'s. Fix: ALTER PUBLICATION "pub" SET '
            "(publish_via_partition_root = true);",
        )
    ]


def test_a_parent_in_the_publication_covers_its_partition_but_a_filter_does_not() -> None:
    partition = table(106, "parts_a", ancestors=frozenset({PARTS.oid}))
    assert judge_publication(pub_facts([partition], publication(PARTS)), create=False) == []
    filtered = publication(PLAIN, OTHER, filtered=frozenset({PLAIN.oid}))
    assert judge_publication(pub_facts([OTHER], filtered), create=False) == []
    pub = '"pub"'
    assert problems(judge_publication(pub_facts([PLAIN], filtered), create=False)) == [
        (
            SlotError,
            'Publication \'pub\' publishes "public"."plain" with a row filter (WHERE) or a '
            "column list, so the tap would miss rows or columns, and create_publication is "
            f"false. Fix: list them in full, in one transaction: BEGIN; ALTER PUBLICATION {pub} "
            f'DROP TABLE ONLY "public"."plain"; ALTER PUBLICATION {pub} ADD TABLE ONLY '
            '"public"."plain"; COMMIT; or set create_publication = true to let the tap manage '
            "the publication.",
        )
    ]


def test_a_publication_of_another_role_cannot_be_altered() -> None:
    foreign = publication(PLAIN, owned=False, owner="admin")
    assert judge_publication(pub_facts([PLAIN], foreign), create=True) == []
    assert problems(judge_publication(pub_facts([PLAIN, OTHER], foreign), create=True)) == [
        (
            PrivilegeError,
            "Publication 'pub' is owned by role 'admin', so 'tap' cannot change it to list "
            "exactly the selected tables. Fix: have 'admin' or a superuser run ALTER "
            'PUBLICATION "pub" OWNER TO "tap"; or set publication_name to a publication this '
            "user owns; or set create_publication = false and use a publication that already "
            "lists the tables (here, 'admin' would run: ALTER PUBLICATION \"pub\" SET TABLE ONLY "
            '"public"."plain", ONLY "public"."other";).',
        )
    ]


def test_rights_are_judged_only_when_they_were_read() -> None:
    rights = PublicationRights(can_create=False, not_owned=((OTHER.oid, "public.other"),))
    create_sql = (
        f'CREATE PUBLICATION "pub" FOR TABLE ONLY "public"."plain", ONLY "public"."other" {WITH}'
    )
    assert judge_publication(pub_facts([PLAIN, OTHER], None), create=True) == []
    missing = pub_facts([PLAIN, OTHER], None, rights=rights)
    assert problems(judge_publication(missing, create=True)) == [
        (
            PrivilegeError,
            "Role 'tap' may not create publication 'pub': it lacks the CREATE privilege on "
            'database \'app\'. Fix: GRANT CREATE ON DATABASE "app" TO "tap"; or have the '
            f"tables' owner or a superuser run: {create_sql} and set create_publication = false.",
        ),
        (
            PrivilegeError,
            "Role 'tap' may not create publication 'pub': adding a table to a publication needs "
            "ownership of the table, and public.other belong to other roles. Fix: run the tap as "
            "the tables' owner (or a role that is a member of it), or have the owner or a "
            f"superuser run: {create_sql} and set create_publication = false.",
        ),
    ]
    # Extending a publication needs no CREATE privilege, only the tables it adds.
    extending = pub_facts([PLAIN, OTHER], publication(PLAIN), rights=rights)
    alter_sql = 'ALTER PUBLICATION "pub" SET TABLE ONLY "public"."plain", ONLY "public"."other";'
    assert problems(judge_publication(extending, create=True)) == [
        (
            PrivilegeError,
            "Role 'tap' may not add tables to publication 'pub': adding a table to a "
            "publication needs ownership of the table, and public.other belong to other roles. "
            "Fix: run the tap as the tables' owner (or a role that is a member of it), or have "
            f"the owner or a superuser run: {alter_sql} and set create_publication = false.",
        )
    ]
    listed = pub_facts([OTHER], publication(OTHER), rights=rights)
    assert judge_publication(listed, create=True) == []


# --- replica identity ---------------------------------------------------------------------------


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
    tail = (
        "UPDATE and DELETE on it will fail in Postgres itself while it is published (or be "
        "unidentifiable). Fix: "
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
        ]
    )
    assert found == [
        "public.no_pk has no replica identity (REPLICA IDENTITY DEFAULT and no primary key): "
        f'{tail}ALTER TABLE "public"."no_pk" REPLICA IDENTITY FULL; or add a primary key.',
        "public.nothing has no replica identity (REPLICA IDENTITY NOTHING): "
        f'{tail}ALTER TABLE "public"."nothing" REPLICA IDENTITY FULL; or add a primary key '
        "and set REPLICA IDENTITY DEFAULT.",
        "public.dropped has no replica identity (REPLICA IDENTITY USING INDEX, but that index "
        f'was dropped): {tail}ALTER TABLE "public"."dropped" REPLICA IDENTITY FULL; or add a '
        "primary key and set REPLICA IDENTITY DEFAULT.",
        "public.logs_b (a partition of public.logs) has no replica identity (REPLICA IDENTITY "
        f'DEFAULT and no primary key): {tail}ALTER TABLE "public"."logs_b" REPLICA IDENTITY '
        "FULL; or add a primary key.",
    ]
    assert judge_replica_identity([]) == []
