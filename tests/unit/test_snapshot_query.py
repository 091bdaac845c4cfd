"""The chunk queries of a snapshot: their exact SQL, and where a chunked read stops and resumes."""

from __future__ import annotations

from typing import Any

from tap_pgcdc.pg.catalog import ColumnInfo, TableInfo
from tap_pgcdc.snapshot.query import ChunkQuery, all_chunks, key_chunks
from tap_pgcdc.typemap import BUILTIN_TYPES

T = {t.name: t for t in BUILTIN_TYPES.values()}


def column(name: str, type_name: str, sql_type: str | None = None) -> ColumnInfo:
    return ColumnInfo(
        name=name,
        attnum=1,
        type=T[type_name],
        typmod=-1,
        not_null=False,
        generated=False,
        sql_type=sql_type or type_name,
    )


def table(*columns: ColumnInfo, key: tuple[str, ...] = ("id",), name: str = "t") -> TableInfo:
    return TableInfo(
        oid=16500,
        schema="public",
        name=name,
        kind="r",
        columns=columns,
        key=key,
        row_estimate=0,
        replica_identity="d",
    )


PAIR = table(column("a", "int4"), column("b", "text"), column("v", "text"), key=("a", "b"))


def test_keyed_chunks_start_after_the_key_in_key_order() -> None:
    query = ChunkQuery(PAIR, ('"v"',), 100)
    assert query.keyed(None) == (
        'SELECT "v", src."a", src."b" FROM "public"."t" AS src ORDER BY src."a", src."b" LIMIT 100',
        [],
    )
    assert query.keyed(["1", "x"]) == (
        'SELECT "v", src."a", src."b" FROM "public"."t" AS src'
        ' WHERE (src."a", src."b") > (%s::int4, %s::text) ORDER BY src."a", src."b" LIMIT 100',
        ["1", "x"],
    )
    # The key's text follows the outputs in each row.
    assert query.key_of(("v1", "1", "x")) == ["1", "x"]


def test_a_percent_sign_is_doubled_only_where_the_driver_fills_in_placeholders() -> None:
    odd = table(column("100%", "int4", sql_type='"pct%"'), key=("100%",), name="a%b")
    query = ChunkQuery(odd, ("'50%'",), 10)
    sql, params = query.keyed(["7"])
    assert sql == (
        'SELECT \'50%%\', src."100%%" FROM "public"."a%%b" AS src'
        ' WHERE (src."100%%") > (%s::"pct%%") ORDER BY src."100%%" LIMIT 10'
    )
    assert params == ["7"]
    assert query.whole == 'SELECT \'50%\' FROM "public"."a%b" AS src'


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.itersize = 0

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.closed_cursors += 1

    def execute(self, sql: str, params: Any = None) -> None:
        self.conn.executed.append((sql, params))

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.conn.chunks.pop(0)

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        return self.conn.chunks.pop(0)


class FakeConnection:
    """Hands out prepared chunks and records the queries."""

    def __init__(self, *chunks: list[tuple[Any, ...]]) -> None:
        self.chunks = list(chunks)
        self.executed: list[tuple[str, Any]] = []
        self.closed_cursors = 0
        self.cursor_names: list[str | None] = []

    def cursor(self, name: str | None = None) -> FakeCursor:
        self.cursor_names.append(name)
        return FakeCursor(self)


def test_key_chunks_resume_after_each_chunk_and_stop_at_a_short_one() -> None:
    query = ChunkQuery(PAIR, ('"v"',), 2)
    conn = FakeConnection(
        [("p", "1", "a"), ("q", "1", "b")], [("r", "2", "a"), ("s", "3", "a")], []
    )
    chunks = list(key_chunks(conn, query, ["0", "z"]))
    assert chunks == [
        [("p", "1", "a"), ("q", "1", "b")],
        [("r", "2", "a"), ("s", "3", "a")],
        [],
    ]
    assert [params for _, params in conn.executed] == [["0", "z"], ["1", "b"], ["3", "a"]]
    assert conn.closed_cursors == 3


def test_a_chunk_is_queried_only_when_asked_for() -> None:
    query = ChunkQuery(PAIR, ('"v"',), 1)
    conn = FakeConnection([("p", "1", "a")], [])
    chunks = key_chunks(conn, query, None)
    assert next(chunks) == [("p", "1", "a")]
    assert len(conn.executed) == 1


def test_all_chunks_read_one_pass_through_a_named_cursor() -> None:
    query = ChunkQuery(table(column("id", "int4")), ('"id"',), 2)
    conn = FakeConnection([("1",), ("2",)], [("3",)])
    assert list(all_chunks(conn, query)) == [[("1",), ("2",)], [("3",)]]
    assert conn.executed == [('SELECT "id" FROM "public"."t" AS src', None)]
    assert conn.cursor_names == ["tap_pgcdc_16500"]
    assert conn.closed_cursors == 1


def test_a_row_filter_restricts_every_chunk() -> None:
    """The stream's row filter (as the server prints it) is ANDed with the chunk's start."""
    query = ChunkQuery(PAIR, ('"v"',), 100, "(v ~~ 'a%'::text)")
    assert query.keyed(None)[0] == (
        'SELECT "v", src."a", src."b" FROM "public"."t" AS src WHERE (('
        'v ~~ \'a%%\'::text)) ORDER BY src."a", src."b" LIMIT 100'
    )
    assert query.keyed(["1", "x"])[0] == (
        'SELECT "v", src."a", src."b" FROM "public"."t" AS src WHERE (('
        'v ~~ \'a%%\'::text)) AND (src."a", src."b") > (%s::int4, %s::text) ORDER BY '
        'src."a", src."b" LIMIT 100'
    )
    # A one-pass read runs without parameters: the filter stays as it is.
    assert query.whole == ('SELECT "v" FROM "public"."t" AS src WHERE ((v ~~ \'a%\'::text))')
