"""Connecting to PostgreSQL: the libpq arguments, the pinned session settings, the SSH tunnel.

Every connection the tap opens, SQL or replication, goes through `connection_kwargs`, so they all
render values the same way and reach the server by the same route. Building the arguments has no
side effect; opening a connection starts the SSH tunnel first when one is configured
(`start_tunnel`, idempotent), and passes its endpoint in.
"""

from __future__ import annotations

import contextlib
import logging
import typing as t

import psycopg2
import psycopg2.extensions

from tap_pgcdc.errors import ConnectionFailed

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

Connection: t.TypeAlias = psycopg2.extensions.connection

# Every session, SQL or replication, renders values the same way, so that the snapshot (which
# reads text output) and pgoutput (which sends text output) produce identical strings and the
# one set of converters in typemap.py can rely on these formats.
SESSION_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO",
    "TimeZone": "UTC",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "lc_monetary": "C",
}

SSL_SETTINGS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


logger = logging.getLogger(__name__)


def session_options() -> str:
    """The libpq `options` string that pins our session settings."""
    return " ".join(f"-c {k}={v}" for k, v in SESSION_SETTINGS.items())


def start_tunnel(config: Mapping[str, t.Any]) -> tuple[str, int] | None:
    """Start the SSH tunnel `config` asks for (once per process); where libpq should connect.

    Call it before `connection_kwargs` wherever a connection is opened. Idempotent: later calls
    reuse the running tunnel.

    Returns:
        The tunnel's local endpoint, or None when `ssh_tunnel.enable` is not true.

    Raises:
        ConfigError: The `ssh_tunnel` settings are incomplete or the key cannot be read.
        ConnectionFailed: The tunnel cannot be opened.
    """
    if not (config.get("ssh_tunnel") or {}).get("enable"):
        return None
    # Imported here: paramiko is heavy, and only a configured tunnel needs it.
    from tap_pgcdc.pg.tunnel import start_tunnel as start_ssh_tunnel

    return start_ssh_tunnel(config)


def connection_kwargs(
    config: Mapping[str, t.Any], tunnel: tuple[str, int] | None = None
) -> dict[str, t.Any]:
    """psycopg2/libpq keyword arguments from the tap config (shared by SQL and replication).

    Args:
        config: The tap's settings.
        tunnel: The running SSH tunnel's endpoint (from `start_tunnel`), if any: libpq then
            connects there, and `host` stays the name sslmode=verify-full checks.
    """
    kwargs: dict[str, t.Any] = {
        "host": config.get("host", "localhost"),
        "port": int(config.get("port", 5432)),
        "dbname": config["database"],
        "user": config["user"],
        "application_name": "tap-pgcdc",
        "connect_timeout": int(config.get("connect_timeout", 15)),
        "options": session_options(),
        # Detect a dead peer (a killed server, a dropped tunnel) instead of hanging forever.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if config.get("password"):
        kwargs["password"] = config["password"]
    for key in SSL_SETTINGS:
        if config.get(key):
            kwargs[key] = config[key]
    if tunnel is not None:
        kwargs["hostaddr"], kwargs["port"] = tunnel
    return kwargs


def connect(
    config: Mapping[str, t.Any],
    connection_factory: type[psycopg2.extensions.connection] | None = None,
    **extra: t.Any,
) -> psycopg2.extensions.connection:
    """Open a connection with the pinned session settings, through the tunnel if configured.

    Args:
        config: The tap's settings.
        connection_factory: A psycopg2 connection class (e.g. a replication connection).
        extra: libpq arguments that override those from `config`.

    Raises:
        ConnectionFailed: with the server's reason and what to check, never the password.
    """
    for attempt in (1, 2):
        tunnel = start_tunnel(config)
        kwargs = connection_kwargs(config, tunnel)
        kwargs.update(extra)
        if connection_factory is not None:
            kwargs["connection_factory"] = connection_factory
        try:
            return psycopg2.connect(**kwargs)
        except psycopg2.OperationalError as exc:
            # The bastion ended the SSH session under this attempt: a new one is opened once.
            if attempt == 1 and tunnel is not None and _tunnel_lost(config):
                logger.warning("The SSH tunnel was closed by the bastion; opening a new one.")
                continue
            raise ConnectionFailed.from_error(exc, config) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _tunnel_lost(config: Mapping[str, t.Any]) -> bool:
    from tap_pgcdc.pg.tunnel import tunnel_lost  # paramiko: only a configured tunnel needs it

    return tunnel_lost(config)


@contextlib.contextmanager
def transaction(conn: Connection) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor whose transaction is committed on success and rolled back on error."""
    with conn, conn.cursor() as cur:
        yield cur


def connection_lost(exc: psycopg2.Error) -> bool:
    """Whether a psycopg2 error means the connection broke, not that a statement failed."""
    code = exc.pgcode or ""
    # No SQLSTATE: libpq's own error (closed socket); 08: connection exception; 57P: the server
    # is shutting down, crashed, or ended the session (pg_terminate_backend).
    return code == "" or code.startswith(("08", "57P"))
