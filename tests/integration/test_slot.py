"""The slot and the publication against a real server: create, inspect, validate, alter, refuse."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.extras
import pytest

from tap_pgcdc.errors import (
    ConfigError,
    PrivilegeError,
    ServerConfigError,
    SlotError,
    raise_first,
)
from tap_pgcdc.pg.catalog import TableInfo, load_tables
from tap_pgcdc.pg.connect import connect
from tap_pgcdc.pg.quoting import quote_ident
from tap_pgcdc.replication.decoder import decode
from tap_pgcdc.replication.identity import fetch_replica_identities, judge_replica_identity
from tap_pgcdc.replication.messages import Insert, Relation
from tap_pgcdc.replication.publication import PublicationInfo, judge_publication
from tap_pgcdc.replication.publication_ops import (
    apply_publication,
    fetch_decoding,
    fetch_publication,
    get_publication,
)
from tap_pgcdc.replication.server import ServerInfo, fetch_server, judge_server
from tap_pgcdc.replication.slot import (
    SlotInfo,
    create_slot,
    drop_slot,
    fetch_slot,
    get_slot,
    judge_slot,
    warn_if_unreserved,
)
from tests.conftest import TestDb
from tests.facts import server_info
from tests.pgserver import PgServer, running_server

# The run's steps, fetch -> judge -> act, as the tests drive them.


def check_logical_replication(info: ServerInfo, **need: int) -> None:
    raise_first(judge_server(info, **need))


def ensure_slot(
    conn: Any, name: str, *, create: bool, failover: bool = False
) -> tuple[SlotInfo, bool]:
    facts = fetch_slot(conn, name)
    raise_first(judge_slot(facts, create=create, failover=failover))
    created = False
    if facts.slot is None:
        facts, created = create_slot(conn, name, failover=failover)
        raise_first(judge_slot(facts, create=create, failover=failover))
    assert facts.slot is not None
    warn_if_unreserved(facts.slot)
    return facts.slot, created


def ensure_publication(
    conn: Any, name: str, selected: list[TableInfo], *, create: bool
) -> PublicationInfo:
    facts = fetch_publication(conn, name, selected)
    raise_first(judge_publication(facts, create=create))
    return apply_publication(conn, facts, create=create)


def replica_identity_problems(conn: Any, selected: list[TableInfo]) -> list[str]:
    decoding = fetch_decoding(conn, "pub", create=True)
    return [
        str(v) for v in judge_replica_identity(fetch_replica_identities(conn, selected), decoding)
    ]


ODD_SCHEMA = "Sales Dept"
ODD_TABLE = 'My "Odd" Tablé'


@pytest.fixture
def conn(db: TestDb) -> Iterator[Any]:
    """A tap connection (not autocommit, pinned session settings), as the tap opens it."""
    connection = connect(db.config())
    yield connection
    connection.close()


def tables(conn: Any, *names: str) -> list[TableInfo]:
    """Discovered tables by name ("t" for public.t, or "schema.table"), in the order given."""
    found = {f"{t.schema}.{t.name}": t for t in load_tables(conn)}
    return [found[name if "." in name else f"public.{name}"] for name in names]


def publication_members(db: TestDb, name: str) -> list[tuple[str, int]]:
    """(table, xmin) of each pg_publication_rel row: the xmin changes when a row is rewritten."""
    rows = db.execute(
        "SELECT pr.prrelid::regclass::text, pr.xmin::text::int FROM pg_publication_rel pr "
        "JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = %s ORDER BY 1",
        (name,),
    )
    return [(row[0], row[1]) for row in rows]


def slot_names(db: TestDb) -> list[str]:
    return [row[0] for row in db.execute("SELECT slot_name FROM pg_replication_slots ORDER BY 1")]


def oid_of(db: TestDb, qualified: str) -> int:
    return int(db.execute("SELECT %s::regclass::oid", (qualified,))[0][0])


def hold_slot(db: TestDb, slot: str, publication: str) -> tuple[Any, int]:
    """Start streaming from `slot` on a replication connection; return it and its backend pid."""
    rconn = psycopg2.connect(
        db.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection
    )
    cur = rconn.cursor()
    cur.start_replication(
        slot_name=slot,
        decode=False,
        options={"proto_version": "1", "publication_names": publication},
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = db.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s AND active", (slot,)
        )
        if rows:
            return rconn, int(rows[0][0])
        time.sleep(0.05)
    rconn.close()
    pytest.fail(f"slot {slot} did not become active")


def require(pg: PgServer, version_num: int, why: str) -> None:
    """Skip a test of a feature the session's server (see TAP_PGCDC_PG_BIN) does not have."""
    if pg.server_version_num() < version_num:
        pytest.skip(why)


def with_options(pg: PgServer) -> str:
    """The WITH clause the tap gives a publication it creates on this server."""
    via_root = ", publish_via_partition_root = true" if pg.server_version_num() >= 130000 else ""
    return f"WITH (publish = 'insert, update, delete, truncate'{via_root});"


PARTITIONS_NEED_13 = "publications take partitioned tables from PostgreSQL 13"


# --- server_info / check_logical_replication ----------------------------------------------------


def test_server_info_describes_the_server_and_role(pg: PgServer, db: TestDb, conn: Any) -> None:
    ensure_slot(conn, "info_slot", create=True)
    expected_slots = db.execute("SELECT count(*) FROM pg_replication_slots")[0][0]
    system_identifier = db.execute("SELECT system_identifier::text FROM pg_control_system()")
    info = fetch_server(conn)
    assert info == ServerInfo(
        version_num=pg.server_version_num(),
        wal_level="logical",
        max_replication_slots=20,
        max_wal_senders=20,
        slots_in_use=expected_slots,
        senders_in_use=0,
        is_superuser=True,
        can_replicate=True,
        current_user="postgres",
        database=db.name,
        system_identifier=system_identifier[0][0],
        idle_slot_timeout=0,  # idle_replication_slot_timeout: PostgreSQL 18, off by default
        now=info.now,  # the server's clock: checked below
    )
    ((server_now,),) = db.execute("SELECT now()")
    assert info.now is not None and info.now <= server_now
    check_logical_replication(info)


def test_server_info_counts_wal_senders(
    pg: PgServer, db: TestDb, conn: Any, make_role: Callable[..., str]
) -> None:
    ensure_publication(conn, "pub", [], create=True)
    ensure_slot(conn, "sender_slot", create=True)
    plain_conn = pg.connect(db.name, user=make_role("plain"))
    rconn, _ = hold_slot(db, "sender_slot", "pub")
    try:
        assert fetch_server(conn).senders_in_use == 1
        # A role without pg_read_all_stats sees the sender too (without its details).
        assert fetch_server(plain_conn).senders_in_use == 1
    finally:
        rconn.close()
        plain_conn.close()


def test_role_without_replication_is_refused_with_the_grant(
    pg: PgServer, db: TestDb, make_role: Callable[..., str]
) -> None:
    plain = make_role("plain")
    replicator = make_role("replicator", "LOGIN REPLICATION")
    plain_conn = pg.connect(db.name, user=plain)
    try:
        info = fetch_server(plain_conn)
        # The server refuses the slot too; the tap's message carries the fix.
        with pytest.raises(PrivilegeError) as slot_err:
            ensure_slot(plain_conn, "plain_slot", create=True)
    finally:
        plain_conn.close()
    assert f"ALTER ROLE {quote_ident(plain)} REPLICATION;" in str(slot_err.value)
    assert slot_names(db) == []
    assert (info.is_superuser, info.can_replicate, info.current_user) == (False, False, plain)
    assert info.system_identifier.isdigit()  # pg_control_system() is open to every role
    with pytest.raises(PrivilegeError) as err:
        check_logical_replication(info)
    assert f"ALTER ROLE {quote_ident(plain)} REPLICATION;" in str(err.value)
    assert f"GRANT rds_replication TO {quote_ident(plain)};" in str(err.value)

    replicator_conn = pg.connect(db.name, user=replicator)
    try:
        info = fetch_server(replicator_conn)
    finally:
        replicator_conn.close()
    assert (info.is_superuser, info.can_replicate) == (False, True)
    check_logical_replication(info)


def test_membership_of_rds_replication_counts_as_replication(
    pg: PgServer, db: TestDb, make_role: Callable[..., str]
) -> None:
    # AWS RDS grants replication through membership of this role instead of the attribute.
    pg.execute("CREATE ROLE rds_replication NOLOGIN")
    try:
        member = make_role("rds_member")
        pg.execute(f"GRANT rds_replication TO {quote_ident(member)}")
        member_conn = pg.connect(db.name, user=member)
        try:
            assert fetch_server(member_conn).can_replicate is True
        finally:
            member_conn.close()
    finally:
        pg.execute("DROP ROLE rds_replication")  # memberships go with it


def test_wal_level_below_logical_names_the_setting_everywhere() -> None:
    with pytest.raises(ServerConfigError) as err:
        check_logical_replication(server_info(wal_level="replica"))
    assert str(err.value) == (
        "wal_level is 'replica' on this server, but logical replication needs 'logical'. Fix: "
        "run ALTER SYSTEM SET wal_level = logical; as a superuser and restart PostgreSQL. On "
        "managed services: AWS RDS/Aurora: set rds.logical_replication = 1 in the DB parameter "
        "group and reboot; Google Cloud SQL: set the flag cloudsql.logical_decoding = on; Azure "
        "Database for PostgreSQL: set the server parameter wal_level = logical (flexible server) "
        "or azure.replication_support = logical (single server) and restart."
    )


def test_privilege_message_quotes_the_role() -> None:
    with pytest.raises(PrivilegeError) as err:
        check_logical_replication(server_info(can_replicate=False, current_user="Tap User"))
    assert str(err.value) == (
        "Role 'Tap User' may not use replication: it is not a superuser and has no REPLICATION "
        'attribute. Fix: as a superuser run ALTER ROLE "Tap User" REPLICATION; (AWS '
        'RDS/Aurora: GRANT rds_replication TO "Tap User"; Google Cloud SQL and Azure: ALTER '
        'ROLE "Tap User" REPLICATION; as cloudsqlsuperuser / azure_pg_admin).'
    )


def test_no_free_slot_or_sender_says_which_limit() -> None:
    with pytest.raises(ServerConfigError) as err:
        check_logical_replication(
            server_info(max_replication_slots=3, slots_in_use=2), need_slots=2
        )
    assert "max_replication_slots = 3 and 2 slots exist, but this run needs 2 more" in str(
        err.value
    )
    assert "ALTER SYSTEM SET max_replication_slots = 4;" in str(err.value)
    assert "pg_drop_replication_slot('name')" in str(err.value)
    check_logical_replication(server_info(max_replication_slots=2, slots_in_use=2), need_slots=0)

    with pytest.raises(ServerConfigError) as err:
        check_logical_replication(server_info(max_wal_senders=4, senders_in_use=4))
    assert "max_wal_senders = 4 and 4 replication connections are open" in str(err.value)
    assert "ALTER SYSTEM SET max_wal_senders = 5;" in str(err.value)


def test_old_server_is_refused() -> None:
    with pytest.raises(ServerConfigError, match=r"PostgreSQL 11\.22 is not supported"):
        check_logical_replication(server_info(version_num=110022))


# --- the slot -----------------------------------------------------------------------------------


def test_slot_is_created_once_and_then_reused(pg: PgServer, db: TestDb, conn: Any) -> None:
    version = pg.server_version_num()
    assert get_slot(conn, "tap_slot") is None
    info, created = ensure_slot(conn, "tap_slot", create=True)
    assert created is True
    assert info.restart_lsn is not None and info.confirmed_flush_lsn is not None
    assert info == SlotInfo(
        name="tap_slot",
        plugin="pgoutput",
        slot_type="logical",
        database=db.name,
        temporary=False,
        active=False,
        active_pid=None,
        restart_lsn=info.restart_lsn,
        confirmed_flush_lsn=info.confirmed_flush_lsn,
        wal_status="reserved" if version >= 130000 else None,
        invalidation_reason=None,
        conflicting=False if version >= 160000 else None,
    )
    # The slot's position is never moved by this module: a second look returns the same slot.
    db.execute("CREATE TABLE moving (id int); INSERT INTO moving VALUES (1)")
    again, created_again = ensure_slot(conn, "tap_slot", create=True)
    assert (again, created_again) == (info, False)
    assert get_slot(conn, "tap_slot") == info
    assert slot_names(db) == ["tap_slot"]


def test_missing_slot_without_create_gives_the_sql_and_creates_nothing(
    db: TestDb, conn: Any
) -> None:
    with pytest.raises(SlotError) as err:
        ensure_slot(conn, "wanted_slot", create=False)
    sql = "SELECT pg_create_logical_replication_slot('wanted_slot', 'pgoutput');"
    assert sql in str(err.value)
    assert "create_slot = true" in str(err.value)
    assert slot_names(db) == []
    db.execute(sql)
    info, created = ensure_slot(conn, "wanted_slot", create=False)
    assert (info.name, info.plugin, created) == ("wanted_slot", "pgoutput", False)


def test_invalid_slot_name_is_a_config_error(conn: Any) -> None:
    with pytest.raises(ConfigError, match="lower-case letters, digits and underscores"):
        ensure_slot(conn, "Tap-Slot", create=True)


def test_slot_of_another_plugin_is_refused(db: TestDb, conn: Any) -> None:
    db.execute("SELECT pg_create_logical_replication_slot('decoding_slot', 'test_decoding')")
    with pytest.raises(SlotError) as err:
        ensure_slot(conn, "decoding_slot", create=True)
    assert "uses the output plugin 'test_decoding', but tap-pgcdc needs 'pgoutput'" in str(
        err.value
    )
    assert "SELECT pg_drop_replication_slot('decoding_slot');" in str(err.value)
    # drop_slot will not drop it either: it is not ours.
    with pytest.raises(SlotError):
        drop_slot(conn, "decoding_slot")
    assert slot_names(db) == ["decoding_slot"]


def test_physical_slot_is_refused(pg: PgServer, conn: Any) -> None:
    pg.execute("SELECT pg_create_physical_replication_slot('standby_slot')")
    try:
        with pytest.raises(SlotError, match="'standby_slot' is a physical slot"):
            ensure_slot(conn, "standby_slot", create=True)
        with pytest.raises(SlotError):
            drop_slot(conn, "standby_slot")
    finally:
        pg.execute("SELECT pg_drop_replication_slot('standby_slot')")


def test_slot_of_another_database_is_refused(pg: PgServer, db: TestDb, conn: Any) -> None:
    pg.execute("SELECT pg_create_logical_replication_slot('elsewhere_slot', 'pgoutput')")
    try:
        with pytest.raises(SlotError) as err:
            ensure_slot(conn, "elsewhere_slot", create=True)
        assert f"belongs to database 'postgres', but the tap is connected to '{db.name}'" in str(
            err.value
        )
    finally:
        pg.execute("SELECT pg_drop_replication_slot('elsewhere_slot')")


def test_temporary_slot_of_another_session_is_refused(db: TestDb, conn: Any) -> None:
    other = db.connect()
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_create_logical_replication_slot('temp_slot', 'pgoutput', true)")
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        with pytest.raises(SlotError, match=f"temporary slot of another session \\(pid {pid}\\)"):
            ensure_slot(conn, "temp_slot", create=True)
    finally:
        other.close()


def test_slot_in_use_by_another_session_names_its_pid(db: TestDb, conn: Any) -> None:
    ensure_publication(conn, "pub", [], create=True)
    ensure_slot(conn, "busy_slot", create=True)
    rconn, pid = hold_slot(db, "busy_slot", "pub")
    try:
        with pytest.raises(SlotError) as err:
            ensure_slot(conn, "busy_slot", create=True)
        assert str(err.value) == (
            f"Replication slot 'busy_slot' is in use by another session (pid {pid}): another "
            "tap-pgcdc run or another consumer is reading it. Fix: stop that run, or give this "
            "tap a different slot_name; if that session is stale, end it with "
            f"SELECT pg_terminate_backend({pid});"
        )
        with pytest.raises(SlotError, match=f"still in use by pid {pid} after 0.3 s"):
            drop_slot(conn, "busy_slot", timeout=0.3)
    finally:
        rconn.close()


def test_drop_slot_waits_for_a_terminated_session(db: TestDb, conn: Any) -> None:
    ensure_publication(conn, "pub", [], create=True)
    ensure_slot(conn, "stale_slot", create=True)
    rconn, pid = hold_slot(db, "stale_slot", "pub")
    try:
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        drop_slot(conn, "stale_slot")
        assert get_slot(conn, "stale_slot") is None
        drop_slot(conn, "stale_slot")  # already gone: nothing to do
    finally:
        rconn.close()


def test_lost_slot_is_refused_with_the_recovery(pg: PgServer) -> None:
    require(pg, 130000, "max_slot_wal_keep_size arrived in PostgreSQL 13")
    # A server of its own: invalidating a slot needs a tiny max_slot_wal_keep_size.
    with running_server(settings={"max_slot_wal_keep_size": "1MB"}) as server:
        config = {"host": server.host, "port": server.port, "user": "postgres"}
        conn = connect({**config, "database": "postgres"})
        try:
            ensure_slot(conn, "doomed", create=True)
            server.execute("CREATE TABLE filler (x text)")
            deadline = time.monotonic() + 60
            while get_slot(conn, "doomed").wal_status != "lost":  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the slot was never invalidated"
                server.execute("INSERT INTO filler VALUES (repeat('x', 1000))")
                server.execute("SELECT pg_switch_wal()")
                server.execute("CHECKPOINT")
            lost = get_slot(conn, "doomed")
            assert lost is not None
            assert (lost.wal_status, lost.restart_lsn, lost.active) == ("lost", None, False)
            with pytest.raises(SlotError) as err:
                ensure_slot(conn, "doomed", create=True)
            # PG 17+ adds ", invalidation_reason=wal_removed" inside the parentheses.
            assert str(err.value).startswith(
                "Replication slot 'doomed' was invalidated (wal_status=lost"
            )
            assert "): the WAL it still needed was removed" in str(err.value)
            assert "SELECT pg_drop_replication_slot('doomed');" in str(err.value)
            assert "without its state" in str(err.value)
            drop_slot(conn, "doomed")
            info, created = ensure_slot(conn, "doomed", create=True)
            assert (created, info.wal_status) == (True, "reserved")
        finally:
            conn.close()


# --- the publication ----------------------------------------------------------------------------


@pytest.fixture
def schema(db: TestDb) -> None:
    """Tables of every shape the publication must handle."""
    db.execute(
        f"""
        CREATE TABLE plain (id int PRIMARY KEY, v text);
        CREATE TABLE other (id int PRIMARY KEY);
        CREATE TABLE third (id int PRIMARY KEY);
        CREATE SCHEMA {quote_ident(ODD_SCHEMA)};
        CREATE TABLE {quote_ident(ODD_SCHEMA)}.{quote_ident(ODD_TABLE)} (id int PRIMARY KEY);
        CREATE TABLE measures (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE measures_2024 PARTITION OF measures
            FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE measures_2025 PARTITION OF measures
            FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        """
    )


ODD = f"{ODD_SCHEMA}.{ODD_TABLE}"


@pytest.mark.usefixtures("schema")
def test_publication_is_created_with_the_options_and_exactly_the_tables(
    pg: PgServer, db: TestDb, conn: Any
) -> None:
    version = pg.server_version_num()
    selected = tables(conn, "plain", ODD, *(["measures"] if version >= 130000 else []))
    info = ensure_publication(conn, "Tap Pub", selected, create=True)
    assert info == PublicationInfo(
        name="Tap Pub",
        owner="postgres",
        all_tables=False,
        publish_via_partition_root=True if version >= 130000 else None,
        pubinsert=True,
        pubupdate=True,
        pubdelete=True,
        pubtruncate=True,
        table_oids=frozenset(t.oid for t in selected),
    )
    assert get_publication(conn, "Tap Pub") == info
    members = publication_members(db, "Tap Pub")
    assert [name for name, _ in members] == [
        '"Sales Dept"."My ""Odd"" Tablé"',
        *(["measures"] if version >= 130000 else []),
        "plain",
    ]
    # Idempotent: the second call changes nothing, not even by rewriting the same rows.
    assert ensure_publication(conn, "Tap Pub", selected, create=True) == info
    assert publication_members(db, "Tap Pub") == members


@pytest.mark.usefixtures("schema")
def test_partition_changes_arrive_under_the_selected_parent(
    pg: PgServer, db: TestDb, conn: Any
) -> None:
    require(pg, 130000, PARTITIONS_NEED_13)
    ensure_publication(conn, "pub", tables(conn, "measures"), create=True)
    ensure_slot(conn, "parts", create=True)
    db.execute("INSERT INTO measures VALUES (1, '2024-06-01'), (2, '2025-06-01')")
    rows = db.execute(
        "SELECT data FROM pg_logical_slot_peek_binary_changes('parts', NULL, NULL, "
        "'proto_version', '1', 'publication_names', 'pub')"
    )
    messages = [decode(bytes(row[0])) for row in rows]
    relations = {(m.relation_id, m.namespace, m.name) for m in messages if isinstance(m, Relation)}
    inserts = [m.relation_id for m in messages if isinstance(m, Insert)]
    parent = oid_of(db, "measures")
    assert inserts == [parent, parent]
    # pgoutput also describes each partition (it sends the ancestor's Relation, then the
    # partition's own), but every change refers to the parent.
    assert relations == {
        (parent, "public", "measures"),
        (oid_of(db, "measures_2024"), "public", "measures_2024"),
        (oid_of(db, "measures_2025"), "public", "measures_2025"),
    }


@pytest.mark.usefixtures("schema")
def test_publication_follows_the_selection(pg: PgServer, db: TestDb, conn: Any) -> None:
    ensure_publication(conn, "pub", tables(conn, "plain", "other"), create=True)
    parent = ["measures"] if pg.server_version_num() >= 130000 else []
    wider = tables(conn, "plain", "other", "third", *parent)
    assert ensure_publication(conn, "pub", wider, create=True).table_oids == {t.oid for t in wider}
    narrower = tables(conn, "third")
    info = ensure_publication(conn, "pub", narrower, create=True)
    assert info.table_oids == {narrower[0].oid}
    assert [name for name, _ in publication_members(db, "pub")] == ["third"]
    # An empty selection keeps the publication but lists nothing.
    empty = ensure_publication(conn, "pub", [], create=True)
    assert (empty.name, empty.table_oids, empty.pubdelete) == ("pub", frozenset(), True)
    assert ensure_publication(conn, "pub", [], create=True) == empty


@pytest.mark.usefixtures("schema")
def test_inheritance_children_are_not_added_behind_the_selection(db: TestDb, conn: Any) -> None:
    db.execute("CREATE TABLE child () INHERITS (plain)")
    ensure_publication(conn, "pub", tables(conn, "plain"), create=True)
    assert [name for name, _ in publication_members(db, "pub")] == ["plain"]


@pytest.mark.usefixtures("schema")
def test_missing_publication_without_create_gives_the_exact_sql(
    pg: PgServer, db: TestDb, conn: Any
) -> None:
    parent = pg.server_version_num() >= 130000
    selected = tables(conn, "plain", ODD, *(["measures"] if parent else []))
    with pytest.raises(SlotError) as err:
        ensure_publication(conn, "pub", selected, create=False)
    measures = ', ONLY "public"."measures"' if parent else ""
    sql = (
        'CREATE PUBLICATION "pub" FOR TABLE ONLY "public"."plain", '
        f'ONLY "Sales Dept"."My ""Odd"" Tablé"{measures} {with_options(pg)}'
    )
    assert sql in str(err.value)
    assert get_publication(conn, "pub") is None
    db.execute(sql)
    info = ensure_publication(conn, "pub", selected, create=False)
    assert info.table_oids == {t.oid for t in selected}


@pytest.mark.usefixtures("schema")
def test_incomplete_publication_without_create_lists_what_is_missing(db: TestDb, conn: Any) -> None:
    db.execute("CREATE PUBLICATION pub FOR TABLE plain, other")
    before = publication_members(db, "pub")
    selected = tables(conn, "plain", ODD, "third")
    with pytest.raises(SlotError) as err:
        ensure_publication(conn, "pub", selected, create=False)
    sql = (
        'ALTER PUBLICATION "pub" ADD TABLE ONLY "Sales Dept"."My ""Odd"" Tablé", '
        'ONLY "public"."third";'
    )
    assert str(err.value) == (
        f"Publication 'pub' does not publish {ODD}, public.third, selected for LOG_BASED "
        f"replication, and create_publication is false. Fix: add them with {sql} or set "
        "create_publication = true to let the tap manage the publication."
    )
    assert publication_members(db, "pub") == before
    db.execute(sql)
    # Tables beyond the selection (here `other`) are accepted when the tap does not manage it.
    info = ensure_publication(conn, "pub", selected, create=False)
    assert info.table_oids == {t.oid for t in [*selected, *tables(conn, "other")]}


@pytest.mark.usefixtures("schema")
def test_parent_in_publication_covers_a_selected_partition(
    pg: PgServer, db: TestDb, conn: Any
) -> None:
    require(pg, 130000, PARTITIONS_NEED_13)
    db.execute("CREATE PUBLICATION pub FOR TABLE measures WITH (publish_via_partition_root)")
    # Discovery never offers partitions, but a caller might pass one: build it by hand.
    measures = tables(conn, "measures")[0]
    p2024 = TableInfo(
        oid=oid_of(db, "measures_2024"),
        schema="public",
        name="measures_2024",
        kind="r",
        columns=measures.columns,
        key=measures.key,
        row_estimate=0,
        replica_identity="d",
    )
    info = ensure_publication(conn, "pub", [p2024], create=False)
    assert info.table_oids == {measures.oid}


@pytest.mark.usefixtures("schema")
def test_partitioned_table_on_pg12_names_its_partitions(pg: PgServer, conn: Any) -> None:
    if pg.server_version_num() >= 130000:
        pytest.skip("only PostgreSQL 12 cannot publish partitioned tables")
    with pytest.raises(ConfigError) as err:
        ensure_publication(conn, "pub", tables(conn, "plain", "measures"), create=True)
    assert str(err.value) == (
        "public.measures is a partitioned table, and PostgreSQL 12 cannot publish partitioned "
        "tables (PostgreSQL 13 can). Fix: deselect it and select its partitions instead "
        "(public.measures_2024, public.measures_2025), or upgrade to PostgreSQL 13+."
    )
    assert get_publication(conn, "pub") is None


@pytest.mark.usefixtures("schema")
def test_publication_that_skips_operations_is_refused(db: TestDb, conn: Any) -> None:
    db.execute("CREATE PUBLICATION pub FOR TABLE plain WITH (publish = 'insert, update')")
    selected = tables(conn, "plain")
    for create in (True, False):
        with pytest.raises(SlotError) as err:
            ensure_publication(conn, "pub", selected, create=create)
        sql = "ALTER PUBLICATION \"pub\" SET (publish = 'insert, update, delete, truncate');"
        assert str(err.value) == (
            "Publication 'pub' does not publish delete, truncate (publish = 'insert, update'), "
            f"so the tap would miss those changes. Fix: {sql}"
        )
    db.execute(sql)
    assert ensure_publication(conn, "pub", selected, create=False).pubtruncate is True


@pytest.mark.usefixtures("schema")
def test_publish_via_partition_root_is_required_for_partitioned_tables(
    pg: PgServer, db: TestDb, conn: Any
) -> None:
    require(pg, 130000, PARTITIONS_NEED_13)
    db.execute("CREATE PUBLICATION pub FOR TABLE plain, measures")
    # Without a partitioned table selected the option changes nothing, so it is not required.
    info = ensure_publication(conn, "pub", tables(conn, "plain", "measures")[:1], create=False)
    assert info.publish_via_partition_root is False
    with pytest.raises(SlotError) as err:
        ensure_publication(conn, "pub", tables(conn, "plain", "measures"), create=True)
    sql = 'ALTER PUBLICATION "pub" SET (publish_via_partition_root = true);'
    assert sql in str(err.value)
    assert "the partitions of public.measures" in str(err.value)
    db.execute(sql)
    info = ensure_publication(conn, "pub", tables(conn, "plain", "measures"), create=False)
    assert info.publish_via_partition_root is True


@pytest.mark.usefixtures("schema")
def test_all_tables_publication_is_accepted_as_it_is(pg: PgServer, db: TestDb, conn: Any) -> None:
    if pg.server_version_num() >= 130000:
        db.execute("CREATE PUBLICATION pub FOR ALL TABLES WITH (publish_via_partition_root)")
        selected = tables(conn, "plain", "measures")
    else:
        db.execute("CREATE PUBLICATION pub FOR ALL TABLES")
        selected = tables(conn, "plain")
    info = ensure_publication(conn, "pub", selected, create=True)
    assert (info.all_tables, info.table_oids) == (True, frozenset())
    assert get_publication(conn, "pub") == info


@pytest.mark.usefixtures("schema")
def test_schema_publication_covers_its_tables_and_is_replaced_when_managed(
    pg: PgServer, db: TestDb, conn: Any
) -> None:
    require(pg, 150000, "FOR TABLES IN SCHEMA arrived in PostgreSQL 15")
    db.execute(f"CREATE PUBLICATION pub FOR TABLES IN SCHEMA {quote_ident(ODD_SCHEMA)}")
    odd = tables(conn, ODD)
    assert ensure_publication(conn, "pub", odd, create=False).table_oids == {odd[0].oid}
    with pytest.raises(SlotError, match=r"does not publish public\.plain"):
        ensure_publication(conn, "pub", tables(conn, "plain"), create=False)
    info = ensure_publication(conn, "pub", tables(conn, "plain"), create=True)
    assert info.table_oids == {tables(conn, "plain")[0].oid}
    assert db.execute("SELECT count(*) FROM pg_publication_namespace")[0][0] == 0
    assert ensure_publication(conn, "pub", [], create=True).table_oids == frozenset()


@pytest.mark.usefixtures("schema")
def test_row_filters_and_column_lists_are_refused_or_removed(
    pg: PgServer, db: TestDb, conn: Any
) -> None:
    require(pg, 150000, "row filters and column lists arrived in PostgreSQL 15")
    db.execute("CREATE PUBLICATION pub FOR TABLE plain WHERE (id > 10), other (id), third")
    selected = tables(conn, "plain", "other", "third")
    before = publication_members(db, "pub")
    with pytest.raises(SlotError) as err:
        ensure_publication(conn, "pub", selected, create=False)
    sql = (
        'BEGIN; ALTER PUBLICATION "pub" DROP TABLE ONLY "public"."plain"; '
        'ALTER PUBLICATION "pub" ADD TABLE ONLY "public"."plain"; '
        'ALTER PUBLICATION "pub" DROP TABLE ONLY "public"."other"; '
        'ALTER PUBLICATION "pub" ADD TABLE ONLY "public"."other"; COMMIT;'
    )
    assert str(err.value) == (
        'Publication \'pub\' publishes "public"."plain", "public"."other" with a row '
        "filter (WHERE) or a column list, so the tap would miss rows or columns, and "
        f"create_publication is false. Fix: list them in full, in one transaction: {sql} or "
        "set create_publication = true to let the tap manage the publication (a row filter "
        "without a column list is accepted when row_filters sets the same expression for the "
        "stream)."
    )
    assert publication_members(db, "pub") == before
    # Only the selected tables matter: a filter on a table beyond the selection is accepted.
    ensure_publication(conn, "pub", selected[2:], create=False)
    # Managing the publication lists them in full.
    ensure_publication(conn, "pub", selected, create=True)
    rows = db.execute(
        "SELECT count(*) FROM pg_publication_rel WHERE prqual IS NOT NULL OR prattrs IS NOT NULL"
    )
    assert rows == [(0,)]
    db.execute("ALTER PUBLICATION pub SET TABLE plain WHERE (id > 10), other, third")
    db.execute(sql)
    ensure_publication(conn, "pub", selected, create=False)


@pytest.mark.usefixtures("schema")
def test_unpublishable_selections_are_config_errors(db: TestDb, conn: Any) -> None:
    db.execute("CREATE VIEW v AS SELECT 1 AS x; CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)")
    view, scratch = tables(conn, "v", "scratch")
    with pytest.raises(ConfigError, match=r"public\.v is a view, which has no change stream"):
        ensure_publication(conn, "pub", [view], create=True)
    with pytest.raises(ConfigError, match=re.escape('ALTER TABLE "public"."scratch" SET LOGGED;')):
        ensure_publication(conn, "pub", [scratch], create=True)
    stale = tables(conn, "other")
    db.execute("DROP TABLE other")
    with pytest.raises(ConfigError, match=r"public.other \(oid \d+\) no longer exists"):
        ensure_publication(conn, "pub", stale, create=True)
    assert get_publication(conn, "pub") is None


@pytest.mark.usefixtures("schema")
def test_publication_owned_by_another_role_needs_its_owner(
    db: TestDb, conn: Any, make_role: Callable[..., str]
) -> None:
    owner = make_role("owner", "NOLOGIN")
    tap_user = make_role("tap", "LOGIN REPLICATION")
    db.execute(f"GRANT CREATE ON DATABASE {quote_ident(db.name)} TO {quote_ident(owner)}")
    db.execute("CREATE PUBLICATION pub FOR TABLE plain")
    db.execute(f"ALTER PUBLICATION pub OWNER TO {quote_ident(owner)}")
    selected = tables(conn, "plain", "other")
    tap_conn = connect(db.config(user=tap_user))
    try:
        assert ensure_publication(tap_conn, "pub", selected[:1], create=True).owner == owner
        with pytest.raises(PrivilegeError) as err:
            ensure_publication(tap_conn, "pub", selected, create=True)
    finally:
        tap_conn.close()
    message = str(err.value)
    assert message.startswith(
        f"Publication 'pub' is owned by role '{owner}', so '{tap_user}' cannot change it"
    )
    assert f'ALTER PUBLICATION "pub" OWNER TO {quote_ident(tap_user)};' in message
    assert "set create_publication = false" in message
    assert 'ALTER PUBLICATION "pub" SET TABLE ONLY "public"."plain", ONLY "public"."other";' in (
        message
    )
    assert [name for name, _ in publication_members(db, "pub")] == ["plain"]


@pytest.mark.usefixtures("schema")
def test_adding_a_table_the_role_does_not_own_is_a_privilege_error(
    pg: PgServer, db: TestDb, conn: Any, make_role: Callable[..., str]
) -> None:
    tap_user = make_role("tap", "LOGIN REPLICATION")
    db.execute(f"GRANT CREATE ON DATABASE {quote_ident(db.name)} TO {quote_ident(tap_user)}")
    selected = tables(conn, "plain")
    tap_conn = connect(db.config(user=tap_user))
    try:
        with pytest.raises(PrivilegeError) as err:
            ensure_publication(tap_conn, "pub", selected, create=True)
        assert get_publication(tap_conn, "pub") is None
        # With no table it can create it, and it owns it; adding the table still needs the table.
        assert ensure_publication(tap_conn, "pub", [], create=True).owner == tap_user
        with pytest.raises(PrivilegeError) as alter_err:
            ensure_publication(tap_conn, "pub", selected, create=True)
    finally:
        tap_conn.close()
    assert "must be owner of table plain" in str(err.value)
    create_sql = f'CREATE PUBLICATION "pub" FOR TABLE ONLY "public"."plain" {with_options(pg)}'
    assert f"{create_sql} and set create_publication = false" in str(err.value)
    assert "must be owner of table plain" in str(alter_err.value)
    assert 'ALTER PUBLICATION "pub" SET TABLE ONLY "public"."plain";' in str(alter_err.value)


@pytest.mark.usefixtures("schema")
def test_two_taps_in_one_database_keep_to_their_own_objects(db: TestDb, conn: Any) -> None:
    plain, other, third = tables(conn, "plain", "other", "third")
    ensure_publication(conn, "pub_a", [plain], create=True)
    slot_a, _ = ensure_slot(conn, "slot_a", create=True)
    pub_b = ensure_publication(conn, "pub_b", [other], create=True)
    slot_b, _ = ensure_slot(conn, "slot_b", create=True)
    members_b = publication_members(db, "pub_b")

    assert ensure_publication(conn, "pub_a", [plain, third], create=True).table_oids == {
        plain.oid,
        third.oid,
    }
    ensure_slot(conn, "slot_a", create=True)
    drop_slot(conn, "slot_a")
    assert get_publication(conn, "pub_b") == pub_b
    assert publication_members(db, "pub_b") == members_b
    assert get_slot(conn, "slot_b") == slot_b
    assert slot_a != slot_b
    assert slot_names(db) == ["slot_b"]


# --- replica identity ---------------------------------------------------------------------------


def test_replica_identity_problems_name_each_table_and_the_fix(db: TestDb, conn: Any) -> None:
    db.execute(
        f"""
        CREATE TABLE with_pk (id int PRIMARY KEY);
        CREATE TABLE no_pk (id int);
        CREATE TABLE full_id (id int);
        ALTER TABLE full_id REPLICA IDENTITY FULL;
        CREATE TABLE nothing (id int PRIMARY KEY);
        ALTER TABLE nothing REPLICA IDENTITY NOTHING;
        CREATE TABLE by_index (id int NOT NULL);
        CREATE UNIQUE INDEX by_index_id ON by_index (id);
        ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_id;
        DROP INDEX by_index_id;
        CREATE TABLE {quote_ident(ODD_TABLE)} (id int);
        CREATE TABLE logs (id int, at date) PARTITION BY RANGE (at);
        CREATE TABLE logs_a PARTITION OF logs FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE logs_b PARTITION OF logs FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        ALTER TABLE logs_a REPLICA IDENTITY FULL;
        CREATE TABLE keyed (id int, at date, PRIMARY KEY (id, at)) PARTITION BY LIST (at);
        CREATE TABLE keyed_a PARTITION OF keyed FOR VALUES IN ('2024-01-01');
        """
    )
    selected = tables(
        conn, "with_pk", "no_pk", "full_id", "nothing", "by_index", ODD_TABLE, "logs", "keyed"
    )
    unidentified = (
        "so its UPDATEs and DELETEs cannot be identified (Postgres refuses them while the table "
        "is published). Fix: "
    )
    no_pk = "cannot be captured from the log: it has no primary key and REPLICA IDENTITY DEFAULT"
    assert replica_identity_problems(conn, selected) == [
        f'public.no_pk {no_pk}, {unidentified}ALTER TABLE "public"."no_pk" REPLICA IDENTITY '
        "FULL, or add a primary key.",
        "public.nothing cannot be captured from the log: it has REPLICA IDENTITY NOTHING, "
        f'{unidentified}ALTER TABLE "public"."nothing" REPLICA IDENTITY FULL (or DEFAULT, if it '
        "has a primary key).",
        "public.by_index cannot be captured from the log: its REPLICA IDENTITY USING INDEX names "
        f'an index that was dropped, {unidentified}ALTER TABLE "public"."by_index" REPLICA '
        "IDENTITY FULL (or DEFAULT, if it has a primary key).",
        f'public.{ODD_TABLE} {no_pk}, {unidentified}ALTER TABLE "public"."My ""Odd"" Tablé" '
        "REPLICA IDENTITY FULL, or add a primary key.",
        f"public.logs_b (a partition of public.logs) {no_pk}, {unidentified}ALTER TABLE "
        '"public"."logs_b" REPLICA IDENTITY FULL, or add a primary key.',
    ]
    assert replica_identity_problems(conn, []) == []


def test_replica_identity_problem_is_real_and_its_fix_works(db: TestDb, conn: Any) -> None:
    db.execute("CREATE TABLE no_pk (id int); INSERT INTO no_pk VALUES (1)")
    selected = tables(conn, "no_pk")
    ensure_publication(conn, "pub", selected, create=True)
    with pytest.raises(psycopg2.errors.ObjectNotInPrerequisiteState):
        db.execute("UPDATE no_pk SET id = 2")
    [problem] = replica_identity_problems(conn, selected)
    fix = problem.split("Fix: ")[1].split(",")[0]
    db.execute(fix)
    db.execute("UPDATE no_pk SET id = 2")
    assert replica_identity_problems(conn, selected) == []
