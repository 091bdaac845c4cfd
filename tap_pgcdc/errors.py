"""Exception types raised by tap-pgcdc.

Every error carries a message that says what went wrong and, where the user can act on it,
what to do about it: these messages end up in the tap's log, read by someone on call.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Sequence


class TapPgCdcError(Exception):
    """Base class of every error raised by tap-pgcdc, carrying an actionable message."""


class ProtocolError(TapPgCdcError):
    """Malformed, truncated or unknown pgoutput data received from the server."""


class ConfigError(TapPgCdcError):
    """A setting is missing, malformed or inconsistent with the server."""


class ConnectionFailed(TapPgCdcError):
    """The server could not be reached or refused the login."""

    @classmethod
    def from_error(cls, exc: BaseException, config: t.Mapping[str, t.Any]) -> ConnectionFailed:
        """Turn a libpq connection error into a message that names the setting to fix.

        The password never appears: libpq does not echo it, and we scrub it anyway in case a
        server or proxy does.
        """
        where = (
            f"{config.get('user')}@{config.get('host', 'localhost')}:"
            f"{config.get('port', 5432)}/{config.get('database')}"
        )
        reason = str(exc).strip()
        password = config.get("password")
        if password:
            reason = reason.replace(str(password), "***")
        low = reason.lower()
        if "password authentication failed" in low or "no password supplied" in low:
            hint = "check the `user` and `password` settings"
        elif "does not exist" in low and "database" in low:
            hint = "check the `database` setting (the database must exist)"
        elif "role" in low and "does not exist" in low:
            hint = "check the `user` setting (the role must exist)"
        elif "pg_hba.conf" in low and "no encryption" in low:
            hint = (
                "the server accepts this connection only over SSL (hostssl in pg_hba.conf): set "
                "`sslmode` to require, or to verify-full with `sslrootcert` (the server's CA)"
            )
        elif "pg_hba.conf" in low:
            hint = (
                "the server's pg_hba.conf refuses this client: add a `host` entry for this user "
                "(and a `host replication` entry for log-based capture), or use the managed "
                "platform's network settings"
            )
        elif "does not match host name" in low:
            hint = (
                "with `sslmode` verify-full, `host` must be a name (or address) the server "
                "certificate lists: connect by that name, or use verify-ca to check only that "
                "`sslrootcert` signed it"
            )
        elif "ssl" in low or "certificate" in low:
            hint = "check `sslmode`, `sslrootcert`, `sslcert` and `sslkey`"
        elif (
            "could not connect" in low
            or "connection refused" in low
            or "could not translate host name" in low
            or "timeout expired" in low
            or "connection to server" in low
        ):
            hint = (
                "check `host` and `port`, that the server is running, and that the network "
                "(firewall, security group, SSH tunnel) lets this machine reach it"
            )
        else:
            hint = "check the connection settings"
        return cls(f"Cannot connect to PostgreSQL as {where}: {reason}. Fix: {hint}.")


class ServerConfigError(TapPgCdcError):
    """The server's settings do not allow logical replication (wal_level, slots, senders)."""


class PrivilegeError(TapPgCdcError):
    """The role lacks a privilege the tap needs (REPLICATION, SELECT, publication ownership)."""

    @classmethod
    def refused(cls, what: str, detail: str, user: str | None) -> PrivilegeError:
        """The error for a statement the server refused while doing `what`."""
        return cls(
            f"PostgreSQL refused a statement while {what}: {' '.join(detail.split())}. "
            f"Fix: grant the privilege it names to {user!r} (see the README's Postgres "
            "prerequisites)."
        )


class SlotError(TapPgCdcError):
    """The replication slot or publication is missing, foreign, busy, invalidated or behind."""

    @classmethod
    def undecodable(cls, slot: str, publication: str, detail: str) -> SlotError:
        """A slot that cannot decode what happened while the publication was gone."""
        literal = "'" + slot.replace("'", "''") + "'"
        return cls(
            f"Slot {slot} cannot decode changes made while publication {publication!r} did "
            f"not exist (the server said: {' '.join(detail.split()).rstrip('.')}): it was "
            "dropped and created again while those changes waited in the slot, and the input "
            "state was written before the tap recorded the publication's identity, so the run "
            "could not tell before reading. Every run would stop here. Fix: drop the slot "
            f"(SELECT pg_drop_replication_slot({literal});) and run with on_slot_lost = "
            "resnapshot: every stream is snapshotted again, after an ACTIVATE_VERSION."
        )


def publication_missing(detail: str) -> bool:
    """Whether the walsender stopped because pgoutput could not find the publication."""
    return "publication" in detail and "does not exist" in detail


class ReplicationError(TapPgCdcError):
    """The replication stream failed (server error, terminated connection)."""


class StateError(TapPgCdcError):
    """The input state is malformed, foreign, or cannot be resumed without losing changes."""


class ConnectionLost(TapPgCdcError):
    """A connection to the server broke during a run (restart, terminated backend, network).

    Nothing is lost when this happens: STATE is only emitted after the records it covers, and
    the slot keeps every change after the position the input state confirmed, so the next run
    resumes from the last state the target stored.
    """

    RESUMES = (
        "Nothing is lost: the next run resumes from the last STATE the target stored (changes "
        "after it are still in the replication slot)"
    )

    @classmethod
    def during(cls, what: str, detail: str, config: t.Mapping[str, t.Any]) -> ConnectionLost:
        """The error for a connection lost while doing `what` (e.g. "reading the slot")."""
        reason = " ".join(detail.split()).rstrip(".") or "the connection was closed"
        password = config.get("password")
        if password:
            reason = reason.replace(str(password), "***")
        low = reason.lower()
        if "administrator command" in low:
            why = "the server ended the session (pg_terminate_backend, or a shutdown or restart)"
        elif "shutdown" in low or "starting up" in low or "not yet accepting" in low:
            why = "the server was shut down or restarted"
        else:
            why = "the connection broke (server restart or crash, network, or a timeout)"
        return cls(
            f"Lost the connection to PostgreSQL while {what}: {why}. Server said: {reason}. "
            f"{cls.RESUMES}. Fix: run the tap again once the server is reachable; if this "
            "keeps happening, check the server log and the network (tunnels, proxies, "
            "wal_sender_timeout)."
        )


def raise_first(problems: Sequence[TapPgCdcError]) -> None:
    """Raise the first of `problems`, if any: how a run acts on a judgement (`--test` lists all)."""
    if problems:
        raise problems[0]
