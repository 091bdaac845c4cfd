"""Values the log did not carry, read back by key in batches, the records kept in log order.

Without REPLICA IDENTITY FULL the server does not resend an unchanged TOASTed value, and before
PostgreSQL 18 it never sends generated columns: such a record is completed from the table, by key.
One query per record costs a round trip per change; `HeldChanges` holds one stream's records of
one transaction instead, and completes them with one query per batch (`read_back`).

Why the output is the same as one query per record would give, in the same order:
- Once a record is held, every later record of the stream is held behind it (the caller sends
  them here, the fast path included), and a flush writes them in the order they came. A later
  change of the same key, its deletion included, is never written before an earlier one.
- A batch never spans transactions, and is written at the latest at its commit (`Sink.commit`),
  before any STATE, before a new SCHEMA of the stream and before its TRUNCATE's new version.
- The values read are the row's current ones, as before: possibly newer than the change, which
  converges because every later change of the row follows in the log. A row that is gone leaves
  its columns out of the record, never NULL: its deletion follows in the log.

Memory stays bounded: a batch is written once it holds `max_rows` records to complete or
`budget_bytes` of held values, and the batch size starts at one record and grows (doubling) only
while the largest row read back, times the size, stays within the budget. A table of 50 MB
values reads them one at a time.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from tap_pgcdc.pg.casters import raw_text_casters
from tap_pgcdc.pg.quoting import pct, quote_ident

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import psycopg2.extensions

    from tap_pgcdc.replication.messages import Begin
    from tap_pgcdc.streams import PgCdcStream

    Key = tuple[str, ...]
    Fetch = Callable[[tuple[str, ...], Sequence[Key]], tuple[list[tuple[t.Any, ...] | None], int]]
    """(columns, distinct keys) -> per key its values (None: the row is gone), largest row."""
    Emit = Callable[[dict[str, t.Any], Begin, bool], None]
    """Writes a record (record, its transaction, deleted)."""

MAX_ROWS = 1000  # records to complete in one query, at most
BUDGET_BYTES = 8 << 20  # held and read-back text of one batch, about


@dataclass(slots=True)
class _Held:
    record: dict[str, t.Any]
    begin: Begin
    deleted: bool
    missing: tuple[str, ...]  # empty: complete as it is
    key: Key


class HeldChanges:
    """One stream's records waiting for values read back by key, in log order.

    Args:
        fetch: Reads the columns of the distinct keys (see `read_back`).
        emit: Writes one record.
        max_rows: Records to complete with one query, at most.
        budget_bytes: About how much text a batch may hold and read back.
    """

    def __init__(
        self,
        fetch: Fetch,
        emit: Emit,
        *,
        max_rows: int = MAX_ROWS,
        budget_bytes: int = BUDGET_BYTES,
    ) -> None:
        self._fetch = fetch
        self._emit = emit
        self._max_rows = max_rows
        self._budget = budget_bytes
        self._held: list[_Held] = []
        self._needy = 0  # held records with values to read
        self._bytes = 0  # their text, about
        self.limit = 1  # records to complete per query now (see `next_limit`)

    @property
    def holding(self) -> bool:
        """True while records are held: every record of the stream must queue behind them."""
        return bool(self._held)

    def add(
        self,
        record: dict[str, t.Any],
        begin: Begin,
        *,
        deleted: bool = False,
        missing: Sequence[str] = (),
        key: Key = (),
        size: int = 0,
    ) -> None:
        """Write a record, or hold it: if it lacks `missing` (read by `key`), or others are held.

        `size`: about how much text the record holds, for the byte budget.
        """
        held = self._held
        if held and held[-1].begin is not begin:  # a batch never spans transactions
            self.flush()
        if not missing and not self._held:
            self._emit(record, begin, deleted)
            return
        self._held.append(_Held(record, begin, deleted, tuple(missing), key))
        self._bytes += size
        if missing:
            self._needy += 1
        if self._needy >= self.limit or self._bytes >= self._budget:
            self.flush()

    def flush(self) -> None:
        """Read the held records' missing values, then write every held record in order."""
        held = self._held
        if not held:
            return
        self._held, self._needy, self._bytes = [], 0, 0
        largest = self._fill(held)
        emit = self._emit
        for item in held:
            emit(item.record, item.begin, item.deleted)
        self.limit = next_limit(self.limit, largest, self._max_rows, self._budget)

    def _fill(self, held: list[_Held]) -> int:
        """Set the missing values of the held records; returns the largest row read (text)."""
        # One query per set of missing columns (usually one), each distinct key read once.
        groups: dict[tuple[str, ...], dict[Key, list[_Held]]] = {}
        for item in held:
            if item.missing:
                groups.setdefault(item.missing, {}).setdefault(item.key, []).append(item)
        largest = 0
        for columns, by_key in groups.items():
            keys = list(by_key)
            rows, row_bytes = self._fetch(columns, keys)
            largest = max(largest, row_bytes)
            for key, row in zip(keys, rows, strict=True):
                if row is None:
                    continue  # the row is gone: its columns stay out (its delete follows)
                for item in by_key[key]:
                    item.record.update(zip(columns, row, strict=True))
        return largest


def next_limit(limit: int, largest_row: int, max_rows: int, budget_bytes: int) -> int:
    """The next batch size: doubling up to `max_rows`, while largest row x size fits the budget."""
    fits = budget_bytes // largest_row if largest_row > 0 else max_rows
    return max(1, min(max_rows, limit * 2, fits))


def readback_sql(table: str, columns: Sequence[str], key: Sequence[tuple[str, str]]) -> str:
    """The query reading `columns` of the rows whose keys are given as text arrays.

    Args:
        table: The table's quoted, schema-qualified name.
        columns: The columns to read.
        key: The key columns, each (name, SQL type): one `text[]` parameter each, the key
            values in the same order in every array.

    Returns:
        SQL with one %s per key column, selecting each found key's 1-based position in the
        arrays, then `columns`. Matching by position, not by the key's text, leaves nothing to
        the session's output format (dates, time zones).
    """
    names = [f"k{i}" for i in range(len(key))]
    arrays = ", ".join("%s::text[]" for _ in key)
    row_key = ", ".join("r." + pct(quote_ident(name)) for name, _ in key)
    given = ", ".join(f"k.k{i}::{pct(sql_type)}" for i, (_, sql_type) in enumerate(key))
    return (
        f"SELECT k.n, {', '.join('r.' + pct(quote_ident(c)) for c in columns)} "
        f"FROM unnest({arrays}) WITH ORDINALITY AS k({', '.join(names)}, n) "
        f"JOIN {pct(table)} AS r ON ({row_key}) = ({given})"
    )


def read_back(
    conn: psycopg2.extensions.connection,
    stream: PgCdcStream,
    columns: tuple[str, ...],
    keys: Sequence[Key],
) -> tuple[list[tuple[t.Any, ...] | None], int]:
    """Read `columns` of the rows of `keys` (the key's text values), in one query.

    Returns:
        Per key, the converted values in `columns` order (None if the row is gone), and the
        largest row's text length read.
    """
    table = stream.table
    cols = [table.column(name) for name in columns]
    key_cols = [table.column(name) for name in table.key]
    sql = readback_sql(table.quoted_name, columns, [(k.name, k.sql_type) for k in key_cols])
    raw_text_casters(conn, (c.type.oid for c in cols))
    with conn.cursor() as cur:
        cur.execute(sql, [list(values) for values in zip(*keys, strict=True)])
        found = {int(n): values for n, *values in cur.fetchall()}
    converters = [stream.converter_for(name) for name in columns]
    rows: list[tuple[t.Any, ...] | None] = []
    largest = 0
    for position in range(1, len(keys) + 1):
        values = found.pop(position, None)
        if values is None:
            rows.append(None)
            continue
        largest = max(largest, sum(len(v) for v in values if isinstance(v, str)))
        rows.append(
            tuple(
                None if v is None else convert(v)
                for convert, v in zip(converters, values, strict=True)
            )
        )
    return rows, largest
