"""`tap-pgcdc --test`: a preflight check that lists every problem with its fix and changes nothing."""

from __future__ import annotations

from collections.abc import Callable

from tap_pgcdc.pg.quoting import quote_ident
from tests.conftest import TestDb
from tests.memory_target import MemoryTarget
from tests.pgserver import PgServer, start_server
from tests.tap_runner import TapRun, discover, run_tap, set_method

BOUND_SECONDS = 30


def problems(run: TapRun) -> list[str]:
    return [
        line.split("Preflight problem ", 1)[1]
        for line in run.stderr.splitlines()
        if "Preflight problem " in line
    ]


def footprint(server: PgServer, dbname: str) -> tuple[list, list, list]:
    """Slots (with their positions), publications and their tables: what a check must not touch."""
    conn = server.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT slot_name, plugin, confirmed_flush_lsn::text, restart_lsn::text "
                "FROM pg_replication_slots ORDER BY 1"
            )
            slots = cur.fetchall()
            cur.execute("SELECT pubname, pg_get_userbyid(pubowner) FROM pg_publication ORDER BY 1")
            publications = cur.fetchall()
            cur.execute("SELECT pubname, tablename FROM pg_publication_tables ORDER BY 1, 2")
            members = cur.fetchall()
        return slots, publications, members
    finally:
        conn.close()


def assert_clean_exit(run: TapRun) -> None:
    assert run.seconds < BOUND_SECONDS
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.raw_lines == []  # no Singer message at all: no record, no state


def test_healthy_setup_passes_and_changes_nothing(db: TestDb) -> None:
    db.execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY, v text)")
    run = run_tap(db.config(), args=["--test"], timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_clean_exit(run)
    assert problems(run) == []
    assert "Preflight passed: a run can start." in run.stderr
    assert "2 selected stream(s), 2 of them LOG_BASED." in run.stderr
    assert footprint(db.server, db.name) == ([], [], [])

    # After a run, with its state: still healthy, and the slot has not moved.
    target = MemoryTarget()
    target.apply(run_tap(db.config()).check().messages)
    db.execute("INSERT INTO a VALUES (1)")
    before = footprint(db.server, db.name)
    run = run_tap(db.config(), state=target.state, args=["--test"], timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_clean_exit(run)
    assert f"Slot {db.config()['slot_name']}: confirmed up to" in run.stderr
    assert footprint(db.server, db.name) == before


def test_every_problem_is_listed_at_once_with_its_fix(
    db: TestDb, make_role: Callable[..., str]
) -> None:
    role = make_role("tapper")  # LOGIN only: no REPLICATION
    config = db.config(user=role)
    db.execute(
        "CREATE TABLE good (id int PRIMARY KEY); CREATE TABLE nopk (a int, b text);"
        "CREATE TABLE hidden (id int PRIMARY KEY);"
        f"GRANT SELECT ON good, nopk TO {quote_ident(role)};"
        f"CREATE PUBLICATION {quote_ident(config['publication_name'])} FOR TABLE good"
    )
    db.execute(
        "SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (config["slot_name"],)
    )
    # As the superuser: all three tables selected; nopk, offered as FULL_TABLE, set to LOG_BASED.
    catalog = set_method(discover(db.config()), "LOG_BASED", "public-nopk")
    before = footprint(db.server, db.name)
    run = run_tap(config, catalog=catalog, args=["--test"], timeout=60)
    assert run.returncode == 1
    assert_clean_exit(run)
    found = problems(run)
    expected = [
        f"role '{role}' may not read table public.hidden",
        f"Role '{role}' may not use replication",
        "Stream public-nopk is LOG_BASED, but public.nopk cannot be captured from the log",
        f"Publication '{config['publication_name']}' is owned by role 'postgres'",
        "uses the output plugin 'test_decoding'",
    ]
    assert len(found) == len(expected), found
    for fragment in expected:
        assert any(fragment in problem for problem in found), (fragment, found)
    assert all("Fix:" in problem for problem in found), found
    assert f"Preflight found {len(expected)} problem(s); nothing was changed." in run.stderr
    assert footprint(db.server, db.name) == before


def test_server_settings_are_all_reported() -> None:
    """wal_level, slot and WAL sender headroom: three problems, one run; a keyless table noted."""
    server = start_server(
        settings={"wal_level": "replica", "max_replication_slots": "1", "max_wal_senders": "0"}
    )
    try:
        server.execute("SELECT pg_create_physical_replication_slot('standby_1')")
        server.execute("CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE nokey (a int)")
        config = {
            "host": server.host,
            "port": server.port,
            "user": "postgres",
            "database": "postgres",
        }
        before = footprint(server, "postgres")
        run = run_tap(config, args=["--test"], timeout=60)
        assert run.returncode == 1
        assert_clean_exit(run)
        found = problems(run)
        expected = [
            "wal_level is 'replica' on this server",
            "No free replication slot: max_replication_slots = 1 and 1 slots exist",
            "No free WAL sender: max_wal_senders = 0",
        ]
        assert len(found) == len(expected), found
        for fragment in expected:
            assert any(fragment in problem for problem in found), (fragment, found)
        # Discovery offered the keyless table as FULL_TABLE: a note with the way to LOG_BASED.
        assert (
            "Preflight: Stream public-nokey is read in full every run (FULL_TABLE), because its "
            "changes cannot be captured from the log (public.nokey: it has no primary key and "
            'REPLICA IDENTITY DEFAULT). To make it LOG_BASED: ALTER TABLE "public"."nokey" '
            "REPLICA IDENTITY FULL, or add a primary key; then set its replication-method to "
            "LOG_BASED (or run --discover again)."
        ) in run.stderr
        assert footprint(server, "postgres") == before
    finally:
        server.destroy()


def test_stale_state_is_a_problem_unless_recovery_is_chosen(db: TestDb) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    first = run_tap(db.config()).check()
    db.execute("INSERT INTO t VALUES (1)")
    second = run_tap(db.config(), state=first.final_state).check()
    db.execute("INSERT INTO t VALUES (2)")
    run_tap(db.config(), state=second.final_state).check()  # confirms the second state
    before = footprint(db.server, db.name)
    run = run_tap(db.config(), state=first.final_state, args=["--test"], timeout=60)
    assert run.returncode == 1
    [problem] = problems(run)
    assert "for public-t is older than slot" in problem
    assert "Fix: set on_slot_lost = resnapshot" in problem
    run = run_tap(
        db.config(on_slot_lost="resnapshot"), state=first.final_state, args=["--test"], timeout=60
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "snapshotting public-t again" in run.stderr
    assert footprint(db.server, db.name) == before
