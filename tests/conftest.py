"""Shared fixtures: a real PostgreSQL per test session, a fresh database per test.

Nothing here mocks the database. The server is started by the test session itself (initdb into a
temporary directory, `wal_level=logical`, loopback only), so the suite never skips for lack of one.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tap_pgcdc.pg.quoting import quote_ident  # noqa: E402
from tests.pgserver import MATRIX_MAJORS, PgServer, start_server  # noqa: E402

_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """The session's PostgreSQL server."""
    server = start_server()
    try:
        yield server
    finally:
        server.destroy()


@dataclass
class TestDb:
    """A database created for one test, with helpers to run SQL and build tap config."""

    server: PgServer
    name: str

    __test__ = False  # not a pytest test class

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    def connect(self, *, autocommit: bool = True):  # type: ignore[no-untyped-def]
        return self.server.connect(self.name, autocommit=autocommit)

    def execute(self, sql: str, params: Any = None) -> list[tuple]:
        return self.server.execute(sql, params, dbname=self.name)

    def config(self, **overrides: Any) -> dict[str, Any]:
        """Tap config pointing at this database, with a slot and publication unique to it."""
        cfg: dict[str, Any] = {
            "host": self.server.host,
            "port": self.server.port,
            "user": self.server.superuser,
            "database": self.name,
            "slot_name": f"slot_{self.name}",
            "publication_name": f"pub_{self.name}",
        }
        cfg.update(overrides)
        return cfg

    def drop(self) -> None:
        # Slots pin WAL for the whole cluster: drop this database's slots before the database.
        self.server.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = %s AND NOT active",
            (self.name,),
        )
        self.server.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (self.name,),
        )
        self.server.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
            (self.name,),
        )
        self.server.execute(f'DROP DATABASE IF EXISTS "{self.name}"')


@pytest.fixture
def db(pg: PgServer, request: pytest.FixtureRequest) -> Iterator[TestDb]:
    """A fresh, empty database for one test."""
    name = f"t{next(_db_counter)}_{request.node.name[:30]}".lower()
    name = "".join(ch if ch.isalnum() else "_" for ch in name)
    pg.create_database(name)
    test_db = TestDb(pg, name)
    try:
        yield test_db
    finally:
        test_db.drop()


# --- the order of files -------------------------------------------------------------------------

# The files that take longest, longest first (measured with --durations). scripts/test.sh runs the
# suite on several pytest-xdist workers, a file at a time per worker, in collection order: starting
# the long files first keeps one worker from being left with a long file at the end. Tests within a
# file keep their order; files not listed follow in their usual order.
LONG_FILES_FIRST = (
    "tests/integration/test_kill_campaign.py",  # its slow variant runs for minutes
    "tests/integration/test_idle_slot.py",  # slow: waits on the server's own clock
    "tests/integration/test_large_transaction.py",  # slow: a million-row transaction
    "tests/integration/test_versions.py",  # every supported major
    "tests/integration/test_schema_changes.py",
    "tests/integration/test_generated.py",
    "tests/integration/test_origin.py",  # every supported major
    "tests/integration/test_least_privilege.py",  # every supported major
    "tests/integration/test_filters.py",  # every supported major
    "tests/integration/test_messages.py",  # several majors
    "tests/e2e/test_meltano_fast_loading.py",
    "tests/e2e/test_meltano_batch.py",
    "tests/e2e/test_meltano_cdc.py",
    "tests/e2e/test_meltano_schema_changes.py",
    "tests/integration/test_cdc.py",
    "tests/integration/test_failures.py",
    "tests/integration/test_typemap_server.py",
    "tests/integration/test_slot.py",
    "tests/integration/test_lifecycle.py",
    "tests/e2e/test_meltano_experience.py",
    "tests/integration/test_sdk_standard.py",
    "tests/integration/test_fast_output.py",
    "tests/integration/test_batch.py",
    "tests/integration/test_toast_batches.py",
    "tests/integration/test_large_values.py",
    "tests/e2e/test_meltano_truncate.py",
    "tests/e2e/test_meltano_snapshot.py",
    "tests/e2e/test_meltano_table_kinds.py",
    "tests/test_code_quality.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: index for index, path in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


# --- the version matrix -------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pg-majors",
        default=os.environ.get("TAP_PGCDC_PG_MAJORS", ",".join(map(str, MATRIX_MAJORS))),
        help="Comma-separated PostgreSQL majors for tests that take `pg_major` (default: "
        "$TAP_PGCDC_PG_MAJORS or every supported major). Binaries: scripts/fetch_postgres.sh.",
    )


def selected_majors(config: pytest.Config) -> list[int]:
    text = str(config.getoption("--pg-majors"))
    return [int(part) for part in text.split(",") if part.strip()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Module scope groups a module's tests by major, so one server of each major at a time is busy.
    if "pg_major" in metafunc.fixturenames:
        majors = selected_majors(metafunc.config)
        metafunc.parametrize("pg_major", majors, ids=[f"pg{m}" for m in majors], scope="module")


class _Servers:
    """One server per major, started on first use and stopped at the end of the session."""

    def __init__(self) -> None:
        self.servers: dict[int, PgServer] = {}

    def get(self, major: int) -> PgServer:
        if major not in self.servers:
            self.servers[major] = start_server(major=major)
        return self.servers[major]

    def close(self) -> None:
        for server in self.servers.values():
            server.destroy()


@pytest.fixture(scope="session")
def _pg_servers() -> Iterator[_Servers]:
    servers = _Servers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="module")
def pg_at(pg_major: int, _pg_servers: _Servers) -> PgServer:
    """The session's server of major `pg_major` (a parametrized fixture: see --pg-majors)."""
    server = _pg_servers.get(pg_major)
    assert server.server_version_num() // 10000 == pg_major
    return server


@pytest.fixture
def vdb(pg_at: PgServer, request: pytest.FixtureRequest) -> Iterator[TestDb]:
    """A fresh database on the server of the test's `pg_major`."""
    name = f"v{next(_db_counter)}_{request.node.originalname[:30]}".lower()
    name = "".join(ch if ch.isalnum() else "_" for ch in name)
    pg_at.create_database(name)
    test_db = TestDb(pg_at, name)
    try:
        yield test_db
    finally:
        test_db.drop()


@pytest.fixture
def make_role(pg: PgServer, db: TestDb) -> Iterator[Callable[..., str]]:
    """Roles unique to this test, dropped afterwards with what they own."""
    created: list[str] = []

    def make(suffix: str, attributes: str = "LOGIN") -> str:
        name = f"{db.name[:40]}_{suffix}"
        pg.execute(f"CREATE ROLE {quote_ident(name)} {attributes}")
        created.append(name)
        return name

    yield make
    for name in reversed(created):
        pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        db.execute(f"DROP OWNED BY {quote_ident(name)} CASCADE")
        pg.execute(f"DROP ROLE {quote_ident(name)}")
