"""Hand-built facts for the pure judges, shared by unit and integration tests."""

from __future__ import annotations

from typing import Any

from tap_pgcdc.replication.server import ServerInfo


def server_info(**changes: Any) -> ServerInfo:
    """A PostgreSQL 15 server ready for logical replication, with `changes` applied."""
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
