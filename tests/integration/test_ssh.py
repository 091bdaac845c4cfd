"""The SSH tunnel (`ssh_tunnel` settings) for both connections, through a real local sshd.

The module starts Debian's OpenSSH server on a loopback port with its own configuration, host
key and authorized_keys for a dedicated OS user, and keys made with ssh-keygen: Ed25519 without a
passphrase, Ed25519 with one (OpenSSH format) and RSA with one (PEM). sshd logs each forwarded
connection (`server_request_direct_tcpip`), which shows that the SQL and the replication
connections all went through the bastion. It needs root (sshd, a new OS user) and
openssh-server (scripts/setup.sh installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_ssl import pki, ssl_pg  # noqa: F401 - fixtures for the TLS case
from tests.memory_target import MemoryTarget
from tests.pgserver import free_port
from tests.tap_runner import run_tap

SSHD = Path("/usr/sbin/sshd")
SSH_USER = "tap_pgcdc_ssh"
PASSPHRASE = "correct horse battery"

if os.geteuid() != 0 or not SSHD.exists():
    pytest.skip(
        "needs root and openssh-server (bash scripts/setup.sh installs it)",
        allow_module_level=True,
    )


@dataclass
class Bastion:
    port: int
    directory: Path
    log: Path
    host_public_key: str  # "ssh-ed25519 AAAA..."
    keys: dict[str, str]  # name -> private key text

    def forwards(self) -> int:
        return self.log.read_text().count("server_request_direct_tcpip")


def _keygen(path: Path, kind: str, passphrase: str = "", pem: bool = False) -> None:
    args = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-f", str(path), "-C", "test"]
    if pem:
        args += ["-m", "PEM"]
    if kind == "rsa":
        args += ["-b", "2048"]
    subprocess.run(args, check=True, capture_output=True)


def _ensure_user() -> None:
    if subprocess.run(["id", SSH_USER], capture_output=True, check=False).returncode == 0:
        return
    subprocess.run(
        ["useradd", "--system", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", SSH_USER],
        check=True,
    )
    # useradd leaves the password field "!", which sshd (without PAM) takes for a locked account.
    subprocess.run(["usermod", "-p", "*", SSH_USER], check=True)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {port}: {log.read_text()}")


@pytest.fixture(scope="module")
def bastion() -> Iterator[Bastion]:
    _ensure_user()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    # Not under pytest's 0700 tmp: sshd reads authorized_keys as the login user.
    directory = Path(tempfile.mkdtemp(prefix="tap-pgcdc-sshd-", dir="/tmp"))
    directory.chmod(0o755)
    _keygen(directory / "host_key", "ed25519")
    _keygen(directory / "plain", "ed25519")
    _keygen(directory / "ed25519_pass", "ed25519", PASSPHRASE)
    _keygen(directory / "rsa_pem_pass", "rsa", PASSPHRASE, pem=True)
    _keygen(directory / "stranger", "ed25519")
    authorized = "".join(
        (directory / f"{name}.pub").read_text()
        for name in ("plain", "ed25519_pass", "rsa_pem_pass")
    )
    (directory / "authorized_keys").write_text(authorized)
    (directory / "authorized_keys").chmod(0o644)
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {directory}/host_key
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {directory}/authorized_keys
StrictModes no
AllowUsers {SSH_USER}
AllowTcpForwarding yes
PermitTTY no
LogLevel DEBUG1
"""
    )
    log = directory / "sshd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_port(port, proc, log)
        host_pub = " ".join((directory / "host_key.pub").read_text().split()[:2])
        keys = {
            name: (directory / name).read_text()
            for name in ("plain", "ed25519_pass", "rsa_pem_pass", "stranger")
        }
        yield Bastion(port, directory, log, host_pub, keys)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def _tunnel(bastion: Bastion, key: str = "plain", **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "enable": True,
        "host": "127.0.0.1",
        "port": bastion.port,
        "username": SSH_USER,
        "private_key": bastion.keys[key],
    }
    if key in ("ed25519_pass", "rsa_pem_pass"):
        settings["private_key_password"] = PASSPHRASE
    settings.update(extra)
    return settings


def _secrets_absent(stderr: str, bastion: Bastion) -> None:
    assert PASSPHRASE not in stderr
    for text in bastion.keys.values():
        body = text.splitlines()[1]  # the first line of key material
        assert body not in stderr


@pytest.mark.parametrize("key", ["plain", "ed25519_pass", "rsa_pem_pass"])
def test_snapshot_and_changes_through_the_tunnel(db, bastion, key) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t VALUES (1, 'one')")
    config = db.config(ssh_tunnel=_tunnel(bastion, key))
    before = bastion.forwards()
    target = MemoryTarget()
    first = run_tap(config).check()
    target.apply(first.messages)
    db.execute("INSERT INTO t VALUES (2, 'two'); UPDATE t SET v = 'uno' WHERE id = 1")
    second = run_tap(config, state=target.state).check()
    target.apply(second.messages)
    assert target.rows("public-t") == [{"id": 1, "v": "uno"}, {"id": 2, "v": "two"}]
    # Each run: the check at tunnel start, SQL connections, the snapshot's and the log
    # reader's replication connections: all forwarded by the bastion.
    assert bastion.forwards() - before >= 6
    assert "SSH tunnel open: 127.0.0.1:" in first.stderr
    _secrets_absent(first.stderr + second.stderr, bastion)


def test_the_tunnel_carries_verify_full_tls(bastion, ssl_pg, pki) -> None:  # noqa: F811
    """`host` stays the name the certificate is checked against; libpq dials the tunnel."""
    ssl_pg.execute("CREATE DATABASE ssh_tls")
    try:
        ssl_pg.execute("CREATE TABLE t (id int PRIMARY KEY)", dbname="ssh_tls")
        ssl_pg.execute("INSERT INTO t VALUES (1)", dbname="ssh_tls")
        config = {
            "host": "localhost",
            "port": ssl_pg.port,
            "user": "postgres",
            "database": "ssh_tls",
            "sslmode": "verify-full",
            "sslrootcert": str(pki.ca),
            "ssh_tunnel": _tunnel(bastion),
        }
        run = run_tap(config).check()
        assert [r["id"] for r in run.records()] == [1]
    finally:
        ssl_pg.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = 'ssh_tls'"
        )
        ssl_pg.execute("DROP DATABASE ssh_tls WITH (FORCE)")


def test_pinned_host_key(db, bastion) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    pinned = db.config(ssh_tunnel=_tunnel(bastion, host_public_key=bastion.host_public_key))
    run_tap(pinned, args=["--discover"]).check()
    other = (bastion.directory / "stranger.pub").read_text()
    wrong = db.config(ssh_tunnel=_tunnel(bastion, host_public_key=other))
    run = run_tap(wrong, args=["--discover"])
    assert run.returncode != 0
    assert "is not `ssh_tunnel.host_public_key`" in run.stderr
    assert "ssh-ed25519 SHA256:" in run.stderr


def _fails(db, bastion: Bastion, tunnel: dict[str, Any], **config: Any) -> str:
    run = run_tap(db.config(ssh_tunnel=tunnel, **config), args=["--discover"])
    assert run.returncode != 0
    _secrets_absent(run.stderr, bastion)
    return run.stderr


def test_key_errors_name_the_setting(db, bastion) -> None:
    no_pass = _tunnel(bastion, "ed25519_pass")
    del no_pass["private_key_password"]
    assert "`ssh_tunnel.private_key` is encrypted with a passphrase" in _fails(db, bastion, no_pass)
    wrong_pass = _tunnel(bastion, "rsa_pem_pass", private_key_password="not it")
    stderr = _fails(db, bastion, wrong_pass)
    assert "could not be read with `ssh_tunnel.private_key_password`" in stderr
    assert "not it" not in stderr
    garbage = _tunnel(bastion, private_key="/home/me/.ssh/id_ed25519")
    assert "`ssh_tunnel.private_key` is not an OpenSSH or PEM private key" in _fails(
        db, bastion, garbage
    )
    missing = _tunnel(bastion)
    del missing["username"]
    assert "`ssh_tunnel.username` is not set" in _fails(db, bastion, missing)


def test_one_line_key_with_escaped_newlines(db, bastion) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    escaped = bastion.keys["plain"].strip().replace("\n", "\\n")
    run_tap(
        db.config(ssh_tunnel=_tunnel(bastion, private_key=escaped)), args=["--discover"]
    ).check()


def test_connection_errors_name_the_setting(db, bastion) -> None:
    stranger = _tunnel(bastion, "stranger")
    stderr = _fails(db, bastion, stranger)
    assert f"the bastion {SSH_USER}@127.0.0.1:{bastion.port} refused the login" in stderr
    assert "`ssh_tunnel.username`" in stderr

    closed = free_port()
    stderr = _fails(db, bastion, _tunnel(bastion, port=closed))
    assert f"the bastion 127.0.0.1:{closed} is unreachable" in stderr
    assert "`ssh_tunnel.host` and `ssh_tunnel.port`" in stderr

    nowhere = free_port()
    stderr = _fails(db, bastion, _tunnel(bastion), port=nowhere)
    assert f"cannot connect to the database at 127.0.0.1:{nowhere}" in stderr
    assert "set `host` and `port` to the database's address as the bastion sees it" in stderr
