"""The pure decisions of server-side filters: column lists, row filter safety, re-snapshots."""

from __future__ import annotations

import pytest

from tap_pgcdc.replication.filters import (
    Entry,
    Leaf,
    TableColumns,
    changes_since,
    column_list,
    kept_reasons,
    row_filter_problem,
    same_filter,
    statement_problem,
    version_problem,
)
from tap_pgcdc.replication.publication import (
    CatalogTable,
    Publication,
    PublicationInfo,
    alter_publication_sql,
    create_publication_sql,
    needs_change,
)


def leaf(*identity: str, full: bool = False, name: str = "public.t") -> Leaf:
    return Leaf(name=name, sql=f'"{name}"', full=full, identity=frozenset(identity))


def table(*leaves: Leaf, unlistable: frozenset[str] = frozenset()) -> TableColumns:
    return TableColumns(
        oid=1,
        display="public.t",
        columns=("id", "a", "big", "code", "g"),
        unlistable=unlistable,
        leaves=leaves or (leaf("id"),),
    )


def test_column_list_is_the_selection_plus_key_and_replica_identity() -> None:
    t = table(leaf("code"))
    assert column_list(t, {"a"}, ("id",), 150000) == ("id", "a", "code")
    assert kept_reasons(t, {"a"}, ("id",)) == ["id (the stream's key)", "code (replica identity)"]


def test_no_column_list_where_none_can_be_used_or_none_is_needed() -> None:
    assert column_list(table(), {"a"}, ("id",), 140000) is None  # before 15
    assert column_list(table(leaf(full=True)), {"a"}, ("id",), 150000) is None  # FULL
    # One partition under FULL is enough: the root's list applies to every partition.
    partitions = table(leaf("id", name="p1"), leaf(full=True, name="p2"))
    assert column_list(partitions, {"a"}, ("id",), 150000) is None
    every = {"id", "a", "big", "code", "g"}
    assert column_list(table(), every, ("id",), 150000) is None
    # Generated columns cannot be listed before 18: every listable column selected -> no list.
    generated = table(unlistable=frozenset({"g"}))
    assert column_list(generated, every - {"g"}, ("id",), 150000) is None
    assert column_list(generated, {"a"}, ("id",), 150000) == ("id", "a")


def test_partition_identities_are_all_kept() -> None:
    t = table(leaf("id", name="p1"), leaf("id", "code", name="p2"))
    assert column_list(t, {"a"}, ("id",), 150000) == ("id", "a", "code")


def test_row_filter_must_use_replica_identity_columns_only() -> None:
    assert row_filter_problem("s", table(), "id > 1", {"id"}) is None
    problem = row_filter_problem("s", table(), "a = 'x'", {"a"})
    assert problem is not None
    assert "a, which is not part of the replica identity of public.t" in problem
    assert "Fix: filter on replica identity (key) columns only (id)" in problem
    assert "REPLICA IDENTITY FULL" in problem
    assert row_filter_problem("s", table(leaf(full=True)), "a = 'x'", {"a"}) is None
    # Every partition is checked: one whose identity lacks the column is enough to refuse.
    partitions = table(leaf("id", "a", name="p1"), leaf("id", name="p2"))
    problem = row_filter_problem("s", partitions, "a = 'x'", {"a"})
    assert problem is not None and "of p2" in problem


def test_row_filters_need_postgresql_15() -> None:
    problem = version_problem(["public-t"], 140000)
    assert problem is not None and "PostgreSQL 14 publications have no row filters" in problem
    assert version_problem(["public-t"], 150000) is None
    assert version_problem([], 120000) is None


@pytest.mark.parametrize(
    ("expression", "refused"),
    [("a = ';'", False), ('"we;ird" > 1', False), ("a > 1; DROP TABLE t", True), ("a=1;", True)],
)
def test_a_filter_is_one_expression(expression: str, refused: bool) -> None:
    assert (statement_problem("s", expression) is not None) is refused


def test_same_filter_ignores_outer_parentheses_and_spacing() -> None:
    assert same_filter("id > 2", "(id > 2)")
    assert same_filter("((a > 1) AND  (b = 'x'))", "((a > 1) AND (b = 'x'))")
    assert not same_filter("id > 3", "(id > 2)")
    assert not same_filter("(a) AND (b)", "a AND b)")


def test_changes_since_the_bookmark() -> None:
    columns = ("id", "a", "big")
    plain = Entry()
    narrow = Entry(columns=("id", "a"))
    filtered = Entry(where="(id > 1)")
    assert changes_since(None, plain, columns) is None  # a bookmark from before filters
    assert changes_since(None, narrow, columns) is None  # narrower: the tap drops columns
    assert changes_since(plain.record(), narrow, columns) is None
    assert changes_since(narrow.record(), narrow, columns) is None
    assert changes_since(narrow.record(), plain, columns) == "column list now publishes big"
    widened = Entry(columns=("id", "a", "big"))
    assert changes_since(narrow.record(), widened, columns) == "column list now publishes big"
    assert changes_since(None, filtered, columns) == "row filter ((id > 1)) added"
    assert changes_since(filtered.record(), plain, columns) == "row filter ((id > 1)) removed"
    other = Entry(where="(id > 2)")
    assert changes_since(filtered.record(), other, columns) == (
        "row filter changed from ((id > 1)) to ((id > 2))"
    )
    assert changes_since(filtered.record(), filtered, columns) is None


def _catalog(oid: int, name: str) -> CatalogTable:
    return CatalogTable(oid, f"public.{name}", f'"public"."{name}"', "r", "p", frozenset(), ())


def _publication(entries: dict[int, Entry]) -> Publication:
    info = PublicationInfo("pub", "me", False, True, True, True, True, True, frozenset({1, 2}))
    return Publication(
        info=info,
        oid=9,
        tables={1: '"public"."a"', 2: '"public"."b"'},
        filtered=frozenset(entries),
        schemas=(),
        owned=True,
        entries=entries,
    )


def test_publication_sql_carries_each_entry() -> None:
    tables = [_catalog(1, "a"), _catalog(2, "b")]
    entries = {1: Entry(columns=("id", "x y"), where="(id > 1)")}
    sql = create_publication_sql("pub", tables, 150000, entries)
    assert (
        'FOR TABLE ONLY "public"."a" ("id", "x y") WHERE ((id > 1)), ONLY "public"."b" WITH' in sql
    )
    (alter,) = alter_publication_sql(_publication({}), tables, entries)
    assert alter.startswith(
        'ALTER PUBLICATION "pub" SET TABLE ONLY "public"."a" ("id", "x y") WHERE'
    )


def test_needs_change_compares_each_entry() -> None:
    tables = [_catalog(1, "a"), _catalog(2, "b")]
    entry = Entry(columns=("id",))
    assert not needs_change(_publication({}), tables)
    assert needs_change(_publication({}), tables, {1: entry})
    assert not needs_change(_publication({1: entry}), tables, {1: entry})
    assert needs_change(_publication({1: entry}), tables, {1: Entry(columns=("id", "a"))})
    assert needs_change(_publication({1: entry}), tables)
