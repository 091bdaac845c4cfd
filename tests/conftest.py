"""Shared fixtures: a real PostgreSQL per test session, a fresh database per test.

Nothing here mocks the database. The server is started by the test session itself (initdb into a
temporary directory, `wal_level=logical`, loopback only), so the suite never skips for lack of one.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.pgserver import PgServer, start_server  # noqa: E402

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
