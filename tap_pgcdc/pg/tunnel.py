"""An SSH tunnel through a bastion host, for the SQL and the replication connection alike.

With `ssh_tunnel.enable`, `start_tunnel` (called by every function that opens a connection,
before it builds the connection's arguments) starts one tunnel for the process: an SSH session
to `ssh_tunnel.host` (public-key login with `ssh_tunnel.private_key`), and a listener on
127.0.0.1 whose every accepted connection is forwarded through the session (`direct-tcpip`) to
`host`:`port` as the bastion sees them. libpq then connects to the listener with `hostaddr`,
keeping `host` as the name to verify the server's certificate against (sslmode verify-full works
through the tunnel). The tunnel closes when the process exits.

Settings follow Meltano's tap-postgres (`ssh_tunnel.enable/host/port/username/private_key/
private_key_password`); `ssh_tunnel.host_public_key` is ours: it pins the bastion's host key.
Nothing here logs or reports a key or a passphrase. This is the only module that imports
paramiko; `tap_pgcdc.pg.connect` imports it only when a tunnel is enabled.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import io
import logging
import select
import socket
import threading
import typing as t
from dataclasses import dataclass, field

import paramiko

from tap_pgcdc.errors import ConfigError, ConnectionFailed

if t.TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)
# paramiko reports every handshake step at INFO; the tap reports what matters itself.
logging.getLogger("paramiko").setLevel(logging.WARNING)

_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)
_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class TunnelSettings:
    """The `ssh_tunnel` object of the config, checked."""

    host: str
    port: int
    username: str
    private_key: str = field(repr=False)
    private_key_password: str | None = field(default=None, repr=False)
    host_public_key: str | None = None
    connect_timeout: float = 15.0

    @property
    def where(self) -> str:
        """`username@host:port` of the bastion, for messages."""
        return f"{self.username}@{self.host}:{self.port}"


def tunnel_settings(config: Mapping[str, t.Any]) -> TunnelSettings | None:
    """The tunnel settings when `ssh_tunnel.enable` is true, else None.

    Raises:
        ConfigError: A required `ssh_tunnel` setting is missing.
    """
    raw = config.get("ssh_tunnel") or {}
    if not raw.get("enable"):
        return None
    missing = [key for key in ("host", "username", "private_key") if not raw.get(key)]
    if missing:
        names = ", ".join(f"`ssh_tunnel.{key}`" for key in missing)
        msg = (
            f"ssh_tunnel.enable is true but {names} is not set. Fix: set it, or disable the tunnel."
        )
        raise ConfigError(msg)
    return TunnelSettings(
        host=str(raw["host"]),
        port=int(raw.get("port") or 22),
        username=str(raw["username"]),
        private_key=str(raw["private_key"]),
        private_key_password=raw.get("private_key_password") or None,
        host_public_key=raw.get("host_public_key") or None,
        connect_timeout=float(config.get("connect_timeout", 15)),
    )


def load_private_key(text: str, password: str | None) -> paramiko.PKey:
    """Parse the key text (OpenSSH or PEM; Ed25519, ECDSA or RSA).

    Raises:
        ConfigError: Naming `ssh_tunnel.private_key` or `ssh_tunnel.private_key_password`,
            never quoting either.
    """
    if "\\n" in text and "\n" not in text.strip():
        text = text.replace("\\n", "\n")  # pasted into a one-line environment variable
    text = text.strip() + "\n"
    encrypted = False
    for cls in _KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(text), password=password)
        except paramiko.PasswordRequiredException:
            encrypted = True
        except (paramiko.SSHException, ValueError, TypeError, IndexError):
            continue
    if encrypted and not password:
        msg = (
            "`ssh_tunnel.private_key` is encrypted with a passphrase. Fix: set "
            "`ssh_tunnel.private_key_password`."
        )
    elif password:
        msg = (
            "`ssh_tunnel.private_key` could not be read with `ssh_tunnel.private_key_password`: "
            "the passphrase is wrong, or the key is not an OpenSSH or PEM private key (Ed25519, "
            "ECDSA or RSA). Fix: check both settings (the key text includes its BEGIN and END "
            "lines)."
        )
    else:
        msg = (
            "`ssh_tunnel.private_key` is not an OpenSSH or PEM private key (Ed25519, ECDSA or "
            "RSA). Fix: set it to the whole key text, including its BEGIN and END lines (not a "
            "file path, not the public key)."
        )
    raise ConfigError(msg)


def fingerprint(key: paramiko.PKey) -> str:
    """The key's SHA256 fingerprint as OpenSSH prints it (`SHA256:...`)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class SshTunnel:
    """One SSH session and a loopback listener forwarding to `remote_host:remote_port`."""

    def __init__(self, settings: TunnelSettings, remote_host: str, remote_port: int) -> None:
        self.settings = settings
        self.remote = (remote_host, remote_port)
        self._transport: paramiko.Transport | None = None
        self._listener: socket.socket | None = None
        self._closed = threading.Event()
        self.local_port = 0

    @property
    def is_active(self) -> bool:
        """Whether the SSH session is up (started and not ended, by us or by the bastion)."""
        return self._transport is not None and self._transport.is_active()

    def start(self) -> None:
        """Log in to the bastion, check it can reach the database, then listen on loopback.

        Raises:
            ConfigError: The key cannot be read (see `load_private_key`).
            ConnectionFailed: The bastion is unreachable, refuses the login, has another host
                key than `ssh_tunnel.host_public_key`, or cannot reach the database.
        """
        s = self.settings
        key = load_private_key(s.private_key, s.private_key_password)
        try:
            sock = socket.create_connection((s.host, s.port), timeout=s.connect_timeout)
        except OSError as exc:
            msg = (
                f"Cannot open the SSH tunnel: the bastion {s.host}:{s.port} is unreachable "
                f"({exc}). Fix: check `ssh_tunnel.host` and `ssh_tunnel.port`, and that the "
                "network (firewall, security group) lets this machine reach it."
            )
            raise ConnectionFailed(msg) from None
        transport = paramiko.Transport(sock)
        self._transport = transport
        try:
            try:
                transport.start_client(timeout=s.connect_timeout)
                host_key = transport.get_remote_server_key()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                msg = (
                    f"Cannot open the SSH tunnel to {s.host}:{s.port}: the SSH handshake failed "
                    f"({exc}). Fix: check that `ssh_tunnel.host` and `ssh_tunnel.port` point at "
                    "an SSH server."
                )
                raise ConnectionFailed(msg) from None
            self._check_host_key(host_key)
            try:
                transport.auth_publickey(s.username, key)
            except (paramiko.SSHException, OSError, EOFError):
                msg = (
                    f"Cannot open the SSH tunnel: the bastion {s.where} refused the login with "
                    "`ssh_tunnel.private_key`. Fix: check `ssh_tunnel.username`, and that the "
                    "key's public half is in that user's authorized_keys on the bastion."
                )
                raise ConnectionFailed(msg) from None
            transport.set_keepalive(30)
            self._check_forwarding()
        except ConnectionFailed:
            self.close()
            raise
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self._listener = listener
        self.local_port = listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, name="ssh-tunnel", daemon=True).start()
        logger.info(
            "SSH tunnel open: 127.0.0.1:%d -> %s -> %s:%d",
            self.local_port,
            s.where,
            *self.remote,
        )

    def _check_host_key(self, key: paramiko.PKey) -> None:
        s = self.settings
        seen = f"{key.get_name()} {fingerprint(key)}"
        if s.host_public_key is None:
            logger.info(
                "SSH bastion %s:%d presented host key %s (not pinned: set "
                "ssh_tunnel.host_public_key to verify it).",
                s.host,
                s.port,
                seen,
            )
            return
        parts = s.host_public_key.split()
        if len(parts) < 2 or parts[0] != key.get_name() or parts[1] != key.get_base64():
            msg = (
                f"The SSH bastion {s.host}:{s.port} presented host key {seen}, which is not "
                "`ssh_tunnel.host_public_key`: the bastion was replaced, or someone is in the "
                "way. Fix: check the bastion's key (ssh-keyscan -t "
                f"{key.get_name()} {s.host}) before updating the setting."
            )
            raise ConnectionFailed(msg)

    def _check_forwarding(self) -> None:
        """Open (and close) one forwarded connection, so a wrong `host` fails here, clearly."""
        assert self._transport is not None
        host, port = self.remote
        try:
            channel = self._transport.open_channel(
                "direct-tcpip", self.remote, ("127.0.0.1", 0), timeout=self.settings.connect_timeout
            )
        except (paramiko.ChannelException, paramiko.SSHException, OSError, EOFError) as exc:
            msg = (
                f"The SSH tunnel is open, but the bastion {self.settings.where} cannot connect to "
                f"the database at {host}:{port} ({exc}). Fix: set `host` and `port` to the "
                "database's address as the bastion sees it, and check that the bastion allows "
                "TCP forwarding (AllowTcpForwarding in its sshd_config)."
            )
            raise ConnectionFailed(msg) from None
        channel.close()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._closed.is_set():
            try:
                client, peer = listener.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._forward, args=(client, peer), name="ssh-tunnel-conn", daemon=True
            ).start()

    def _forward(self, client: socket.socket, peer: tuple[str, int]) -> None:
        transport = self._transport
        try:
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("the SSH session to the bastion has ended")
            channel = transport.open_channel("direct-tcpip", self.remote, peer)
        except (paramiko.ChannelException, paramiko.SSHException, OSError, EOFError) as exc:
            logger.error(
                "SSH tunnel: cannot forward a connection to %s:%d through %s: %s",
                *self.remote,
                self.settings.where,
                exc,
            )
            client.close()
            return
        try:
            _pump(client, channel)
        finally:
            channel.close()
            client.close()

    def close(self) -> None:
        """Stop listening and end the SSH session."""
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
        if self._transport is not None:
            self._transport.close()


def _pump(client: socket.socket, channel: paramiko.Channel) -> None:
    """Copy bytes both ways until either side closes."""
    while True:
        readable, _, _ = select.select([client, channel], [], [], 60)
        if client in readable:
            data = client.recv(_CHUNK)
            if not data:
                return
            channel.sendall(data)
        if channel in readable:
            data = channel.recv(_CHUNK)
            if not data:
                return
            client.sendall(data)


_lock = threading.Lock()
_tunnels: dict[tuple[t.Any, ...], SshTunnel] = {}


def _remote(config: Mapping[str, t.Any]) -> tuple[str, int]:
    """The database's address as the bastion sees it."""
    return str(config.get("host", "localhost")), int(config.get("port", 5432))


def _key(settings: TunnelSettings, remote: tuple[str, int]) -> tuple[t.Any, ...]:
    """One tunnel per bastion, login and database address."""
    return (settings.host, settings.port, settings.username, *remote)


def start_tunnel(config: Mapping[str, t.Any]) -> tuple[str, int] | None:
    """Start the tunnel `config` asks for, unless it runs already; where libpq should connect.

    Idempotent: the first call of the process starts the tunnel, every later one reuses it (and
    starts a new one if the bastion ended the session).

    Returns:
        The tunnel's listener (`127.0.0.1`, port), or None when `ssh_tunnel.enable` is not true.

    Raises:
        ConfigError: A required `ssh_tunnel` setting is missing, or the key cannot be read.
        ConnectionFailed: The tunnel cannot be opened (see `SshTunnel.start`).
    """
    settings = tunnel_settings(config)
    if settings is None:
        return None
    remote = _remote(config)
    key = _key(settings, remote)
    with _lock:
        tunnel = _tunnels.get(key)
        if tunnel is None or not tunnel.is_active:
            tunnel = SshTunnel(settings, *remote)
            tunnel.start()
            _tunnels[key] = tunnel
    return "127.0.0.1", tunnel.local_port


def tunnel_lost(config: Mapping[str, t.Any]) -> bool:
    """Whether the tunnel `config` uses was started and has since ended (the bastion dropped it).

    A connection attempt through a tunnel whose SSH session just died fails; the next
    `start_tunnel` opens a new session.
    """
    settings = tunnel_settings(config)
    if settings is None:
        return False
    with _lock:
        tunnel = _tunnels.get(_key(settings, _remote(config)))
    return tunnel is not None and not tunnel.is_active


def close_all() -> None:
    """Close every tunnel of the process (also run at exit)."""
    with _lock:
        for tunnel in _tunnels.values():
            tunnel.close()
        _tunnels.clear()


atexit.register(close_all)
