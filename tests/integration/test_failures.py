"""Failures, end to end through the real `tap-pgcdc` command: each one is a clear, prompt error.

Bad input (credentials, addresses, server settings, privileges, state, settings) must end the
run with a non-zero exit within seconds, one line that names the fix, no traceback, no password,
and no change to the slot, the publication or the state. Slot health problems name their
recovery, and `on_slot_lost = resnapshot` performs it. A connection lost mid-run (server restart,
pg_terminate_backend) is reported as such, and the next run converges.
"""

from __future__ import annotations

import copy
import time
import typing as t
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.extras
import pytest

from tap_pgcdc.pg.quoting import quote_ident
from tests.conftest import TestDb
from tests.integration.test_kill_campaign import KillableRun
from tests.memory_target import MemoryTarget
from tests.pgserver import PgServer, free_port, start_server
from tests.tap_runner import TapRun, discover, run_tap, set_method

BOUND_SECONDS = 30
PASSWORD = "Pr0per-Secret-7f3a"
WRONG_PASSWORD = "Wr0ng-Guess-91c2"


def rows(db: TestDb, table: str) -> list[dict[str, Any]]:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {table} ORDER BY 1")
            names = [d.name for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def bookmarks(state: dict[str, Any] | None) -> dict[str, Any]:
    assert state is not None
    return t.cast("dict[str, Any]", state["bookmarks"])


def sync(db: TestDb, target: MemoryTarget, **config: Any) -> TapRun:
    run = run_tap(db.config(**config), state=target.state).check()
    target.apply(run.messages)
    return run


def assert_refused(run: TapRun, *fragments: str, secrets: tuple[str, ...] = ()) -> str:
    """A prompt non-zero exit with one clean error line naming the fix; that line is returned."""
    assert run.returncode != 0, run.stderr[-2000:]
    assert run.seconds < BOUND_SECONDS
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert errors, run.stderr[-2000:]
    assert "Fix:" in errors[-1] or any("Fix:" in line for line in errors), errors
    for fragment in fragments:
        assert fragment in run.stderr, f"{fragment!r} not in:\n{run.stderr[-2000:]}"
    for secret in secrets:
        assert secret not in run.stderr
        assert secret not in "\n".join(run.raw_lines)
    assert run.of_type("STATE") == [] and run.records() == []  # the target's state is untouched
    return errors[-1]


def slots_and_publications(
    server: PgServer, dbname: str, password: str | None = None
) -> tuple[list, list]:
    conn = server.connect(dbname) if password is None else server.connect(dbname, password=password)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT slot_name, confirmed_flush_lsn::text FROM pg_replication_slots "
                "WHERE database = current_database() ORDER BY 1"
            )
            slots = cur.fetchall()
            cur.execute("SELECT pubname FROM pg_publication ORDER BY 1")
            publications = cur.fetchall()
        return slots, publications
    finally:
        conn.close()


# --- bad input: connection --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scram_server() -> Iterator[PgServer]:
    """A server that wants a scram-sha-256 password from everyone, over TCP and for replication."""
    server = start_server(auth="scram-sha-256", password=PASSWORD)
    try:
        yield server
    finally:
        server.destroy()


def test_wrong_password_is_refused_and_never_shown(scram_server: PgServer) -> None:
    config = {
        "host": scram_server.host,
        "port": scram_server.port,
        "user": "postgres",
        "password": WRONG_PASSWORD,
        "database": "postgres",
    }
    for args in ([], ["--discover"], ["--test"]):
        run = run_tap(config, args=args, timeout=60)
        line = assert_refused(
            run, "password authentication failed", secrets=(WRONG_PASSWORD, PASSWORD)
        )
        assert "Fix: check the `user` and `password` settings." in line
    slots, publications = slots_and_publications(scram_server, "postgres", password=PASSWORD)
    assert (slots, publications) == ([], [])


def test_right_password_is_never_shown_either(scram_server: PgServer) -> None:
    """Failures after the login (here: a slot that must exist) do not show the password."""
    config = {
        "host": scram_server.host,
        "port": scram_server.port,
        "user": "postgres",
        "password": PASSWORD,
        "database": "postgres",
        "create_slot": False,
    }
    conn = scram_server.connect(password=PASSWORD)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY)")
    conn.close()
    run = run_tap(config, timeout=60)
    assert_refused(run, "does not exist and create_slot is false", secrets=(PASSWORD,))
    assert slots_and_publications(scram_server, "postgres", password=PASSWORD) == ([], [])
    # A secret of the wrong type is reported without its value.
    run = run_tap({**config, "password": 73519246}, timeout=60)
    assert_refused(run, "password setting has an invalid value (not shown", secrets=("73519246",))


def test_unreachable_host_fails_fast(pg: PgServer) -> None:
    config = {"host": "127.0.0.1", "port": free_port(), "user": "postgres", "database": "x"}
    line = assert_refused(run_tap(config, timeout=60), "Connection refused")
    assert "Fix: check `host` and `port`" in line


def test_unknown_database_is_named(db: TestDb) -> None:
    line = assert_refused(run_tap(db.config(database="no_such_db"), timeout=60))
    assert 'database "no_such_db" does not exist' in line
    assert "Fix: check the `database` setting" in line


# --- bad input: server settings and privileges ----------------------------------------------------


def test_wal_level_replica_is_refused_with_the_setting_to_change() -> None:
    server = start_server(settings={"wal_level": "replica"})
    try:
        server.execute("CREATE TABLE t (id int PRIMARY KEY)")
        config = {
            "host": server.host,
            "port": server.port,
            "user": "postgres",
            "database": "postgres",
        }
        line = assert_refused(run_tap(config, timeout=60))
        assert "wal_level is 'replica' on this server" in line
        assert "Fix: run ALTER SYSTEM SET wal_level = logical;" in line
        assert slots_and_publications(server, "postgres") == ([], [])
    finally:
        server.destroy()


def test_role_without_replication_is_refused(db: TestDb, make_role: Callable[..., str]) -> None:
    role = make_role("plain")
    db.execute(f"CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO {quote_ident(role)}")
    line = assert_refused(run_tap(db.config(user=role), timeout=60))
    assert f"Role '{role}' may not use replication" in line
    assert f"ALTER ROLE {quote_ident(role)} REPLICATION;" in line
    assert slots_and_publications(db.server, db.name) == ([], [])


def test_role_without_select_on_a_selected_table_is_refused(
    db: TestDb, make_role: Callable[..., str]
) -> None:
    role = make_role("reader", "LOGIN REPLICATION")
    db.execute(
        "CREATE TABLE open_t (id int PRIMARY KEY); CREATE TABLE secret_t (id int PRIMARY KEY);"
        f"GRANT SELECT ON open_t TO {quote_ident(role)}"
    )
    catalog = discover(db.config())  # as the superuser: both tables, both selected
    line = assert_refused(run_tap(db.config(user=role), catalog=catalog, timeout=60))
    assert "public-secret_t" in line
    assert "Fix: GRANT SELECT ON it" in line
    assert slots_and_publications(db.server, db.name) == ([], [])


def test_publication_owned_by_another_role_is_refused(
    db: TestDb, make_role: Callable[..., str]
) -> None:
    owner = make_role("owner", "NOLOGIN")
    tapper = make_role("tapper", "LOGIN REPLICATION")
    db.execute(
        f"GRANT CREATE ON DATABASE {quote_ident(db.name)} TO {quote_ident(owner)};"
        f"CREATE TABLE mine (id int PRIMARY KEY); ALTER TABLE mine OWNER TO {quote_ident(tapper)};"
        f"CREATE TABLE other (id int PRIMARY KEY); ALTER TABLE other OWNER TO {quote_ident(owner)};"
        "CREATE PUBLICATION shared FOR TABLE other;"
        f"ALTER PUBLICATION shared OWNER TO {quote_ident(owner)}"
    )
    config = db.config(user=tapper, publication_name="shared")
    line = assert_refused(run_tap(config, timeout=60))
    assert f"Publication 'shared' is owned by role '{owner}'" in line
    assert f'ALTER PUBLICATION "shared" OWNER TO {quote_ident(tapper)};' in line
    assert slots_and_publications(db.server, db.name) == ([], [("shared",)])
    assert db.execute("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'shared'") == [
        (1,)
    ]


def test_table_without_replica_identity_is_refused_before_any_change(db: TestDb) -> None:
    """Discovery offers the table as FULL_TABLE; a user who sets it to LOG_BASED is refused."""
    db.execute(
        "CREATE TABLE keyless (a int, b text); CREATE TABLE keyed (id int PRIMARY KEY);"
        " CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)"
    )
    catalog = set_method(
        discover(db.config()), "LOG_BASED", "public-keyless", "public-scratch", "public-keyed"
    )
    line = assert_refused(run_tap(db.config(), catalog=catalog, timeout=60))
    # One sentence per table, each with its fix; no "..", no "Alternatively".
    assert line.split(" | ")[-1] == (
        "Stream public-keyless is LOG_BASED, but public.keyless cannot be captured from the log: "
        "it has no primary key and REPLICA IDENTITY DEFAULT, so its UPDATEs and DELETEs cannot "
        "be identified (Postgres refuses them while the table is published). Fix: ALTER TABLE "
        '"public"."keyless" REPLICA IDENTITY FULL, or add a primary key; or set '
        "replication-method FULL_TABLE for stream public-keyless. Stream public-scratch is "
        "LOG_BASED, but public.scratch cannot be captured from the log: it is UNLOGGED, so none "
        'of its changes reach the WAL. Fix: ALTER TABLE "public"."scratch" SET LOGGED; or set '
        "replication-method FULL_TABLE for stream public-scratch."
    )
    assert slots_and_publications(db.server, db.name) == ([], [])
    # Postgres still accepts UPDATEs on it: nothing was published.
    db.execute("INSERT INTO keyless VALUES (1, 'x'); UPDATE keyless SET b = 'y'")


# --- bad input: state and settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ([], "is a JSON list, not an object"),
        ("bookmarks", "is a JSON str, not an object"),
        ({"bookmarks": ["public-t"]}, "`bookmarks` is not an object"),
        (
            {"bookmarks": {"public-t": {"lsn": "16B3748"}}},
            "has an invalid lsn: invalid LSN '16B3748'",
        ),
        ({"bookmarks": {"public-t": {"lsn": "0/1", "version": "x"}}}, "has an invalid version"),
        (
            {"bookmarks": {}, "tap_pgcdc": {"slot_name": "someone_else"}},
            "written for slot 'someone_else'",
        ),
        (
            {"bookmarks": {}, "tap_pgcdc": {"system_identifier": "7000000000000000001"}},
            "written for another PostgreSQL cluster (system id 7000000000000000001",
        ),
    ],
    ids=[
        "list",
        "string",
        "bookmarks-list",
        "bad-lsn",
        "bad-version",
        "other-slot",
        "other-cluster",
    ],
)
def test_malformed_or_foreign_state_is_refused(db: TestDb, state: Any, expected: str) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    line = assert_refused(run_tap(db.config(), state=state, timeout=60))
    assert expected in line
    assert slots_and_publications(db.server, db.name) == ([], [])


def test_state_that_is_not_json_is_refused(db: TestDb, tmp_path: Any) -> None:
    import subprocess
    import sys

    from tests.tap_runner import REPO

    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    (tmp_path / "config.json").write_text(__import__("json").dumps(db.config()))
    (tmp_path / "state.json").write_text('{"bookmarks": {')
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            *("-m", "tap_pgcdc", "--config", str(tmp_path / "config.json")),
            *("--state", str(tmp_path / "state.json")),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1 and time.monotonic() - started < BOUND_SECONDS
    assert "The state given with --state is not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert slots_and_publications(db.server, db.name) == ([], [])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"sslmode": "sometimes"}, "Fix: use one of disable, allow, prefer, require"),
        ({"slot_name": "Bad-Name"}, "Fix: use 1 to 63 lower-case letters, digits and underscores"),
        ({"on_slot_lost": "ignore"}, "Fix: use fail or resnapshot"),
    ],
    ids=["sslmode", "slot-name", "on-slot-lost"],
)
def test_invalid_settings_are_one_line_each(db: TestDb, override: dict, expected: str) -> None:
    # --test builds the tap on its own path (see tap.py): the same clean refusal there.
    args = ["--test"] if "slot_name" in override else []
    run = run_tap(db.config(**override), args=args, timeout=60)
    assert_refused(run, expected, "Config validation failed")
    assert slots_and_publications(db.server, db.name) == ([], [])


# --- slot health at start ---------------------------------------------------------------------------


def test_missing_slot_with_create_slot_false_gives_the_sql(db: TestDb) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    slot = db.config()["slot_name"]
    line = assert_refused(run_tap(db.config(create_slot=False), timeout=60))
    assert f"Replication slot '{slot}' does not exist and create_slot is false" in line
    assert f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');" in line
    assert slots_and_publications(db.server, db.name) == ([], [])


def test_slot_of_another_plugin_is_left_alone(db: TestDb) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    slot = db.config()["slot_name"]
    db.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
    before = slots_and_publications(db.server, db.name)
    line = assert_refused(run_tap(db.config(), timeout=60))
    assert "uses the output plugin 'test_decoding'" in line
    assert "Fix: set slot_name to another name" in line
    assert slots_and_publications(db.server, db.name) == before


def test_slot_of_another_database_is_left_alone(pg: PgServer, db: TestDb) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    slot = db.config()["slot_name"]
    pg.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        line = assert_refused(run_tap(db.config(), timeout=60))
        assert f"belongs to database 'postgres', but the tap is connected to '{db.name}'" in line
        assert slots_and_publications(db.server, db.name) == ([], [])
    finally:
        pg.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_slot_active_in_another_session_names_the_session(db: TestDb) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    target = MemoryTarget()
    sync(db, target)
    config = db.config()
    holder = psycopg2.connect(
        db.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection
    )
    try:
        holder.cursor().start_replication(
            slot_name=config["slot_name"],
            decode=False,
            options={"proto_version": "1", "publication_names": config["publication_name"]},
        )
        deadline = time.monotonic() + 10
        while not (
            active := db.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s AND active",
                (config["slot_name"],),
            )
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid = active[0][0]
        before = slots_and_publications(db.server, db.name)
        line = assert_refused(run_tap(config, state=target.state, timeout=60))
        assert f"is in use by another session (pid {pid})" in line
        assert f"SELECT pg_terminate_backend({pid});" in line
        assert slots_and_publications(db.server, db.name) == before
    finally:
        holder.close()


def test_state_older_than_the_slot_is_refused_then_recovered_by_resnapshot(db: TestDb) -> None:
    """A restored (older) target state: its positions are behind what the slot still holds."""
    db.execute(
        "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);"
        "INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 50) g;"
        "INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 50) g"
    )
    target = MemoryTarget()
    sync(db, target)
    restored = copy.deepcopy(target)  # a backup of the target, taken now
    db.execute("DELETE FROM a WHERE id <= 10; UPDATE b SET v = 'changed' WHERE id <= 5")
    sync(db, target)
    db.execute("INSERT INTO a VALUES (100, 'new'); DELETE FROM b WHERE id = 50")
    sync(db, target)  # confirms the state of the run before: the slot is past `restored`
    before = slots_and_publications(db.server, db.name)
    # Stream b's position is current (another state id kept it); a's is from the backup.
    state = copy.deepcopy(target.state)
    bookmarks(state)["public-a"] = bookmarks(restored.state)["public-a"]
    line = assert_refused(run_tap(db.config(), state=state, timeout=60))
    assert "for public-a is older than slot" in line
    assert "Fix: set on_slot_lost = resnapshot" in line
    assert slots_and_publications(db.server, db.name) == before

    run = run_tap(db.config(on_slot_lost="resnapshot"), state=state).check()
    assert "on_slot_lost = resnapshot: snapshotting public-a again" in run.stderr
    versions = [m for m in run.of_type("ACTIVATE_VERSION")]
    assert [m["stream"] for m in versions] == ["public-a"]
    assert {r["id"] for r in run.records("public-a")} == {r["id"] for r in rows(db, "a")}
    assert run.records("public-b") == []  # b was not behind: nothing to send again
    restored_a = copy.deepcopy(restored)  # the backup, with stream a re-snapshotted
    restored_a.apply(run.messages)
    assert restored_a.rows("public-a") == rows(db, "a")  # rows 1-10, deleted meanwhile, are gone
    assert "snapshot" not in bookmarks(run.final_state)["public-a"]
    assert "resnapshot" not in bookmarks(run.final_state)["public-a"]


def test_dropped_slot_is_refused_then_recovered_by_resnapshot(db: TestDb) -> None:
    db.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 30) g"
    )
    target = MemoryTarget()
    sync(db, target)
    slot = db.config()["slot_name"]
    db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    db.execute("DELETE FROM t WHERE id <= 5; INSERT INTO t VALUES (31, 'unseen')")
    line = assert_refused(run_tap(db.config(), state=target.state, timeout=60))
    assert f"Replication slot '{slot}' does not exist, but the input state holds positions" in line
    assert "set on_slot_lost = resnapshot to create the slot and snapshot" in line
    assert slots_and_publications(db.server, db.name)[0] == []  # not silently recreated

    run = sync(db, target, on_slot_lost="resnapshot")
    assert [m["stream"] for m in run.of_type("ACTIVATE_VERSION")] == ["public-t"]
    assert target.rows("public-t") == rows(db, "t")
    db.execute("UPDATE t SET v = 'after' WHERE id = 6")
    sync(db, target)  # and from then on, change capture as usual
    assert target.rows("public-t") == rows(db, "t")


def test_invalidated_slot_is_refused_then_recovered_by_resnapshot() -> None:
    # A server of its own: invalidating a slot needs a tiny max_slot_wal_keep_size.
    server = start_server(settings={"max_slot_wal_keep_size": "1MB"})
    try:
        db = TestDb(server, "postgres")
        db.execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE filler (x text);"
            "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 40) g"
        )
        config = db.config(filter_tables=["public.t"])
        target = MemoryTarget()
        target.apply(run_tap(config).check().messages)
        db.execute("DELETE FROM t WHERE id <= 10; UPDATE t SET v = 'lost' WHERE id = 11")
        deadline = time.monotonic() + 60
        while db.execute(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
            (config["slot_name"],),
        ) != [("lost",)]:
            assert time.monotonic() < deadline, "the slot was never invalidated"
            db.execute("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 200)")
            db.execute("SELECT pg_switch_wal()")
            db.execute("CHECKPOINT")
        line = assert_refused(run_tap(config, state=target.state, timeout=60))
        assert "was invalidated (wal_status=lost" in line
        assert "Fix: set on_slot_lost = resnapshot to drop and recreate the slot" in line

        run = run_tap({**config, "on_slot_lost": "resnapshot"}, state=target.state).check()
        target.apply(run.messages)
        assert "Dropped invalidated replication slot" in run.stderr
        assert [m["stream"] for m in run.of_type("ACTIVATE_VERSION")] == ["public-t"]
        assert target.rows("public-t") == rows(db, "t")  # deleted rows gone, the update there
        assert db.execute(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
            (config["slot_name"],),
        ) == [("reserved",)]
        db.execute("INSERT INTO t VALUES (41, 'after')")
        target.apply(run_tap(config, state=target.state).check().messages)
        assert target.rows("public-t") == rows(db, "t")
    finally:
        server.destroy()


# --- connections lost mid-run -----------------------------------------------------------------------


def assert_connection_lost(run: KillableRun, code: int, doing: str) -> None:
    stderr = "".join(run.stderr)
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    error = [line for line in run.stderr if "| ERROR" in line][-1]
    assert f"Lost the connection to PostgreSQL while {doing}" in error
    assert "the next run resumes from the last STATE the target stored" in error
    assert "Fix: run the tap again" in error


def test_replication_connection_terminated_mid_run(db: TestDb) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    target = MemoryTarget()
    sync(db, target)
    for i in range(40):
        db.execute(
            f"INSERT INTO t SELECT g, g FROM generate_series({i * 5000}, {i * 5000 + 4999}) g"
        )
    config = db.config()
    run = KillableRun(config, target.state)
    assert run.wait_for(lambda: run.saw("Reading slot"), 60)
    deadline = time.monotonic() + 10
    while not db.execute(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        "WHERE slot_name = %s AND active",
        (config["slot_name"],),
    ):
        assert time.monotonic() < deadline, "the slot never became active"
        time.sleep(0.01)
    started = time.monotonic()
    code = run.finish()
    assert time.monotonic() - started < BOUND_SECONDS
    assert_connection_lost(run, code, f"reading slot {config['slot_name']}")
    assert "terminating connection due to administrator command" in "".join(run.stderr)
    target.apply(run.stored_messages())
    sync(db, target)
    assert target.rows("public-t") == rows(db, "t")


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    """A server this test may restart and crash."""
    server = start_server()
    try:
        yield server
    finally:
        server.destroy()


def test_server_restarted_mid_snapshot(own_server: PgServer) -> None:
    db = TestDb(own_server, "postgres")
    db.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 30000) g"
    )
    config = db.config(snapshot_chunk_size=20)
    target = MemoryTarget()
    run = KillableRun(config, None)
    assert run.wait_for(lambda: len(run.stdout) > 500, 60)
    own_server.restart()  # fast shutdown: sessions are ended, then the server starts again
    code = run.finish()
    assert_connection_lost(run, code, "snapshotting public-t")
    target.apply(run.stored_messages())
    assert "snapshot" in bookmarks(target.state)["public-t"]  # resumable from its last chunk
    db.execute("DELETE FROM t WHERE id % 1000 = 0; UPDATE t SET v = 'x' WHERE id % 777 = 0")
    resumed = run_tap(config, state=target.state).check()
    target.apply(resumed.messages)
    assert len(resumed.records()) < 30000
    assert target.rows("public-t") == rows(db, "t")


def test_server_crash_mid_log_read(own_server: PgServer) -> None:
    db = TestDb(own_server, "postgres")
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    config = db.config()
    target = MemoryTarget()
    target.apply(run_tap(config).check().messages)
    for i in range(40):
        db.execute(
            f"INSERT INTO t SELECT g, g FROM generate_series({i * 5000}, {i * 5000 + 4999}) g"
        )
    run = KillableRun(config, target.state)
    assert run.wait_for(lambda: run.saw("Reading slot"), 60)
    time.sleep(0.3)
    own_server.stop("immediate")  # a crash: no walsender gets to finish
    code = run.finish()
    own_server.start()
    assert_connection_lost(run, code, f"reading slot {config['slot_name']}")
    target.apply(run.stored_messages())
    db.execute("UPDATE t SET v = -v WHERE id % 100 = 0")
    target.apply(run_tap(config, state=target.state).check().messages)
    assert target.rows("public-t") == rows(db, "t")


def test_sigterm_stops_cleanly_and_the_next_run_converges(db: TestDb) -> None:
    """SIGTERM (how Meltano stops a tap) ends the run with the STATE already written, exit 143."""
    import signal

    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    target = MemoryTarget()
    sync(db, target)
    for i in range(15):
        db.execute(
            f"BEGIN; TRUNCATE t; INSERT INTO t SELECT g, {i} FROM generate_series(1, 3000) g; COMMIT"
        )
    run = KillableRun(db.config(state_interval_seconds=0), target.state)
    assert run.wait_for(lambda: len(run.stdout) > 3000, 60)
    run.kill(signal.SIGTERM)
    # Not 0: a scheduler must not record an interrupted run as a success.
    assert run.finish() == 128 + signal.SIGTERM == 143
    assert "Stopped by SIGTERM before the run finished" in "".join(run.stderr)
    assert_stops_at_a_boundary_and_converges(db, run, target)


def test_sigint_mid_snapshot_exits_130_and_the_next_run_converges(db: TestDb) -> None:
    """SIGINT (Ctrl-C) in the middle of a snapshot: exit 130, the snapshot resumes next run."""
    import signal

    db.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 30000) g"
    )
    target = MemoryTarget()
    run = KillableRun(db.config(snapshot_chunk_size=50), None)
    assert run.wait_for(lambda: len(run.stdout) > 500, 60)
    run.kill(signal.SIGINT)
    assert run.finish() == 128 + signal.SIGINT == 130
    assert "Stopped by SIGINT before the run finished" in "".join(run.stderr)
    assert "snapshot" in bookmarks(run.stored_state())["public-t"]  # unfinished, resumable
    db.execute("UPDATE t SET v = 'changed' WHERE id % 997 = 0; DELETE FROM t WHERE id % 1009 = 0")
    assert_stops_at_a_boundary_and_converges(db, run, target)


def assert_stops_at_a_boundary_and_converges(
    db: TestDb, run: KillableRun, target: MemoryTarget
) -> None:
    """What the interrupted run stored is whole, and the next runs (state carried) converge."""
    stored = run.stored_messages()
    assert stored and stored[-1]["type"] == "STATE"
    assert not run.partial  # no half-written line on stdout
    target.apply(stored)
    for _ in range(2):  # the run after the signal, then one with nothing new
        target.apply(run_tap(db.config(), state=target.state).check().messages)
        assert target.rows("public-t") == rows(db, "t")
