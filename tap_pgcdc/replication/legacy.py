"""Transitional (wave 1): the old check-and-act entry points, as compositions of the new API.

`tap.py` and `preflight.py` still call these through `tap_pgcdc.replication.slot`; delete this
module with the transitional block there once the integrator has switched them to fetch -> judge
-> act.
"""

from __future__ import annotations

import typing as t

import psycopg2.extensions

from tap_pgcdc.errors import raise_first
from tap_pgcdc.replication.identity import fetch_replica_identities, judge_replica_identity
from tap_pgcdc.replication.publication import judge_publication
from tap_pgcdc.replication.publication_ops import apply_publication, fetch_publication
from tap_pgcdc.replication.server import judge_server

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from tap_pgcdc.pg.catalog import TableInfo
    from tap_pgcdc.replication.publication import PublicationInfo
    from tap_pgcdc.replication.server import ServerInfo

Connection: t.TypeAlias = psycopg2.extensions.connection


def check_logical_replication(
    info: ServerInfo, *, need_slots: int = 1, need_senders: int = 1
) -> None:
    """`raise_first(judge_server(info, ...))`."""
    raise_first(judge_server(info, need_slots=need_slots, need_senders=need_senders))


def ensure_publication(
    conn: Connection, name: str, tables: Sequence[TableInfo], *, create: bool
) -> PublicationInfo:
    """fetch_publication -> judge_publication -> apply_publication."""
    facts = fetch_publication(conn, name, tables)
    raise_first(judge_publication(facts, create=create))
    return apply_publication(conn, facts, create=create)


def publication_problems(
    conn: Connection, name: str, tables: Sequence[TableInfo], *, create: bool
) -> list[str]:
    """`judge_publication(fetch_publication(..., rights=True), ...)` as strings."""
    facts = fetch_publication(conn, name, tables, rights=True)
    return [str(problem) for problem in judge_publication(facts, create=create)]


def replica_identity_problems(conn: Connection, tables: Sequence[TableInfo]) -> list[str]:
    """`judge_replica_identity(fetch_replica_identities(conn, tables))`."""
    return judge_replica_identity(fetch_replica_identities(conn, tables))
