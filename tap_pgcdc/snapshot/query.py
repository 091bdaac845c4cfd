"""The chunk queries of a snapshot: one builder for the SDK's record path and the fast path.

A keyed table is read in key order, a bounded chunk at a time: each chunk starts after the last
key of the one before, so that an interrupted run resumes after the last chunk it wrote. Every
row holds the caller's output columns, then the key's text. A table without key (or a view) has no
order to resume from: one pass through a server-side cursor, a chunk at a time.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from tap_pgcdc.pg.quoting import quote_ident

if t.TYPE_CHECKING:
    from collections.abc import Generator, Sequence

    import psycopg2.extensions

    from tap_pgcdc.pg.catalog import TableInfo

Row: t.TypeAlias = "tuple[t.Any, ...]"
"""A fetched row: the output columns' values (text under raw-text casters), then the key's text."""

ALIAS = "src"
"""The table's alias in the chunk queries; output SQL may qualify columns with it."""


@dataclass(frozen=True, slots=True)
class ChunkQuery:
    """The SQL that reads one table a chunk of `size` rows at a time.

    `outputs` are SQL expressions over the table (aliased `ALIAS`), one per value a row holds
    before its key. The key columns are qualified with the alias, so that ORDER BY means the
    table's columns even where an output column has the same name.
    """

    table: TableInfo
    outputs: tuple[str, ...]
    size: int
    # The stream's row filter (row_filters, as the server prints it): the snapshot reads the
    # rows the publication publishes, no others.
    where: str | None = None

    @property
    def _keys(self) -> str:
        return ", ".join(f"{ALIAS}.{quote_ident(name)}" for name in self.table.key)

    @property
    def _from(self) -> str:
        text = f" FROM {self.table.quoted_name} AS {ALIAS}"
        return text if self.where is None else f"{text} WHERE ({self.where})"

    @property
    def whole(self) -> str:
        """The query of a one-pass read: the output columns of every row, in no order.

        Executed without parameters, so a '%' in a name stays as it is.
        """
        return f"SELECT {', '.join(self.outputs)}{self._from}"

    def keyed(self, after: Sequence[str] | None) -> tuple[str, list[str]]:
        """The query of the chunk after the key `after` (text values; None: the first chunk).

        Returns the SQL and its parameters. The driver fills in %s placeholders, so a '%' in
        the SQL's names and types is doubled.
        """
        select = f"SELECT {', '.join(self.outputs)}, {self._keys}{self._from}"
        keys = self._keys.replace("%", "%%")
        sql = select.replace("%", "%%") + self._after(after)
        return f"{sql} ORDER BY {keys} LIMIT {self.size}", list(after or [])

    def _after(self, after: Sequence[str] | None) -> str:
        """The condition "key > `after`" (with %s placeholders), joined to the row filter."""
        if after is None:
            return ""
        keys = self._keys.replace("%", "%%")
        casts = ", ".join(
            "%s::" + self.table.column(name).sql_type.replace("%", "%%") for name in self.table.key
        )
        return f" {'AND' if self.where else 'WHERE'} ({keys}) > ({casts})"

    def boundaries(self, after: Sequence[str] | None) -> tuple[str, list[str]]:
        """The keys' text of every `size`-th row after `after`, in key order (see parallel.py).

        Chunk i of the keyed read is then the `size` rows after boundary i-1: the same chunks,
        read by the same query (`keyed`), as one reader going from chunk to chunk.
        """
        texts = ", ".join(
            f"{ALIAS}.{quote_ident(name)}::text AS k{n}" for n, name in enumerate(self.table.key)
        )
        inner = f"SELECT {texts}, row_number() OVER (ORDER BY {self._keys}) AS n{self._from}"
        inner = inner.replace("%", "%%") + self._after(after)
        outer = ", ".join(f"b.k{n}" for n in range(len(self.table.key)))
        return (
            f"SELECT {outer} FROM ({inner}) AS b WHERE b.n %% {self.size} = 0 ORDER BY b.n",
            list(after or []),
        )

    def key_of(self, row: Row) -> list[str]:
        """The key's text values in a row of a keyed chunk: where the next chunk starts."""
        return list(row[len(self.outputs) :])


def key_chunks(
    conn: psycopg2.extensions.connection, query: ChunkQuery, after: Sequence[str] | None
) -> Generator[list[Row], None, None]:
    """The table's rows after the key `after` (None: from the start), in key order, by chunk.

    Ends after the first chunk shorter than the query's size (possibly empty). Each chunk is
    queried only when the caller asks for it.
    """
    while True:
        sql, params = query.keyed(after)
        with conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        yield rows
        if len(rows) < query.size:
            return
        after = query.key_of(rows[-1])


def all_chunks(
    conn: psycopg2.extensions.connection, query: ChunkQuery
) -> Generator[list[Row], None, None]:
    """Every row of the table in one pass, by chunk, through a server-side cursor.

    Ends after the first chunk shorter than the query's size (possibly empty). Closing the
    generator closes the cursor.
    """
    with conn.cursor(name=f"tap_pgcdc_{query.table.oid}") as cur:
        cur.itersize = query.size
        cur.execute(query.whole)
        while True:
            rows = cur.fetchmany(query.size)
            yield rows
            if len(rows) < query.size:
                return
