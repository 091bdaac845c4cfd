"""SSL/TLS for both connections (SQL and replication), against a local server with a test CA.

The module makes its own certificate authority with the openssl CLI: a server certificate for
`localhost` (so `host=localhost` passes verify-full and `host=127.0.0.1` does not), a client
certificate for certificate login, and a second CA the server does not use. The server logs
every connection (log_connections), which tells for each connection, SQL and replication alike,
whether it used SSL and how it authenticated.

pg_hba.conf of the server:
- `postgres` (the test's own admin connections): trust, SSL or not;
- `tap_any`: password, SSL or not (every sslmode can connect);
- `tap_sslonly`: password, SSL only (`hostssl`);
- `tap_mtls`: password and a client certificate (`clientcert=verify-full`);
- `tap_cert`: the client certificate alone (`cert` method: its CN is the user).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.memory_target import MemoryTarget
from tests.pgserver import PgServer, start_server
from tests.tap_runner import TapRun, run_tap

PASSWORD = "s3cret-Pw"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
USES_SSL = {"disable": False, "allow": False, "prefer": True, "require": True}

HBA = """\
local   all all                     trust
host    all postgres    127.0.0.1/32 trust
host    all tap_any     127.0.0.1/32 scram-sha-256
hostssl all tap_sslonly 127.0.0.1/32 scram-sha-256
hostssl all tap_mtls    127.0.0.1/32 scram-sha-256 clientcert=verify-full
hostssl all tap_cert    127.0.0.1/32 cert
"""


@dataclass
class Pki:
    ca: Path  # the CA that signed the server and client certificates
    other_ca: Path  # a CA nobody uses
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN=tap_cert, signed by `ca`
    client_key: Path
    mtls_cert: Path  # CN=tap_mtls: clientcert=verify-full also checks that the CN is the user
    mtls_key: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, cwd=cwd)


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN=tap-pgcdc test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _issue(directory: Path, name: str, subject: str, ext: str, ca: tuple[Path, Path]) -> None:
    (directory / f"{name}.ext").write_text(ext + "\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.key").chmod(0o600)  # libpq refuses a client key others can read


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = _make_ca(directory, "ca")
    other = _make_ca(directory, "other_ca")
    _issue(directory, "server", "/CN=localhost", "subjectAltName=DNS:localhost", ca)
    _issue(directory, "client", "/CN=tap_cert", "extendedKeyUsage=clientAuth", ca)
    _issue(directory, "mtls", "/CN=tap_mtls", "extendedKeyUsage=clientAuth", ca)
    return Pki(
        ca=ca[0],
        other_ca=other[0],
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        mtls_cert=directory / "mtls.crt",
        mtls_key=directory / "mtls.key",
    )


@pytest.fixture(scope="module")
def ssl_pg(pki: Pki) -> Iterator[PgServer]:
    def configure(server: PgServer) -> None:
        # Relative ssl_* paths resolve against the data directory.
        ssl_dir = server.data_dir / "ssl"
        ssl_dir.mkdir()
        for src in (pki.server_cert, pki.server_key, pki.ca):
            (ssl_dir / src.name).write_bytes(src.read_bytes())
            server.give_to_server(ssl_dir / src.name, mode=0o600)
        server.give_to_server(ssl_dir)
        server.write_hba(HBA)

    server = start_server(
        settings={
            "ssl": "on",
            "log_connections": "on",
            "ssl_cert_file": "ssl/server.crt",
            "ssl_key_file": "ssl/server.key",
            "ssl_ca_file": "ssl/ca.crt",
        },
        configure=configure,
    )
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def sdb(ssl_pg: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database with the four test roles (created once per server)."""
    name = "ssl_" + re.sub(r"\W", "_", request.node.name.lower())[:40]
    ssl_pg.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tap_any') THEN "
        f"CREATE ROLE tap_any LOGIN SUPERUSER PASSWORD '{PASSWORD}'; "
        f"CREATE ROLE tap_sslonly LOGIN SUPERUSER PASSWORD '{PASSWORD}'; "
        f"CREATE ROLE tap_mtls LOGIN SUPERUSER PASSWORD '{PASSWORD}'; "
        "CREATE ROLE tap_cert LOGIN SUPERUSER; END IF; END $$"
    )
    ssl_pg.create_database(name)
    ssl_pg.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", dbname=name)
    ssl_pg.execute("INSERT INTO t VALUES (1, 'one')", dbname=name)
    try:
        yield name
    finally:
        ssl_pg.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = %s",
            (name,),
        )
        ssl_pg.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _config(server: PgServer, database: str, user: str, **extra: object) -> dict[str, object]:
    config: dict[str, object] = {
        "host": "localhost",
        "port": server.port,
        "user": user,
        "database": database,
        "slot_name": "ssl_slot",
        "publication_name": "ssl_pub",
    }
    if user != "tap_cert":
        config["password"] = PASSWORD
    config.update(extra)
    return config


def _log_offset(server: PgServer) -> int:
    return server.log_file.stat().st_size


def _connections(server: PgServer, since: int) -> list[str]:
    """The tap's connections authorized since log offset `since` (replication lines name no
    database, so tests mark where they start instead)."""
    with server.log_file.open("rb") as log:
        log.seek(since)
        text = log.read().decode()
    return [
        line
        for line in text.splitlines()
        if "connection authorized:" in line and "user=postgres " not in line
    ]


def _snapshot_then_change(server: PgServer, database: str, config: dict[str, object]) -> TapRun:
    target = MemoryTarget()
    first = run_tap(config).check()
    target.apply(first.messages)
    server.execute("INSERT INTO t VALUES (2, 'two')", dbname=database)
    second = run_tap(config, state=target.state).check()
    target.apply(second.messages)
    assert target.rows("public-t") == [{"id": 1, "v": "one"}, {"id": 2, "v": "two"}]
    assert [r["id"] for r in second.records()] == [2]
    return second


@pytest.mark.parametrize("sslmode", SSL_MODES)
def test_every_sslmode_applies_to_both_connections(ssl_pg, sdb, pki, sslmode) -> None:
    config = _config(ssl_pg, sdb, "tap_any", sslmode=sslmode)
    if sslmode.startswith("verify"):
        config["sslrootcert"] = str(pki.ca)
    since = _log_offset(ssl_pg)
    _snapshot_then_change(ssl_pg, sdb, config)
    lines = _connections(ssl_pg, since)
    sql = [line for line in lines if "replication connection" not in line]
    replication = [line for line in lines if "replication connection" in line]
    assert sql and replication  # the snapshot's and the log reader's replication connections
    wants_ssl = USES_SSL.get(sslmode, True)
    for line in lines:
        assert ("SSL enabled" in line) is wants_ssl, line


def test_certificate_login_for_both_connections(ssl_pg, sdb, pki) -> None:
    config = _config(
        ssl_pg,
        sdb,
        "tap_cert",
        sslmode="verify-full",
        sslrootcert=str(pki.ca),
        sslcert=str(pki.client_cert),
        sslkey=str(pki.client_key),
    )
    since = _log_offset(ssl_pg)
    _snapshot_then_change(ssl_pg, sdb, config)
    lines = _connections(ssl_pg, since)
    assert any("replication connection" in line for line in lines)
    assert all("SSL enabled" in line for line in lines)
    log = ssl_pg.log_file.read_text()
    assert 'connection authenticated: identity="CN=tap_cert" method=cert' in log


def test_password_plus_required_client_certificate(ssl_pg, sdb, pki) -> None:
    with_cert = _config(
        ssl_pg,
        sdb,
        "tap_mtls",
        sslmode="verify-full",
        sslrootcert=str(pki.ca),
        sslcert=str(pki.mtls_cert),
        sslkey=str(pki.mtls_key),
    )
    _snapshot_then_change(ssl_pg, sdb, with_cert)
    # Another user's certificate, valid as it is, does not pass.
    other = {**with_cert, "sslcert": str(pki.client_cert), "sslkey": str(pki.client_key)}
    assert run_tap(other).returncode != 0
    without = {k: v for k, v in with_cert.items() if k not in ("sslcert", "sslkey")}
    run = run_tap(without)
    assert run.returncode != 0
    assert "connection requires a valid client certificate" in run.stderr
    assert "check `sslmode`, `sslrootcert`, `sslcert` and `sslkey`" in run.stderr
    assert PASSWORD not in run.stderr


def test_verify_full_refuses_a_wrong_host_name(ssl_pg, sdb, pki) -> None:
    config = _config(
        ssl_pg, sdb, "tap_any", host="127.0.0.1", sslmode="verify-full", sslrootcert=str(pki.ca)
    )
    run = run_tap(config)
    assert run.returncode != 0
    assert 'server certificate for "localhost"' in run.stderr
    assert 'does not match host name "127.0.0.1"' in run.stderr
    assert "`host` must be a name (or address) the server certificate lists" in run.stderr
    # verify-ca checks the chain only: the same host passes.
    run_tap({**config, "sslmode": "verify-ca"}).check()


@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full"])
def test_verify_refuses_an_unknown_ca(ssl_pg, sdb, pki, sslmode) -> None:
    config = _config(ssl_pg, sdb, "tap_any", sslmode=sslmode, sslrootcert=str(pki.other_ca))
    run = run_tap(config)
    assert run.returncode != 0
    assert "certificate verify failed" in run.stderr
    assert "check `sslmode`, `sslrootcert`" in run.stderr


def test_verify_without_a_root_certificate_says_so(ssl_pg, sdb) -> None:
    config = _config(
        ssl_pg, sdb, "tap_any", sslmode="verify-full", sslrootcert="/nonexistent/root.crt"
    )
    run = run_tap(config)
    assert run.returncode != 0
    assert "/nonexistent/root.crt" in run.stderr
    assert "check `sslmode`, `sslrootcert`" in run.stderr


def test_ssl_only_server_refuses_sslmode_disable(ssl_pg, sdb, pki) -> None:
    run = run_tap(_config(ssl_pg, sdb, "tap_sslonly", sslmode="disable"))
    assert run.returncode != 0
    assert "no encryption" in run.stderr
    assert "accepts this connection only over SSL" in run.stderr
    assert "`sslmode`" in run.stderr
    # The same user with SSL works, for both connections.
    config = _config(ssl_pg, sdb, "tap_sslonly", sslmode="require")
    since = _log_offset(ssl_pg)
    _snapshot_then_change(ssl_pg, sdb, config)
    lines = _connections(ssl_pg, since)
    assert any("replication connection" in line for line in lines)
    assert all("SSL enabled" in line for line in lines)
