"""What DDL did to a table's rows, judged from its recorded and live shapes (no server)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_pgcdc.errors import StateError
from tap_pgcdc.pg.shape import ColumnShape, LeafFile, TableShape
from tap_pgcdc.recovery import plan_shape_recovery
from tap_pgcdc.state import check_bookmark, recorded_shape

TABLE = TableShape(
    oid=100,
    columns=(ColumnShape(1, "id", 23, -1), ColumnShape(2, "v", 25, -1)),
    files=(LeafFile(100, "public.t", 5000, ""),),
)
PARENT = TableShape(
    oid=200,
    columns=(ColumnShape(1, "id", 23, -1), ColumnShape(2, "k", 23, -1)),
    files=(LeafFile(201, "public.p1", 6001, "900"), LeafFile(202, "public.p2", 6002, "901")),
    partitioned=True,
)


def columns(*cols: ColumnShape) -> tuple[ColumnShape, ...]:
    return cols


def file(shape: TableShape, **changes: object) -> TableShape:
    return dataclasses.replace(shape, files=(dataclasses.replace(shape.files[0], **changes),))


def reasons(recorded: TableShape, live: TableShape) -> tuple[str, ...]:
    return plan_shape_recovery(recorded, live).reasons


def test_the_same_shape_needs_nothing() -> None:
    assert not plan_shape_recovery(TABLE, TABLE).needed
    assert not plan_shape_recovery(PARENT, PARENT).needed


def test_a_table_created_again_under_its_name() -> None:
    assert "dropped and created again" in reasons(TABLE, dataclasses.replace(TABLE, oid=101))[0]


def test_a_rename_keeps_the_attnum() -> None:
    live = dataclasses.replace(
        TABLE, columns=columns(TABLE.columns[0], ColumnShape(2, "w", 25, -1))
    )
    assert reasons(TABLE, live) == ("column v was renamed to w",)


@pytest.mark.parametrize("fills", [True, False])
def test_an_added_column_matters_only_if_existing_rows_took_a_value(fills: bool) -> None:
    live = dataclasses.replace(TABLE, columns=(*TABLE.columns, ColumnShape(3, "d", 23, -1, fills)))
    assert plan_shape_recovery(TABLE, live).needed == fills


def test_a_dropped_column_keeps_the_rows() -> None:
    assert not plan_shape_recovery(
        TABLE, dataclasses.replace(TABLE, columns=TABLE.columns[:1])
    ).needed


@pytest.mark.parametrize("rewritten", [True, False])
def test_a_type_change_matters_only_with_a_rewrite(rewritten: bool) -> None:
    live = dataclasses.replace(TABLE, columns=(TABLE.columns[0], ColumnShape(2, "v", 1043, -1)))
    if rewritten:
        live = file(live, relfilenode=5001)
    assert plan_shape_recovery(TABLE, live).needed == rewritten


def test_a_plain_tables_new_file_alone_is_a_truncate_or_vacuum_full() -> None:
    # TRUNCATE is in the log; VACUUM FULL and CLUSTER keep the rows.
    assert not plan_shape_recovery(TABLE, file(TABLE, relfilenode=5001)).needed


def test_partitions_detached_truncated_reattached_or_new() -> None:
    p1, p2 = PARENT.files
    gone = dataclasses.replace(PARENT, files=(p1,))
    assert reasons(PARENT, gone) == ("partition public.p2 was detached or dropped",)
    truncated = dataclasses.replace(PARENT, files=(dataclasses.replace(p1, relfilenode=7), p2))
    assert "public.p1 was truncated" in reasons(PARENT, truncated)[0]
    again = dataclasses.replace(PARENT, files=(dataclasses.replace(p1, attached="950"), p2))
    assert reasons(PARENT, again) == ("partition public.p1 was detached and attached again",)
    p3 = LeafFile(203, "public.p3", 6003, "960")
    new = plan_shape_recovery(PARENT, dataclasses.replace(PARENT, files=(p1, p2, p3)))
    assert not new.needed
    assert new.new_leaves == (p3,)


names = st.text(alphabet="abcdef", min_size=1, max_size=3)
shapes = st.builds(
    TableShape,
    oid=st.integers(1, 2**32 - 1),
    columns=st.lists(
        st.builds(
            ColumnShape, st.integers(1, 1600), names, st.integers(1, 99999), st.integers(-1, 9999)
        ),
        max_size=5,
        unique_by=lambda c: c.attnum,
    ).map(tuple),
    files=st.lists(
        st.builds(LeafFile, st.integers(1, 2**32 - 1), names, st.integers(0, 2**32 - 1), names),
        max_size=4,
        unique_by=lambda f: f.oid,
    ).map(tuple),
    partitioned=st.booleans(),
)


@given(shapes)
def test_the_bookmark_keeps_the_shape_exactly(shape: TableShape) -> None:
    bookmark = {"shape": shape.record()}
    check_bookmark("public-t", bookmark)
    assert recorded_shape(bookmark) == shape
    assert not plan_shape_recovery(shape, shape).needed


@pytest.mark.parametrize(
    "shape",
    [
        [],
        {"oid": "1", "columns": [], "files": []},
        {"oid": 1, "columns": [[1, "a", 23]], "files": []},
    ],
)
def test_a_malformed_shape_is_refused(shape: object) -> None:
    with pytest.raises(StateError, match="invalid shape"):
        check_bookmark("public-t", {"lsn": "0/1", "shape": shape})
