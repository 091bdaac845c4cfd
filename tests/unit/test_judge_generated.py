"""Generated columns: which tables the log can capture, and the publication option (no server).

Before PostgreSQL 18 the log never carries generated columns, and the tap reads their values by
key; PostgreSQL 18 sends stored ones where the publication asks (publish_generated_columns =
stored), and refuses UPDATE and DELETE of a published table whose replica identity includes a
generated column the publication does not publish. The facts are built by hand here.
"""

from __future__ import annotations

import pytest

from tap_pgcdc.errors import PrivilegeError
from tap_pgcdc.replication.identity import judge_replica_identity
from tap_pgcdc.replication.publication import (
    Decoding,
    create_publication_sql,
    decoding,
    judge_publication,
    needs_generated_option,
    publishes_generated,
)
from tests.unit.test_judge_publication import PLAIN, pub_facts, publication
from tests.unit.test_judge_server_slot import identity as rel

PG15 = Decoding(server_version=150004, publication="pub", publishes_generated=False)
PG18_SENT = Decoding(server_version=180001, publication="pub", publishes_generated=True)
PG18_NOT_SENT = Decoding(server_version=180001, publication="my pub", publishes_generated=False)


# Keyed tables whose generated columns the tap reads by key: capturable everywhere.
KEYED = rel("keyed", "d", has_primary_key=True, stored_generated=("total",))
KEYED_FULL = rel("keyed_full", "f", has_primary_key=True, stored_generated=("total",))
BY_INDEX = rel("by_index", "i", has_identity_index=True, stored_generated=("total",))
# Keyless under FULL, and keyed by a generated column.
KEYLESS = rel("keyless", "f", stored_generated=("total",))
GEN_KEY = rel("gen_key", "d", has_primary_key=True, stored_generated=("k",), generated_key=("k",))
GEN_INDEX = rel(
    "gen_index",
    "i",
    has_identity_index=True,
    stored_generated=("k", "j"),
    generated_key=("k", "j"),
)
VIRTUAL_FULL = rel("virtual_full", "f", virtual_generated=("v",))
VIRTUAL_KEYED = rel("virtual_keyed", "d", has_primary_key=True, virtual_generated=("v",))

ALL = [KEYED, KEYED_FULL, BY_INDEX, KEYLESS, GEN_KEY, GEN_INDEX, VIRTUAL_FULL, VIRTUAL_KEYED]


def verdicts(decoding: Decoding) -> list[str]:
    return [str(verdict) for verdict in judge_replica_identity(ALL, decoding)]


def test_before_18_a_keyless_table_or_a_generated_key_cannot_be_captured() -> None:
    later = "or use PostgreSQL 18, whose publish_generated_columns = stored sends them."
    assert verdicts(PG15) == [
        "public.keyless cannot be captured from the log: it has the generated column total and "
        "no primary key to read their values by, and PostgreSQL 15 never writes generated "
        f"columns to the log, so its records would lack those values. Fix: add a primary key, "
        f"{later}",
        "public.gen_key cannot be captured from the log: its key is the generated column k, "
        "and PostgreSQL 15 never writes generated columns to the log, so its changes, deletes "
        "included, would reach the target without their key. Fix: key it by columns that are "
        "not generated (a primary key, or REPLICA IDENTITY USING INDEX on a unique index of "
        f"them), {later}",
        "public.gen_index cannot be captured from the log: its key is the generated columns k, "
        "j, and PostgreSQL 15 never writes generated columns to the log, so its changes, "
        "deletes included, would reach the target without their key. Fix: key it by columns "
        "that are not generated (a primary key, or REPLICA IDENTITY USING INDEX on a unique "
        f"index of them), {later}",
    ]


def test_on_18_with_the_option_only_full_with_a_virtual_column_cannot() -> None:
    assert verdicts(PG18_SENT) == [
        "public.virtual_full cannot be captured from the log: it has REPLICA IDENTITY FULL and "
        "the virtual generated column v, which no publication publishes, so its UPDATEs and "
        "DELETEs cannot be identified (Postgres refuses them while the table is published). "
        'Fix: add a primary key, then ALTER TABLE "public"."virtual_full" REPLICA IDENTITY '
        "DEFAULT."
    ]
    keyed_virtual_full = rel("vk", "f", has_primary_key=True, virtual_generated=("v",))
    (verdict,) = judge_replica_identity([keyed_virtual_full], PG18_SENT)
    assert verdict.fix == 'ALTER TABLE "public"."vk" REPLICA IDENTITY DEFAULT'


def test_on_18_without_the_option_a_generated_column_in_the_identity_cannot() -> None:
    unpublished = (
        "which publication 'my pub' does not publish, so its UPDATEs and DELETEs cannot be "
        "identified (Postgres refuses them while the table is published). Fix: ALTER "
        'PUBLICATION "my pub" SET (publish_generated_columns = stored), or set '
        "create_publication = true."
    )
    found = verdicts(PG18_NOT_SENT)
    assert found == [
        "public.keyed_full cannot be captured from the log: its replica identity includes the "
        f"generated column total, {unpublished}",
        "public.keyless cannot be captured from the log: its replica identity includes the "
        f"generated column total, {unpublished}",
        "public.gen_key cannot be captured from the log: its replica identity includes the "
        f"generated column k, {unpublished}",
        "public.gen_index cannot be captured from the log: its replica identity includes the "
        f"generated columns k, j, {unpublished}",
        found[-1],
    ]
    assert found[-1].startswith("public.virtual_full cannot be captured from the log: it has ")


def test_a_partition_is_judged_for_its_parent() -> None:
    leaf = rel("logs_a", "f", top_name="logs", stored_generated=("total",))
    (verdict,) = judge_replica_identity([leaf], PG15)
    assert (verdict.top_name, verdict.name) == ("logs", "logs_a")
    assert verdict.display == "public.logs_a (a partition of public.logs)"


# --- the publication option ---------------------------------------------------------------------


WITH_18 = (
    "WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true, "
    "publish_generated_columns = stored);"
)


def test_the_tap_creates_its_publication_with_the_option_on_18() -> None:
    assert create_publication_sql("pub", [PLAIN], 180000) == (
        f'CREATE PUBLICATION "pub" FOR TABLE ONLY "public"."plain" {WITH_18}'
    )
    assert "publish_generated_columns" not in create_publication_sql("pub", [PLAIN], 170005)


@pytest.mark.parametrize(
    ("version", "pubgencols", "create", "sent"),
    [
        (170005, None, True, False),  # before 18: never
        (180000, "n", True, True),  # managed: the tap sets it
        (180000, None, True, True),  # managed and missing: the tap creates it with it
        (180000, "s", False, True),  # the user's, with it
        (180000, "n", False, False),  # the user's, without it
    ],
)
def test_what_the_log_carries(version: int, pubgencols: str | None, create: bool, sent: bool):
    pub = publication(PLAIN, publish_generated=pubgencols) if pubgencols or not create else None
    facts = pub_facts([PLAIN], pub, server_version=version)
    assert publishes_generated(facts, create=create) is sent
    assert decoding(facts, create=create) == Decoding(version, "pub", sent)


def test_a_managed_publication_without_the_option_is_altered_on_18() -> None:
    assert needs_generated_option(publication(PLAIN, publish_generated="n").info, 180000)
    assert not needs_generated_option(publication(PLAIN, publish_generated="s").info, 180000)
    assert not needs_generated_option(publication(PLAIN).info, 170005)
    lacking = pub_facts([PLAIN], publication(PLAIN, publish_generated="n"), server_version=180000)
    # Its owner may alter it: nothing to report; without create_publication it is left as is.
    assert judge_publication(lacking, create=True) == []
    assert judge_publication(lacking, create=False) == []
    foreign = pub_facts(
        [PLAIN],
        publication(PLAIN, publish_generated="n", owned=False),
        server_version=180000,
    )
    (problem,) = judge_publication(foreign, create=True)
    assert isinstance(problem, PrivilegeError)
    assert str(problem).startswith(
        "Publication 'pub' is owned by role 'tap', so 'tap' cannot change it to publish "
        "generated columns. Fix: "
    )
    assert 'ALTER PUBLICATION "pub" SET (publish_generated_columns = stored);' in str(problem)
