"""The pure judgement over publication facts (no server).

The run and `--test` judge the same facts with these functions; the facts are built by hand
here, and whole problem lists are compared: the exception type of each and its message.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tap_pgcdc.errors import (
    ConfigError,
    PrivilegeError,
    SlotError,
    TapPgCdcError,
)
from tap_pgcdc.replication.filters import Entry
from tap_pgcdc.replication.publication import (
    CatalogTable,
    Publication,
    PublicationFacts,
    PublicationInfo,
    PublicationRights,
    Requested,
    judge_publication,
    needs_change,
)


def problems(found: list[TapPgCdcError]) -> list[tuple[type[TapPgCdcError], str]]:
    return [(type(problem), str(problem)) for problem in found]


# --- the publication ----------------------------------------------------------------------------


def table(oid: int, name: str, **changes: Any) -> CatalogTable:
    values: dict[str, Any] = {
        "oid": oid,
        "display": f"public.{name}",
        "sql": f'"public"."{name}"',
        "kind": "r",
        "persistence": "p",
        "ancestors": frozenset(),
        "leaves": (),
    }
    values.update(changes)
    return CatalogTable(**values)


PLAIN = table(101, "plain")
OTHER = table(102, "other")
PARTS = table(103, "parts", kind="p")


def publication(
    *members: CatalogTable, owned: bool = True, filtered: frozenset[int] = frozenset(), **info: Any
) -> Publication:
    values: dict[str, Any] = {
        "name": "pub",
        "owner": "tap",
        "all_tables": False,
        "publish_via_partition_root": True,
        "pubinsert": True,
        "pubupdate": True,
        "pubdelete": True,
        "pubtruncate": True,
        "table_oids": frozenset(member.oid for member in members),
    }
    values.update(info)
    return Publication(
        info=PublicationInfo(**values),
        oid=9000,
        tables={member.oid: member.sql for member in members},
        filtered=filtered,
        schemas=(),
        owned=owned,
        # What the catalog holds for a filtered member: here a row filter.
        entries={oid: Entry(where="(id > 0)") for oid in filtered},
    )


def pub_facts(
    selected: list[CatalogTable], pub: Publication | None, **changes: Any
) -> PublicationFacts:
    values: dict[str, Any] = {
        "name": "pub",
        "server_version": 150004,
        "user": "tap",
        "dbname": "app",
        "requested": tuple(Requested(t.oid, "public", t.display.split(".")[1]) for t in selected),
        "catalog": {t.oid: t for t in selected},
        "publication": pub,
        "rights": None,
    }
    values.update(changes)
    return PublicationFacts(**values)


WITH = "WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true);"


def test_a_publication_that_lists_the_selection_has_no_problem() -> None:
    for create in (True, False):
        assert judge_publication(pub_facts([PLAIN], publication(PLAIN)), create=create) == []
        everything = publication(all_tables=True, table_oids=frozenset())
        assert judge_publication(pub_facts([PLAIN], everything), create=create) == []
    # Managed: listing other tables is for apply_publication to fix, not a problem.
    assert judge_publication(pub_facts([PLAIN], publication(OTHER)), create=True) == []
    # A missing publication is created (its rights are the server's to refuse in a run).
    assert judge_publication(pub_facts([PLAIN], None), create=True) == []


def test_the_first_unpublishable_table_is_the_only_problem() -> None:
    gone = pub_facts([PLAIN, OTHER], None, catalog={PLAIN.oid: PLAIN})
    assert problems(judge_publication(gone, create=True)) == [
        (
            ConfigError,
            "Table public.other (oid 102) no longer exists: it was dropped or recreated since "
            "discovery. Fix: run discovery again and update the catalog's selection.",
        )
    ]
    view = table(104, "v", kind="v")
    unlogged = table(105, "scratch", persistence="u")
    selection = pub_facts([view, unlogged], publication(PLAIN, pubdelete=False))
    assert problems(judge_publication(selection, create=False)) == [
        (
            ConfigError,
            "public.v is a view, which has no change stream. Fix: replicate it with FULL_TABLE "
            "instead of LOG_BASED.",
        )
    ]
    assert problems(judge_publication(pub_facts([unlogged], None), create=True)) == [
        (
            ConfigError,
            "public.scratch is an UNLOGGED table: its changes are not written to the WAL, so "
            "logical replication cannot see them. Fix: replicate it with FULL_TABLE, or make it "
            'logged with ALTER TABLE "public"."scratch" SET LOGGED;',
        )
    ]
    pg12 = pub_facts(
        [dataclasses.replace(PARTS, leaves=("public.parts_a", "public.parts_b"))],
        None,
        server_version=120020,
    )
    assert problems(judge_publication(pg12, create=True)) == [
        (
            ConfigError,
            "public.parts is a partitioned table, and PostgreSQL 12 cannot publish partitioned "
            "tables (PostgreSQL 13 can). Fix: deselect it and select its partitions instead "
            "(public.parts_a, public.parts_b), or upgrade to PostgreSQL 13+.",
        )
    ]


def test_a_missing_publication_without_create_gives_the_sql() -> None:
    facts = pub_facts([PLAIN, PLAIN, OTHER], None)
    assert problems(judge_publication(facts, create=False)) == [
        (
            SlotError,
            "Publication 'pub' does not exist and create_publication is false. Fix: create it "
            "in database 'app' (as the owner of the tables or a superuser) with: CREATE "
            'PUBLICATION "pub" FOR TABLE ONLY "public"."plain", ONLY "public"."other" '
            f"{WITH} or set create_publication = true to let the tap create it.",
        )
    ]


def test_publish_options_come_first_then_what_is_not_published() -> None:
    pub = publication(PLAIN, pubdelete=False, pubtruncate=False, publish_via_partition_root=False)
    facts = pub_facts([PLAIN, OTHER], pub)
    fix = "ALTER PUBLICATION \"pub\" SET (publish = 'insert, update, delete, truncate');"
    assert problems(judge_publication(facts, create=False)) == [
        (
            SlotError,
            "Publication 'pub' does not publish delete, truncate (publish = 'insert, update'), "
            f"so the tap would miss those changes. Fix: {fix}",
        ),
        (
            SlotError,
            "Publication 'pub' does not publish public.other, selected for LOG_BASED "
            "replication, and create_publication is false. Fix: add them with ALTER PUBLICATION "
            '"pub" ADD TABLE ONLY "public"."other"; or set create_publication = true to let the '
            "tap manage the publication.",
        ),
    ]
    parents = pub_facts([PARTS], publication(PARTS, publish_via_partition_root=False))
    assert problems(judge_publication(parents, create=True)) == [
        (
            SlotError,
            "Publication 'pub' has publish_via_partition_root = false, so changes to the "
            "partitions of public.parts would arrive under each partition's name instead of the "
            'selected partitioned table\'s. Fix: ALTER PUBLICATION "pub" SET '
            "(publish_via_partition_root = true);",
        )
    ]


def test_a_parent_in_the_publication_covers_its_partition_but_a_filter_does_not() -> None:
    partition = table(106, "parts_a", ancestors=frozenset({PARTS.oid}))
    assert judge_publication(pub_facts([partition], publication(PARTS)), create=False) == []
    filtered = publication(PLAIN, OTHER, filtered=frozenset({PLAIN.oid}))
    assert judge_publication(pub_facts([OTHER], filtered), create=False) == []
    pub = '"pub"'
    assert problems(judge_publication(pub_facts([PLAIN], filtered), create=False)) == [
        (
            SlotError,
            'Publication \'pub\' publishes "public"."plain" with a row filter (WHERE) or a '
            "column list, so the tap would miss rows or columns, and create_publication is "
            f"false. Fix: list them in full, in one transaction: BEGIN; ALTER PUBLICATION {pub} "
            f'DROP TABLE ONLY "public"."plain"; ALTER PUBLICATION {pub} ADD TABLE ONLY '
            '"public"."plain"; COMMIT; or set create_publication = true to let the tap manage '
            "the publication (a row filter without a column list is accepted when row_filters "
            "sets the same expression for the stream).",
        )
    ]
    # The same filter as row_filters sets (`PublicationFacts.entries`): accepted as it is.
    same = dataclasses.replace(
        pub_facts([PLAIN], filtered), entries={PLAIN.oid: Entry(where="(id > 0)")}
    )
    assert judge_publication(same, create=False) == []
    # With create_publication, a member's entry that is not the wanted one is altered.
    assert needs_change(filtered, [PLAIN, OTHER])
    assert not needs_change(filtered, [PLAIN, OTHER], {PLAIN.oid: Entry(where="(id > 0)")})


def test_a_publication_of_another_role_cannot_be_altered() -> None:
    foreign = publication(PLAIN, owned=False, owner="admin")
    assert judge_publication(pub_facts([PLAIN], foreign), create=True) == []
    assert problems(judge_publication(pub_facts([PLAIN, OTHER], foreign), create=True)) == [
        (
            PrivilegeError,
            "Publication 'pub' is owned by role 'admin', so 'tap' cannot change it to list "
            "exactly the selected tables. Fix: have 'admin' or a superuser run ALTER "
            'PUBLICATION "pub" OWNER TO "tap"; or set publication_name to a publication this '
            "user owns; or set create_publication = false and use a publication that already "
            "lists the tables (here, 'admin' would run: ALTER PUBLICATION \"pub\" SET TABLE ONLY "
            '"public"."plain", ONLY "public"."other";).',
        )
    ]


def test_rights_are_judged_only_when_they_were_read() -> None:
    rights = PublicationRights(can_create=False, not_owned=((OTHER.oid, "public.other"),))
    create_sql = (
        f'CREATE PUBLICATION "pub" FOR TABLE ONLY "public"."plain", ONLY "public"."other" {WITH}'
    )
    assert judge_publication(pub_facts([PLAIN, OTHER], None), create=True) == []
    missing = pub_facts([PLAIN, OTHER], None, rights=rights)
    assert problems(judge_publication(missing, create=True)) == [
        (
            PrivilegeError,
            "Role 'tap' may not create publication 'pub': it lacks the CREATE privilege on "
            'database \'app\'. Fix: GRANT CREATE ON DATABASE "app" TO "tap"; or have the '
            f"tables' owner or a superuser run: {create_sql} and set create_publication = false.",
        ),
        (
            PrivilegeError,
            "Role 'tap' may not create publication 'pub': adding a table to a publication needs "
            "ownership of the table, and public.other belong to other roles. Fix: run the tap as "
            "the tables' owner (or a role that is a member of it), or have the owner or a "
            f"superuser run: {create_sql} and set create_publication = false.",
        ),
    ]
    # Extending a publication needs no CREATE privilege, only the tables it adds.
    extending = pub_facts([PLAIN, OTHER], publication(PLAIN), rights=rights)
    alter_sql = 'ALTER PUBLICATION "pub" SET TABLE ONLY "public"."plain", ONLY "public"."other";'
    assert problems(judge_publication(extending, create=True)) == [
        (
            PrivilegeError,
            "Role 'tap' may not add tables to publication 'pub': adding a table to a "
            "publication needs ownership of the table, and public.other belong to other roles. "
            "Fix: run the tap as the tables' owner (or a role that is a member of it), or have "
            f"the owner or a superuser run: {alter_sql} and set create_publication = false.",
        )
    ]
    listed = pub_facts([OTHER], publication(OTHER), rights=rights)
    assert judge_publication(listed, create=True) == []
