"""The tap's settings: their JSON Schema (what `--about` lists) and one frozen, parsed view.

Every default lives here. The SDK validates the settings against `CONFIG_SCHEMA` before the tap
uses them; `Settings.from_config` then reads them once, so no other module repeats a key or a
default. Connection settings (host, user, ssl*, ssh_tunnel, ...) are read by `tap_pgcdc.pg`
from the same mapping.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from singer_sdk import typing as th

if t.TYPE_CHECKING:
    from collections.abc import Mapping

# Replication slot names: Postgres allows lower-case letters, digits and underscores, max 63.
SLOT_NAME_PATTERN = r"^[a-z0-9_]{1,63}$"
DEFAULT_SLOT_NAME = "tap_pgcdc"
DEFAULT_PUBLICATION_NAME = "tap_pgcdc"
DEFAULT_CONNECT_TIMEOUT = 15
DEFAULT_CHUNK_SIZE = 10_000
DEFAULT_SNAPSHOT_WORKERS = 1
DEFAULT_STATE_INTERVAL_SECONDS = 5.0
DEFAULT_SLOT_WAIT_SECONDS = 60.0
ON_SLOT_LOST = ("fail", "resnapshot")
ORIGINS = ("any", "none")

CONFIG_SCHEMA: dict[str, t.Any] = th.PropertiesList(
    th.Property(
        "host",
        th.StringType,
        default="localhost",
        description="Server host name or IP address.",
    ),
    th.Property("port", th.IntegerType, default=5432, description="Server port."),
    th.Property(
        "user",
        th.StringType,
        required=True,
        description="Role to connect as. Log-based capture needs the REPLICATION attribute (or the platform's replication role).",
    ),
    th.Property(
        "password",
        th.StringType,
        secret=True,
        description="Password of `user` (not needed with trust or certificate auth).",
    ),
    th.Property("database", th.StringType, required=True, description="Database to replicate."),
    th.Property(
        "connect_timeout",
        th.IntegerType,
        default=DEFAULT_CONNECT_TIMEOUT,
        minimum=1,
        description="Seconds to wait for a connection (the database, and the SSH bastion when tunnelling) before giving up.",
    ),
    th.Property(
        "sslmode",
        th.StringType,
        allowed_values=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
        description="libpq SSL mode for both the SQL and the replication connection.",
    ),
    th.Property(
        "sslrootcert",
        th.StringType,
        description="Path to the CA certificate(s) used to verify the server (verify-ca, verify-full).",
    ),
    th.Property("sslcert", th.StringType, description="Path to the client certificate."),
    th.Property(
        "sslkey",
        th.StringType,
        secret=True,
        description="Path to the client certificate's private key.",
    ),
    th.Property(
        "ssh_tunnel",
        th.ObjectType(
            th.Property(
                "enable",
                th.BooleanType,
                default=False,
                description="Reach the database through an SSH bastion host (both the SQL and the replication connection).",
            ),
            th.Property("host", th.StringType, description="The bastion's host name or address."),
            th.Property("port", th.IntegerType, default=22, description="The bastion's SSH port."),
            th.Property("username", th.StringType, description="User to log in to the bastion as."),
            th.Property(
                "private_key",
                th.StringType,
                secret=True,
                description="The private key's text (OpenSSH or PEM; Ed25519, ECDSA or RSA), not a path.",
            ),
            th.Property(
                "private_key_password",
                th.StringType,
                secret=True,
                description="Passphrase of `private_key`, if it has one.",
            ),
            th.Property(
                "host_public_key",
                th.StringType,
                description="The bastion's public host key (`ssh-ed25519 AAAA...`, as in known_hosts). When set, any other key is refused; when not, the key's fingerprint is logged.",
            ),
        ),
        description="SSH tunnel settings (as Meltano's tap-postgres). `host` and `port` are then the database's address as the bastion sees it.",
    ),
    th.Property(
        "filter_schemas",
        th.ArrayType(th.StringType),
        description="Only discover tables in these schemas (all schemas when empty).",
    ),
    th.Property(
        "filter_tables",
        th.ArrayType(th.StringType),
        description="Only discover tables whose `schema.table` matches one of these glob patterns, e.g. `public.order*`.",
    ),
    th.Property(
        "slot_name",
        th.StringType,
        default=DEFAULT_SLOT_NAME,
        pattern=SLOT_NAME_PATTERN,
        description="Logical replication slot (pgoutput) this tap reads. One per tap instance: lower-case letters, digits and underscores, at most 63.",
    ),
    th.Property(
        "publication_name",
        th.StringType,
        default=DEFAULT_PUBLICATION_NAME,
        pattern=r"^.{1,63}$",
        description="Publication listing the selected tables. One per tap instance.",
    ),
    th.Property(
        "create_slot",
        th.BooleanType,
        default=True,
        description="Create the replication slot when it is missing. When false, a missing slot is an error that gives the SQL to run.",
    ),
    th.Property(
        "create_publication",
        th.BooleanType,
        default=True,
        description="Create the publication when missing and keep its table list equal to the selected LOG_BASED streams. When false, the publication must already list them.",
    ),
    th.Property(
        "slot_failover",
        th.BooleanType,
        default=False,
        description="PostgreSQL 17+: create the slot as a failover slot, which standbys with sync_replication_slots = on keep in sync, so that it survives a promotion. An error on older servers, and for an existing slot made without failover.",
    ),
    th.Property(
        "on_slot_lost",
        th.StringType,
        default=ON_SLOT_LOST[0],
        allowed_values=list(ON_SLOT_LOST),
        description="What to do when changes were lost or never published: the slot was dropped or invalidated (wal_status = lost), the state is older than the slot's confirmed position, the publication was dropped or re-created, or a table was out of the publication for a while (its stream deselected or filtered out for a run). `fail` (default) stops with an error naming the recovery. `resnapshot` recreates the slot if needed and snapshots the affected streams again, after an ACTIVATE_VERSION so that targets which support it drop rows deleted in the meantime.",
    ),
    th.Property(
        "origin",
        th.StringType,
        default=ORIGINS[0],
        allowed_values=list(ORIGINS),
        description="PostgreSQL 16+: which changes the log delivers by their replication origin (pgoutput's `origin` option). `any` (default): every change. `none`: only changes made on this server, not those a subscription (logical replication from another server) applied, e.g. in a bidirectional or fan-in setup. An error on older servers. Snapshots read every row either way.",
    ),
    # --- w4-messages: logical decoding messages (tap_pgcdc/logical_messages.py) ---
    th.Property(
        "messages",
        th.ArrayType(th.StringType),
        description="PostgreSQL 14+: deliver the messages applications write with pg_logical_emit_message() (pgoutput's `messages` option) as the stream `pg_logical_messages`, keeping those whose prefix is listed: an exact prefix, or one ending in `*` to keep every prefix that starts with what precedes it (`*` alone keeps all). Empty or absent (default): off, and discovery does not offer the stream. An error on older servers. Deselecting the stream turns the option off too.",
    ),
    th.Property(
        "row_filters",
        th.ObjectType(additional_properties=th.StringType),
        description="PostgreSQL 15+: per LOG_BASED stream id (e.g. `public-orders`), a SQL boolean expression over its table's columns (e.g. `region = 'eu'`). The stream's snapshot reads only the rows it admits, and the publication gets it as its row filter (`WHERE`), so the server sends only their changes; an UPDATE that moves a row into or out of it arrives as an insert or a delete. It may use only replica-identity (key) columns unless the table has REPLICA IDENTITY FULL. Changing it snapshots the stream again. With create_publication = false the publication must already have exactly this filter. An error on older servers.",
    ),
    th.Property(
        "max_run_seconds",
        th.IntegerType,
        minimum=1,
        description="Stop reading the log after this many seconds (at a transaction boundary). By default a run reads until it has passed the WAL position the server had flushed when the run started.",
    ),
    th.Property(
        "snapshot_chunk_size",
        th.IntegerType,
        default=10000,
        minimum=1,
        description="Rows per snapshot chunk; a snapshot resumes after the last chunk emitted.",
    ),
    th.Property(
        "snapshot_workers",
        th.IntegerType,
        default=DEFAULT_SNAPSHOT_WORKERS,
        minimum=1,
        description="Connections reading a LOG_BASED stream's snapshot of a keyed table in parallel, all in the same exported snapshot; the records and STATEs are written in key order as with one (an interrupted snapshot resumes after the last chunk). Tables without key, views and FULL_TABLE reads use one. Each worker is one more connection to the server.",
    ),
    th.Property(
        "slot_wait_seconds",
        th.NumberType,
        default=DEFAULT_SLOT_WAIT_SECONDS,
        minimum=0,
        description="How long creating a replication slot (the tap's own, or a snapshot's temporary one) waits for prepared (two-phase) transactions to be committed or rolled back before stopping with an error that names them. Slot creation waits for every transaction open when it starts; a prepared one stays open until COMMIT PREPARED or ROLLBACK PREPARED.",
    ),
    th.Property(
        "state_interval_seconds",
        th.NumberType,
        default=5,
        minimum=0,
        description="While reading the log, emit STATE (at a transaction boundary) at most this often.",
    ),
    th.Property(
        "run_report_path",
        th.StringType,
        description="Append each run's report (one JSON line: counts per stream, LSN range, slot lag and retained WAL before and after, duration, why the run ended; see docs/monitoring.md) to this file instead of writing it to stderr.",
    ),
).to_dict()


@dataclass(frozen=True, slots=True)
class Settings:
    """The settings the order of work uses, parsed once from the validated config."""

    slot_name: str = DEFAULT_SLOT_NAME
    publication_name: str = DEFAULT_PUBLICATION_NAME
    create_slot: bool = True
    create_publication: bool = True
    slot_failover: bool = False
    resnapshot_on_slot_lost: bool = False  # on_slot_lost = resnapshot
    max_run_seconds: int | None = None
    snapshot_chunk_size: int = DEFAULT_CHUNK_SIZE
    snapshot_workers: int = DEFAULT_SNAPSHOT_WORKERS  # parallel readers of a keyed snapshot
    state_interval_seconds: float = DEFAULT_STATE_INTERVAL_SECONDS
    slot_wait_seconds: float = DEFAULT_SLOT_WAIT_SECONDS
    run_report_path: str | None = None  # None: the report goes to stderr
    origin: str = ORIGINS[0]  # pgoutput's origin option: any, or none (local changes only)
    messages: tuple[str, ...] = ()  # prefixes of logical decoding messages kept (): off
    user: str = ""
    # Stream id -> the SQL boolean expression of its row filter (PG15+); empty: none.
    row_filters: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, t.Any]) -> Settings:
        """Read the settings from the tap's config (already validated against CONFIG_SCHEMA)."""

        def given(key: str, default: t.Any) -> t.Any:
            value = config.get(key)
            return default if value is None else value

        return cls(
            slot_name=str(given("slot_name", DEFAULT_SLOT_NAME)),
            publication_name=str(given("publication_name", DEFAULT_PUBLICATION_NAME)),
            create_slot=bool(given("create_slot", True)),
            create_publication=bool(given("create_publication", True)),
            slot_failover=bool(given("slot_failover", False)),
            resnapshot_on_slot_lost=given("on_slot_lost", ON_SLOT_LOST[0]) == "resnapshot",
            max_run_seconds=config.get("max_run_seconds"),
            snapshot_chunk_size=int(config.get("snapshot_chunk_size") or DEFAULT_CHUNK_SIZE),
            snapshot_workers=int(given("snapshot_workers", DEFAULT_SNAPSHOT_WORKERS)),
            state_interval_seconds=float(
                given("state_interval_seconds", DEFAULT_STATE_INTERVAL_SECONDS)
            ),
            slot_wait_seconds=float(given("slot_wait_seconds", DEFAULT_SLOT_WAIT_SECONDS)),
            run_report_path=config.get("run_report_path") or None,
            origin=str(given("origin", ORIGINS[0])),
            messages=tuple(str(prefix) for prefix in given("messages", ())),
            user=str(given("user", "")),
            row_filters={str(k): str(v) for k, v in dict(given("row_filters", {})).items()},
        )
