"""HeldChanges: records waiting for values read back by key, written in log order (issue 13)."""

from __future__ import annotations

import datetime
from typing import Any

from tap_pgcdc.output.readback import HeldChanges, next_limit, readback_sql
from tap_pgcdc.replication.messages import Begin


def begin(xid: int) -> Begin:
    return Begin(final_lsn=xid * 100, commit_time=datetime.datetime(2024, 1, 1), xid=xid)


class Table:
    """A fake table by key: what the fetch reads; records every query."""

    def __init__(self, rows: dict[tuple[str, ...], dict[str, Any]]) -> None:
        self.rows = rows
        self.queries: list[tuple[tuple[str, ...], list[tuple[str, ...]]]] = []

    def fetch(self, columns, keys):
        self.queries.append((columns, list(keys)))
        out = []
        largest = 0
        for key in keys:
            row = self.rows.get(key)
            if row is None:
                out.append(None)
                continue
            values = tuple(row[c] for c in columns)
            largest = max(largest, sum(len(v) for v in values if isinstance(v, str)))
            out.append(values)
        return out, largest


def held_with(table: Table, **kwargs: Any) -> tuple[HeldChanges, list[tuple[dict, int, bool]]]:
    written: list[tuple[dict, int, bool]] = []
    held = HeldChanges(table.fetch, lambda r, b, d: written.append((dict(r), b.xid, d)), **kwargs)
    return held, written


def test_complete_records_are_written_at_once_when_nothing_is_held() -> None:
    table = Table({})
    held, written = held_with(table)
    held.add({"id": "1"}, begin(1))
    assert written == [({"id": "1"}, 1, False)]
    assert not held.holding and table.queries == []


def test_held_records_keep_their_order_and_get_their_values() -> None:
    table = Table({("1",): {"body": "B1"}, ("2",): {"body": "B2"}})
    held, written = held_with(table)
    held.limit = 10
    b = begin(1)
    held.add({"id": "1", "n": 1}, b, missing=["body"], key=("1",))
    assert held.holding and written == []
    held.add({"id": "3"}, b)  # complete, but behind a held record
    held.add({"id": "1", "n": 2}, b, missing=["body"], key=("1",))  # the same key again
    held.add({"id": "2"}, b, deleted=True)
    held.add({"id": "2", "n": 3}, b, missing=["body"], key=("2",))
    assert written == []
    held.flush()
    assert written == [
        ({"id": "1", "n": 1, "body": "B1"}, 1, False),
        ({"id": "3"}, 1, False),
        ({"id": "1", "n": 2, "body": "B1"}, 1, False),
        ({"id": "2"}, 1, True),
        ({"id": "2", "n": 3, "body": "B2"}, 1, False),
    ]
    assert table.queries == [(("body",), [("1",), ("2",)])], "one query, each key once"
    assert not held.holding


def test_a_gone_row_leaves_its_columns_out() -> None:
    table = Table({})
    held, written = held_with(table)
    held.add({"id": "1"}, begin(1), missing=["body"], key=("1",))
    assert written == [({"id": "1"}, 1, False)]
    assert "body" not in written[0][0]


def test_each_set_of_missing_columns_is_one_query() -> None:
    table = Table({("1",): {"a": "A", "b": "B"}})
    held, written = held_with(table)
    held.limit = 10
    b = begin(1)
    held.add({"id": "1"}, b, missing=["a"], key=("1",))
    held.add({"id": "1"}, b, missing=["a", "b"], key=("1",))
    held.flush()
    assert [q[0] for q in table.queries] == [("a",), ("a", "b")]
    assert [w[0] for w in written] == [{"id": "1", "a": "A"}, {"id": "1", "a": "A", "b": "B"}]


def test_a_batch_never_spans_transactions() -> None:
    table = Table({("1",): {"body": "B"}})
    held, written = held_with(table)
    held.limit = 10
    held.add({"id": "1"}, begin(1), missing=["body"], key=("1",))
    held.add({"id": "1"}, begin(2), missing=["body"], key=("1",))
    assert [w[1] for w in written] == [1]
    held.flush()
    assert [w[1] for w in written] == [1, 2]
    assert len(table.queries) == 2


def test_batches_grow_from_one_to_the_cap() -> None:
    rows = {(str(i),): {"body": "x" * 10} for i in range(100)}
    table = Table(rows)
    held, written = held_with(table, max_rows=16, budget_bytes=1 << 20)
    b = begin(1)
    for i in range(100):
        held.add({"id": str(i)}, b, missing=["body"], key=(str(i),))
    held.flush()
    assert [len(q[1]) for q in table.queries] == [1, 2, 4, 8, 16, 16, 16, 16, 16, 5]
    assert [w[0]["id"] for w in written] == [str(i) for i in range(100)]
    assert all(w[0]["body"] == "x" * 10 for w in written)


def test_large_rows_keep_batches_within_the_budget() -> None:
    rows = {(str(i),): {"body": "x" * 400} for i in range(20)}
    table = Table(rows)
    held, _ = held_with(table, max_rows=1000, budget_bytes=1000)
    b = begin(1)
    for i in range(20):
        held.add({"id": str(i)}, b, missing=["body"], key=(str(i),))
    held.flush()
    # 1000 bytes hold two rows of 400: never more than two per query.
    assert max(len(q[1]) for q in table.queries) == 2


def test_held_bytes_flush_a_batch() -> None:
    table = Table({("1",): {"body": "B"}})
    held, written = held_with(table, budget_bytes=100)
    held.limit = 10
    b = begin(1)
    held.add({"id": "1"}, b, missing=["body"], key=("1",), size=10)
    held.add({"id": "2", "big": "y" * 200}, b, size=200)
    assert len(written) == 2 and not held.holding


def test_next_limit() -> None:
    assert next_limit(1, 0, 1000, 1 << 25) == 2
    assert next_limit(512, 100, 1000, 1 << 25) == 1000
    assert next_limit(1000, 50 << 20, 1000, 32 << 20) == 1
    assert next_limit(8, 1 << 20, 1000, 32 << 20) == 16
    assert next_limit(64, 1 << 20, 1000, 32 << 20) == 32


def test_readback_sql_matches_keys_by_position_and_escapes_percent() -> None:
    sql = readback_sql('"s"."t%"', ["body", "x%y"], [("id", "integer"), ("at", "timestamptz")])
    assert sql == (
        'SELECT k.n, r."body", r."x%%y" FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY '
        'AS k(k0, k1, n) JOIN "s"."t%%" AS r ON (r."id", r."at") = (k.k0::integer, '
        "k.k1::timestamptz)"
    )
