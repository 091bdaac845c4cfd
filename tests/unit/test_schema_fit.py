"""A stale catalog against the live table, and a Relation message against the bound table.

`catalog_fit.fit_catalog` decides the SCHEMA and key a run sends from a catalog discovered before
ALTER TABLE; `output.shapes` decides the table (types, attributes, key) the changes after a
Relation message conform to. Both are pure; the messages here are decoded from pgoutput bytes.
"""

from __future__ import annotations

import typing as t

import jsonschema

from tap_pgcdc.catalog_fit import catalog_sql_types, fit_catalog, followed_key
from tap_pgcdc.connector import catalog_entry, table_schema
from tap_pgcdc.output.shapes import adopt, relation_key, same_shape, unknown_types
from tap_pgcdc.pg.catalog import ColumnInfo, TableInfo
from tap_pgcdc.replication.decoder import decode
from tap_pgcdc.replication.messages import Column, Relation
from tap_pgcdc.typemap import BUILTIN_TYPES, converter
from tests.unit import pgoutput_build as build

T = {t.name: t for t in BUILTIN_TYPES.values()}
OID = 16400


def col(
    name: str, type_name: str, sql_type: str, *, attnum: int, not_null: bool = False
) -> ColumnInfo:
    return ColumnInfo(
        name=name,
        attnum=attnum,
        type=T[type_name],
        typmod=-1,
        not_null=not_null,
        generated=False,
        sql_type=sql_type,
    )


ID = col("id", "int4", "integer", attnum=1, not_null=True)
A_INT = col("a", "int4", "integer", attnum=2)
A_TEXT = col("a", "text", "text", attnum=2)


def table(*columns: ColumnInfo, key: tuple[str, ...] = ("id",), identity: str = "d") -> TableInfo:
    return TableInfo(
        oid=OID,
        schema="public",
        name="t",
        kind="r",
        columns=columns,
        key=key,
        row_estimate=0,
        replica_identity=identity,
        primary_key=key,
    )


def entry(tbl: TableInfo) -> dict[str, t.Any]:
    return catalog_entry(tbl, use_singer_decimal=False)


def fit(catalog: dict[str, t.Any], live: TableInfo) -> t.Any:
    return fit_catalog(
        "public-t",
        catalog["schema"]["properties"],
        catalog_sql_types(catalog),
        catalog["key_properties"],
        live,
        use_singer_decimal=False,
    )


# --- a stale catalog ---------------------------------------------------------------------------


def test_discovery_records_each_columns_type() -> None:
    assert catalog_sql_types(entry(table(ID, A_INT))) == {"id": "integer", "a": "integer"}


def test_a_catalog_that_fits_is_kept_with_its_edits() -> None:
    catalog = entry(table(ID, A_INT))
    catalog["schema"]["properties"]["a"]["description"] = "edited"
    catalog["schema"]["properties"]["a"]["maximum"] = 10  # a user's constraint, same type
    verdict = fit(catalog, table(ID, A_INT))
    assert verdict.properties == catalog["schema"]["properties"]
    assert verdict.key == ("id",)
    assert verdict.sentences() == []


def test_a_retyped_column_gets_the_live_property_and_a_warning() -> None:
    catalog = entry(table(ID, A_INT))
    catalog["schema"]["properties"]["id"]["description"] = "kept"
    live = table(ID, A_TEXT)
    verdict = fit(catalog, live)
    assert verdict.properties["a"] == {"type": ["string", "null"]}
    assert verdict.properties["id"] == catalog["schema"]["properties"]["id"]
    # The records, converted with the live type, validate against the schema sent.
    record = {"id": 1, "a": converter(T["text"])("12"), "_sdc_lsn": 1, "_sdc_deleted_at": None}
    jsonschema.validate(record, {"type": "object", "properties": verdict.properties})
    (sentence,) = verdict.sentences()
    assert "a (integer, now text)" in sentence
    assert sentence.endswith(
        "Fix: run --discover again (with Meltano: `meltano run --refresh-catalog ...` once), "
        "then re-apply the edits."
    )


def test_without_sql_datatype_the_schema_shape_decides() -> None:
    """A catalog discovered before `sql-datatype` was recorded: its property's shape is compared."""
    old = entry(table(ID, A_INT))
    for item in old["metadata"]:
        item["metadata"].pop("sql-datatype", None)
    assert fit(old, table(ID, A_INT)).retyped == ()
    verdict = fit(old, table(ID, A_TEXT))
    assert [(r.column, r.catalog, r.live) for r in verdict.retyped] == [("a", None, "text")]
    assert verdict.properties["a"] == {"type": ["string", "null"]}


def test_a_column_that_lost_not_null_admits_null() -> None:
    catalog = entry(table(ID, col("a", "int4", "integer", attnum=2, not_null=True)))
    assert catalog["schema"]["properties"]["a"]["type"] == ["integer"]
    verdict = fit(catalog, table(ID, A_INT))
    assert verdict.properties["a"]["type"] == ["integer", "null"]
    assert verdict.sentences() == []


def test_added_and_dropped_columns_follow_the_table() -> None:
    catalog = entry(table(ID, A_INT))
    live = table(ID, col("b", "text", "text", attnum=3))
    verdict = fit(catalog, live)
    assert list(verdict.properties) == ["id", "b", "_sdc_lsn", "_sdc_deleted_at"]
    assert verdict.properties == table_schema(live, use_singer_decimal=False)["properties"]


def test_a_renamed_key_column_gives_way_to_the_live_key() -> None:
    catalog = entry(table(ID, A_INT))
    renamed = col("id2", "int4", "integer", attnum=1, not_null=True)
    verdict = fit(catalog, table(renamed, A_INT, key=("id2",)))
    assert verdict.key == ("id2",)
    assert set(verdict.key) <= set(verdict.properties)
    (sentence,) = verdict.sentences()
    assert "key_properties (id) name column(s) the table no longer has (id:" in sentence
    assert "uses the table's key (id2)" in sentence and "Fix: run --discover again" in sentence


def test_a_chosen_key_of_existing_columns_is_kept() -> None:
    """A user's key_properties that name live columns stay (checks.stale_keys warns)."""
    catalog = entry(table(ID, A_INT))
    catalog["key_properties"] = ["a"]
    verdict = fit(catalog, table(ID, A_INT))
    assert verdict.key == ("a",) and verdict.sentences() == []


# --- a Relation message -------------------------------------------------------------------------


def relation(*columns: Column, identity: str = "d") -> Relation:
    message = decode(build.relation(OID, "public", "t", identity, columns))
    assert isinstance(message, Relation)
    return message


KEY, PLAIN = 1, 0
INT4, TEXT = T["int4"].oid, T["text"].oid


def format_types(pairs: t.Sequence[tuple[int, int]]) -> dict[tuple[int, int], str]:
    names = {INT4: "integer", TEXT: "text"}
    return {(oid, mod): names[oid] for oid, mod in pairs}


def test_the_bound_table_is_kept_while_the_message_describes_it() -> None:
    bound = table(ID, A_INT)
    message = relation(Column(KEY, "id", INT4, -1), Column(PLAIN, "a", INT4, -1))
    assert same_shape(message, bound)
    assert not same_shape(
        relation(Column(KEY, "id", INT4, -1), Column(PLAIN, "a", TEXT, -1)), bound
    )
    assert not same_shape(relation(Column(KEY, "id", INT4, -1)), bound)  # a dropped


def test_deselected_columns_a_column_list_leaves_out_are_no_difference() -> None:
    """PostgreSQL 15+ publications list the selected columns only (see tap_pgcdc.filters)."""
    bound = table(ID, A_INT)
    listed = relation(Column(KEY, "id", INT4, -1))
    assert same_shape(listed, bound, {"a"})
    # Real DDL with the list: the deselected column is kept as it is, never read.
    retyped = relation(Column(KEY, "id", TEXT, -1))
    adopted = adopt(retyped, bound, bound, {TEXT: T["text"]}, format_types, absent={"a"})
    assert [c.name for c in adopted.columns] == ["id", "a"]


def test_a_type_change_takes_the_messages_type() -> None:
    bound = table(ID, A_TEXT)  # the run bound the table after ALTER ... TYPE text
    message = relation(Column(KEY, "id", INT4, -1), Column(PLAIN, "a", INT4, -1))  # from before
    assert unknown_types(message, bound, bound) == [INT4]
    adopted = adopt(message, bound, bound, {INT4: T["int4"]}, format_types)
    assert adopted.columns == (ID, col("a", "int4", "integer", attnum=2))
    assert adopted.key == ("id",)


def test_a_new_column_takes_its_attributes_from_the_catalog() -> None:
    bound = table(ID)
    added = ColumnInfo("n", 3, T["int4"], -1, not_null=True, generated=False, sql_type="integer")
    current = table(ID, added)
    message = relation(Column(KEY, "id", INT4, -1), Column(PLAIN, "n", INT4, -1))
    assert unknown_types(message, bound, current) == []
    adopted = adopt(message, bound, current, {}, format_types)
    assert adopted.columns == (ID, added)


def test_a_column_the_catalog_has_with_another_type_admits_null() -> None:
    """The catalog is newer than the message: its NOT NULL may not hold for these rows."""
    bound = table(ID)
    current = table(ID, col("n", "text", "text", attnum=3, not_null=True))
    message = relation(Column(KEY, "id", INT4, -1), Column(PLAIN, "n", INT4, -1))
    adopted = adopt(message, bound, current, {INT4: T["int4"]}, format_types)
    assert adopted.columns[1] == col("n", "int4", "integer", attnum=3)


def test_a_renamed_key_column_is_the_new_key() -> None:
    bound = table(ID, A_INT)
    renamed = col("id2", "int4", "integer", attnum=1, not_null=True)
    current = table(renamed, A_INT, key=("id2",))
    message = relation(Column(KEY, "id2", INT4, -1), Column(PLAIN, "a", INT4, -1))
    assert not same_shape(message, bound)
    adopted = adopt(message, bound, current, {}, format_types)
    assert adopted.key == ("id2",) and adopted.columns == (renamed, A_INT)


def test_a_message_from_before_a_key_rename_keeps_its_own_key() -> None:
    """The run bound the renamed table; changes from before the rename carry the old name."""
    renamed = col("id2", "int4", "integer", attnum=1, not_null=True)
    bound = table(renamed, A_INT, key=("id2",))
    message = relation(Column(KEY, "id", INT4, -1), Column(PLAIN, "a", INT4, -1))
    adopted = adopt(message, bound, bound, {INT4: T["int4"]}, format_types)
    assert adopted.key == ("id",)
    assert [c.name for c in adopted.columns] == ["id", "a"]


def test_the_key_under_each_replica_identity() -> None:
    both = (Column(KEY, "id", INT4, -1), Column(KEY, "a", INT4, -1))
    # FULL flags every column: the catalog's key, if the message has it.
    assert relation_key(relation(*both, identity="f"), ("id",)) == ("id",)
    assert relation_key(relation(*both, identity="f"), ("gone",)) == ()
    assert relation_key(relation(*both, identity="f"), ()) == ()
    # Flags that match the catalog's key: in the catalog's (index) order.
    assert relation_key(relation(*both, identity="i"), ("a", "id")) == ("a", "id")
    # Flags that do not: the flags, which the old rows carry.
    assert relation_key(relation(*both, identity="d"), ("id",)) == ("id", "a")
    no_key = relation(Column(PLAIN, "id", INT4, -1), Column(PLAIN, "a", INT4, -1))
    assert relation_key(no_key, ()) == ()


def test_under_full_a_message_from_before_a_key_rename_takes_the_older_key() -> None:
    """FULL flags every column; the catalog's key now (id2) is not in a message from before."""
    renamed = col("id2", "int4", "integer", attnum=1, not_null=True)
    bound = table(renamed, A_INT, key=("id2",), identity="f")
    before = relation(Column(KEY, "id", INT4, -1), Column(KEY, "a", INT4, -1), identity="f")
    adopted = adopt(before, bound, bound, {INT4: T["int4"]}, format_types, ("id",))
    assert adopted.key == ("id",)
    after = relation(Column(KEY, "id2", INT4, -1), Column(KEY, "a", INT4, -1), identity="f")
    assert not same_shape(after, adopted)
    assert adopt(after, adopted, bound, {}, format_types, ("id",)).key == ("id2",)


def test_a_key_that_followed_the_table_keeps_following_it() -> None:
    renamed = table(col("id2", "int4", "integer", attnum=1, not_null=True), A_INT, key=("id2",))
    assert followed_key(("id",), table(ID, A_INT), renamed) == ("id2",)
    assert followed_key((), table(ID, A_INT, key=()), renamed) == ("id2",)
    # A key of the user's choice stays while its columns exist, and gives way when they do not.
    assert followed_key(("a",), table(ID, A_INT), renamed) == ("a",)
    assert followed_key(("a",), table(ID, A_INT), table(renamed.columns[0], key=("id2",))) == (
        "id2",
    )
