"""A throwaway PostgreSQL server for tests, the demo and the benchmark.

It runs `initdb` into a temporary directory and starts the server on a free loopback port with
`wal_level=logical`. PostgreSQL refuses to run as root, so when we are root the server runs as the
`postgres` OS user, with its data and socket directories owned by that user.

This module has no pytest dependency so that `scripts/demo.py` and `benchmarks/` can use it too.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

DEFAULT_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)

# The majors the tap supports and the version matrix tests (tests/integration/test_versions.py).
MATRIX_MAJORS = (12, 13, 14, 15, 16, 17, 18)


def pg_cache_dir() -> Path:
    """Where scripts/fetch_postgres.sh puts the binaries of each major (`<dir>/<major>/bin`)."""
    if os.environ.get("TAP_PGCDC_PG_CACHE"):
        return Path(os.environ["TAP_PGCDC_PG_CACHE"])
    if _is_root():
        return Path("/var/cache/tap-pgcdc-pg")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tap-pgcdc-pg"


# Server settings every test server gets. fsync is off because the servers are throwaway;
# everything that matters for logical decoding stays as in production.
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_connections": "100",
    "log_min_messages": "warning",
    "logical_decoding_work_mem": "64MB",
    # Two-phase transactions exist in production; tests prepare some (test_lifecycle.py).
    "max_prepared_transactions": "10",
}


# Settings a major before the given one does not know: left out for older servers.
SETTING_SINCE: dict[str, int] = {"logical_decoding_work_mem": 13}


def binary_major(bin_dir: Path) -> int:
    """The major version of the server binaries in `bin_dir` (`postgres --version`)."""
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[-1].split(".")[0])


def find_bin_dir(major: int | None = None) -> Path:
    """Return the directory holding initdb/pg_ctl/postgres.

    `TAP_PGCDC_PG_BIN` wins; otherwise `TAP_PGCDC_PG<major>_BIN` for a given major; otherwise
    Debian's PostgreSQL of that major, then the cache of scripts/fetch_postgres.sh.
    """
    candidates: list[str] = []
    if major is not None and os.environ.get(f"TAP_PGCDC_PG{major}_BIN"):
        candidates.append(os.environ[f"TAP_PGCDC_PG{major}_BIN"])
    if major is None and os.environ.get("TAP_PGCDC_PG_BIN"):
        candidates.append(os.environ["TAP_PGCDC_PG_BIN"])
    if major is not None:
        candidates.append(f"/usr/lib/postgresql/{major}/bin")
        candidates.append(str(pg_cache_dir() / str(major) / "bin"))
    else:
        candidates.extend(DEFAULT_BIN_DIRS)
    for cand in candidates:
        if (Path(cand) / "initdb").exists():
            return Path(cand)
    msg = (
        f"No PostgreSQL binaries found (looked in {candidates}). "
        "Run `bash scripts/setup.sh` (it runs scripts/fetch_postgres.sh for majors other than "
        "15), or `apt-get install postgresql-15`."
    )
    raise RuntimeError(msg)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_root() -> bool:
    return os.geteuid() == 0


@dataclass
class PgServer:
    """One running PostgreSQL server in a temporary directory."""

    bin_dir: Path
    port: int
    base_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    superuser: str = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def _run(self, args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if _is_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]

    def _options(self) -> str:
        major = binary_major(self.bin_dir)
        base = {k: v for k, v in BASE_SETTINGS.items() if major >= SETTING_SINCE.get(k, 0)}
        merged = {**base, **self.settings, "port": str(self.port)}
        merged["unix_socket_directories"] = str(self.socket_dir)
        return " ".join(f"-c {k}={v}" for k, v in merged.items())

    def init(self, *, auth: str = "trust", password: str | None = None) -> None:
        """Create the cluster (initdb)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        args = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            "-E",
            "UTF8",
            "--no-locale",
            "-N",
            f"--auth={auth}",
        ]
        pwfile = self.base_dir / "pwfile"
        if password is not None:
            pwfile.write_text(password + "\n")
            args.append(f"--pwfile={pwfile}")
        if _is_root():
            pw = pwd.getpwnam("postgres")
            for path in (self.base_dir, self.socket_dir, *(self.base_dir.iterdir())):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self._run(args)
        if password is not None:
            pwfile.unlink()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                self._options(),
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (ignores a server that is already down)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]
            )

    def restart(self) -> None:
        """Stop (fast) and start again on the same port."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str | None = None, **extra: str) -> str:
        """A libpq connection string for this server over TCP loopback."""
        parts = {"host": self.host, "port": str(self.port), "dbname": dbname}
        parts["user"] = user or self.superuser
        parts.update(extra)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def connect(self, dbname: str = "postgres", *, autocommit: bool = True, **extra: str):  # type: ignore[no-untyped-def]
        """Open a psycopg2 connection (autocommit by default)."""
        conn = psycopg2.connect(self.dsn(dbname, **extra))
        conn.autocommit = autocommit
        return conn

    def execute(self, sql: str, params: object = None, dbname: str = "postgres") -> list[tuple]:
        """Run one statement in autocommit mode and return its rows (if any)."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        """Create a database (it must not exist)."""
        self.execute(f'CREATE DATABASE "{name}"')

    def server_version_num(self) -> int:
        return int(self.execute("SHOW server_version_num")[0][0])

    @property
    def hba_file(self) -> Path:
        return self.data_dir / "pg_hba.conf"

    def write_hba(self, text: str) -> None:
        """Replace pg_hba.conf (takes effect at the next start or `reload()`)."""
        self.hba_file.write_text(text)
        self.give_to_server(self.hba_file)

    def give_to_server(self, *paths: Path, mode: int | None = None) -> None:
        """Make files readable by the server process: owned by `postgres` when we are root."""
        for path in paths:
            if mode is not None:
                path.chmod(mode)
            if _is_root():
                pw = pwd.getpwnam("postgres")
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def reload(self) -> None:
        """Re-read pg_hba.conf and postgresql.conf."""
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "reload"])
        time.sleep(0.3)  # the postmaster reloads asynchronously

    def run_as_server_user(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL client program as the user the server runs as."""
        return self._run(args)


def start_server(
    *,
    major: int | None = None,
    settings: dict[str, str] | None = None,
    base_dir: Path | None = None,
    auth: str = "trust",
    password: str | None = None,
    configure: Callable[[PgServer], None] | None = None,
) -> PgServer:
    """initdb and start a new server; the caller must call `destroy()`.

    `configure` runs between initdb and the first start (write pg_hba.conf, certificates).
    """
    if base_dir is None:
        # Under /tmp, not under $HOME: /root is 0700 and the postgres user could not enter it.
        base_dir = Path(tempfile.mkdtemp(prefix="tap-pgcdc-pg-", dir="/tmp"))
    server = PgServer(
        bin_dir=find_bin_dir(major), port=free_port(), base_dir=base_dir, settings=settings or {}
    )
    server.init(auth=auth, password=password)
    if configure is not None:
        configure(server)
    last_error: Exception | None = None
    for _ in range(3):  # a free port can be taken between free_port() and the server's bind
        try:
            server.start()
            return server
        except subprocess.CalledProcessError as exc:
            last_error = exc
            server.port = free_port()
            time.sleep(0.2)
    log = server.log_file.read_text() if server.log_file.exists() else ""
    server.destroy()
    msg = f"PostgreSQL did not start: {last_error}\n{log[-2000:]}"
    raise RuntimeError(msg)


def start_standby(primary: PgServer, settings: dict[str, str] | None = None) -> PgServer:
    """A hot standby of `primary` (pg_basebackup -R, streaming); the caller must `destroy()` it."""
    base_dir = Path(tempfile.mkdtemp(prefix="tap-pgcdc-standby-", dir="/tmp"))
    standby = PgServer(
        bin_dir=primary.bin_dir,
        port=free_port(),
        base_dir=base_dir,
        settings={"hot_standby_feedback": "on", **(settings or {})},
    )
    standby.socket_dir.mkdir()
    standby.give_to_server(base_dir, standby.socket_dir)
    primary.run_as_server_user(
        [
            str(primary.bin_dir / "pg_basebackup"),
            *("-h", primary.host, "-p", str(primary.port), "-U", primary.superuser),
            *("-D", str(standby.data_dir), "-R", "-X", "stream", "-c", "fast"),
        ]
    )
    # -R writes primary_conninfo with every option pg_basebackup's libpq knows; the server's
    # walreceiver may load an older libpq (Debian's) that rejects some (sslcertmode). Keep the
    # options that matter.
    auto = standby.data_dir / "postgresql.auto.conf"
    lines = [line for line in auto.read_text().splitlines() if "primary_conninfo" not in line]
    lines.append(
        f"primary_conninfo = 'host={primary.host} port={primary.port} "
        f"user={primary.superuser} application_name=standby'"
    )
    auto.write_text("\n".join(lines) + "\n")
    try:
        standby.start()
    except subprocess.CalledProcessError:
        log = standby.log_file.read_text() if standby.log_file.exists() else ""
        standby.destroy()
        msg = f"The standby did not start:\n{log[-2000:]}"
        raise RuntimeError(msg) from None
    return standby


@contextlib.contextmanager
def running_server(**kwargs: object) -> Iterator[PgServer]:
    """Context manager around `start_server` that always destroys the server."""
    server = start_server(**kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.destroy()
