"""Connection arguments are built without side effects; the tunnel is started only explicitly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tap_pgcdc.pg.connect import connection_kwargs, session_options, start_tunnel

CONFIG = {
    "host": "db.internal",
    "port": 6432,
    "database": "app",
    "user": "tap",
    "password": "secret",
    "sslmode": "verify-full",
    "ssh_tunnel": {"enable": True, "host": "bastion", "username": "me", "private_key": "x"},
}


def test_connection_kwargs_only_read_the_config() -> None:
    assert connection_kwargs(CONFIG) == {
        "host": "db.internal",
        "port": 6432,
        "dbname": "app",
        "user": "tap",
        "application_name": "tap-pgcdc",
        "connect_timeout": 15,
        "options": session_options(),
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "password": "secret",
        "sslmode": "verify-full",
    }
    # Through a tunnel libpq dials its listener; `host` stays the name verify-full checks.
    through = connection_kwargs(CONFIG, ("127.0.0.1", 40001))
    assert (through["host"], through["hostaddr"], through["port"]) == (
        "db.internal",
        "127.0.0.1",
        40001,
    )


def test_no_tunnel_is_started_unless_enabled() -> None:
    assert start_tunnel({**CONFIG, "ssh_tunnel": {"enable": False}}) is None
    assert start_tunnel({k: v for k, v in CONFIG.items() if k != "ssh_tunnel"}) is None


def test_importing_the_leaf_layers_loads_neither_paramiko_nor_the_singer_side() -> None:
    code = (
        "import sys, tap_pgcdc.pg.connect, tap_pgcdc.pg.catalog, tap_pgcdc.replication.slot, "
        "tap_pgcdc.replication.transport; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'paramiko', 'singer_sdk', "
        "'sqlalchemy'}), sorted(m for m in sys.modules if m in ('tap_pgcdc.connector', "
        "'tap_pgcdc.streams', 'tap_pgcdc.emit', 'tap_pgcdc.tap')))"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}  # this checkout, not an installed copy
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip() == "[] []"
