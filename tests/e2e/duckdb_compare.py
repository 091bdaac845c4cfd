"""Compare every replicated Postgres table with its DuckDB copy, row by row.

Both sides are reduced to canonical Python values chosen by the Postgres column type, then
matched by primary key (or as a multiset of rows for a table without one). The report lists the
row counts and the first mismatches, column by column.

The canonical forms absorb exactly the losses that target-duckdb 0.8.0 is known to cause, and
nothing else (docs/targets.md):

- `numeric` lands in a DOUBLE column: compared as float.
- `timestamptz` lands in a TIMESTAMP (no time zone) column in UTC: compared as naive UTC.
- `date` lands in a VARCHAR column as an ISO string: parsed back to a date.
- `json`, `jsonb` and arrays land in JSON columns: parsed back, elements canonicalised.
- an empty string is loaded as NULL: '' compares equal to NULL.
- column and table names are lowercased.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg2.extensions
from psycopg2 import sql

METADATA_PREFIX = "_sdc_"

Canon = Callable[[Any], Any]


# ---------------------------------------------------------------- names


def duckdb_table_for_stream(
    stream: str, target_schema: str = "public", schema_mapping: dict[str, Any] | None = None
) -> tuple[str, str]:
    """The (schema, table) target-duckdb 0.8.0 writes a stream to (`db_sync.table_name`).

    `public-orders` -> (target_schema, "orders"). A stream with more than two `-`-separated parts is
    read as catalog-schema-table, so its table is the parts after the second joined by `_`.
    """
    parts = stream.split("-")
    stream_schema: str | None = None
    table = stream
    if len(parts) == 2:
        stream_schema, table = parts
    elif len(parts) > 2:
        stream_schema, table = parts[1], "_".join(parts[2:])
    schema = target_schema
    if schema_mapping and stream_schema in schema_mapping:
        schema = schema_mapping[stream_schema]["target_schema"]
    return schema, table.replace(".", "_").replace("-", "_").lower()


def stream_name(pg_schema: str, pg_table: str) -> str:
    """tap-pgcdc's stream name for a table."""
    return f"{pg_schema}-{pg_table}"


# ---------------------------------------------------------------- canonical values


_NAN = "NaN"


def _canon_float(value: Any) -> Any:
    if value is None:
        return None
    number = float(value)
    if math.isnan(number):
        return _NAN
    return number


def _canon_int(value: Any) -> Any:
    return None if value is None else int(value)


def _canon_bool(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False, "t": True, "f": False}.get(value.lower(), value)
    return value


def _canon_text(value: Any) -> Any:
    if value is None:
        return None
    text = str(value)
    return None if text == "" else text  # target-duckdb loads '' as NULL


def _canon_date(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        return value  # a date that came back with a time part is a mismatch: keep it visible
    return value


def _canon_timestamp(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _canon_time(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dt.time.fromisoformat(value)
        except ValueError:
            return value
    return value


def _canon_json_value(value: Any) -> Any:
    """A parsed JSON value with numbers as floats (json vs jsonb spacing and 1.50 vs 1.5 agree)."""
    if isinstance(value, dict):
        return {str(k): _canon_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon_json_value(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)):
        return _canon_float(value)
    return value


def _canon_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            # target-duckdb writes a JSON scalar string unquoted (see docs/targets.md)
            return value
    return _canon_json_value(value)


def _canon_bytes(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        if value.startswith("\\x"):
            try:
                return bytes.fromhex(value[2:])
            except ValueError:
                return value
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value
    return value


def _canon_array(element: Canon) -> Canon:
    def canon(value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return value
        if isinstance(value, list):
            return [canon(v) if isinstance(v, list) else element(v) for v in value]
        return value

    return canon


_BY_TYPE: dict[str, Canon] = {
    "int2": _canon_int,
    "int4": _canon_int,
    "int8": _canon_int,
    "oid": _canon_int,
    "numeric": _canon_float,
    "float4": _canon_float,
    "float8": _canon_float,
    "bool": _canon_bool,
    "date": _canon_date,
    "timestamp": _canon_timestamp,
    "timestamptz": _canon_timestamp,
    "time": _canon_time,
    "json": _canon_json,
    "jsonb": _canon_json,
    "bytea": _canon_bytes,
}


def canonicaliser(pg_type: str, is_array: bool = False, element_type: str | None = None) -> Canon:
    """How to reduce a value of a Postgres type (`pg_type.typname`) from either side."""
    if is_array:
        return _canon_array(_BY_TYPE.get(element_type or "", _canon_text))
    return _BY_TYPE.get(pg_type, _canon_text)


# ---------------------------------------------------------------- reading both sides


@dataclass(frozen=True)
class PgColumn:
    name: str  # as in Postgres
    type_name: str  # pg_type.typname of the column (e.g. "_int4" for int[])
    element_type: str | None  # pg_type.typname of the element for arrays

    @property
    def is_array(self) -> bool:
        return self.element_type is not None

    @property
    def canon(self) -> Canon:
        return canonicaliser(self.type_name, self.is_array, self.element_type)


@dataclass(frozen=True)
class PgTable:
    schema: str
    name: str
    columns: tuple[PgColumn, ...]
    key: tuple[str, ...]  # primary key column names, empty if none

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def pg_tables(
    conn: psycopg2.extensions.connection, tables: Iterable[str] | None = None
) -> list[PgTable]:
    """Describe the tables to compare: the named `schema.table`s, or every user table.

    Partitions are left out (their rows are compared through the partitioned parent).
    """
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT c.oid, n.nspname, c.relname
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_%%'
            ORDER BY n.nspname, c.relname
            """
        )
        found = {f"{schema}.{name}": (oid, schema, name) for oid, schema, name in cur.fetchall()}
        wanted = list(found) if tables is None else list(tables)
        missing = [t for t in wanted if t not in found]
        if missing:
            msg = f"Postgres has no table(s) {missing}; it has {sorted(found)}"
            raise AssertionError(msg)
        result = []
        for qualified in wanted:
            oid, schema, name = found[qualified]
            cur.execute(
                """
                SELECT a.attname, t.typname, et.typname
                FROM pg_attribute a
                JOIN pg_type t ON t.oid = a.atttypid
                LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
                WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
                ORDER BY a.attnum
                """,
                (oid,),
            )
            columns = tuple(PgColumn(n, tn, et) for n, tn, et in cur.fetchall())
            cur.execute(
                """
                SELECT a.attname
                FROM pg_index i
                JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos) ON true
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                WHERE i.indrelid = %s AND i.indisprimary
                ORDER BY k.pos
                """,
                (oid,),
            )
            key = tuple(r[0] for r in cur.fetchall())
            result.append(PgTable(schema, name, columns, key))
        return result


def _pg_rows(conn: psycopg2.extensions.connection, table: PgTable) -> list[tuple[Any, ...]]:
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns),
        sql.Identifier(table.schema, table.name),
    )
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute(query)
        return list(cur.fetchall())


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def duckdb_tables(ddb: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], list[str]]:
    """(schema, table) -> column names, for every table in the file's own catalog."""
    rows = ddb.execute(
        """
        SELECT table_schema, table_name, column_name
        FROM information_schema.columns
        WHERE table_catalog = current_database()
        ORDER BY table_schema, table_name, ordinal_position
        """
    ).fetchall()
    out: dict[tuple[str, str], list[str]] = {}
    for schema, table, column in rows:
        out.setdefault((schema, table), []).append(column)
    return out


# ---------------------------------------------------------------- comparing


@dataclass
class TableReport:
    pg_table: str
    duckdb_table: str
    pg_count: int = 0
    duckdb_count: int = 0
    problems: list[str] = field(default_factory=list)
    mismatched_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and self.pg_count == self.duckdb_count


@dataclass
class Report:
    tables: list[TableReport]
    extra_duckdb_tables: list[str]

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and not self.extra_duckdb_tables

    def render(self) -> str:
        lines = []
        for t in self.tables:
            status = "ok" if t.ok else "MISMATCH"
            lines.append(
                f"{status:8} {t.pg_table} -> {t.duckdb_table}: "
                f"postgres {t.pg_count} rows, duckdb {t.duckdb_count} rows"
                + (f", {t.mismatched_rows} rows differ" if t.mismatched_rows else "")
            )
            lines.extend(f"           {p}" for p in t.problems)
        if self.extra_duckdb_tables:
            lines.append(f"DuckDB tables with no Postgres table: {self.extra_duckdb_tables}")
        return "\n".join(lines)


def _sort_key(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple((v is None, type(v).__name__, repr(v)) for v in row)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _compare_table(
    pg_conn: psycopg2.extensions.connection,
    ddb: duckdb.DuckDBPyConnection,
    table: PgTable,
    ddb_name: tuple[str, str],
    ddb_columns: list[str],
    max_diffs: int,
) -> TableReport:
    report = TableReport(table.qualified, ".".join(ddb_name))
    wanted = [c.name.lower() for c in table.columns]
    have = [c for c in ddb_columns if not c.startswith(METADATA_PREFIX)]
    if sorted(wanted) != sorted(have):
        report.problems.append(
            f"columns differ: missing in duckdb {sorted(set(wanted) - set(have))}, "
            f"extra in duckdb {sorted(set(have) - set(wanted))}"
        )
    present = [c for c in table.columns if c.name.lower() in have]
    canons = [c.canon for c in present]

    pg_raw = _pg_rows(pg_conn, table)
    ddb_query = "SELECT {} FROM {}.{}".format(
        ", ".join(_quote(c.name.lower()) for c in present) or "1",
        _quote(ddb_name[0]),
        _quote(ddb_name[1]),
    )
    ddb_raw = ddb.execute(ddb_query).fetchall()
    report.pg_count, report.duckdb_count = len(pg_raw), len(ddb_raw)
    if report.pg_count != report.duckdb_count:
        report.problems.append(
            f"row count: postgres {report.pg_count}, duckdb {report.duckdb_count}"
        )

    all_names = [c.name for c in table.columns]
    keep = [all_names.index(c.name) for c in present]

    def canon_pg(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(f(row[i]) for f, i in zip(canons, keep, strict=True))

    def canon_ddb(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(f(v) for f, v in zip(canons, row, strict=True))

    pg_rows = [canon_pg(r) for r in pg_raw]
    ddb_rows = [canon_ddb(r) for r in ddb_raw]
    names = [c.name for c in present]

    key_idx = [names.index(k) for k in table.key if k in names]
    if table.key and len(key_idx) == len(table.key):
        _compare_keyed(report, names, key_idx, pg_rows, ddb_rows, max_diffs)
    else:
        _compare_multiset(report, pg_rows, ddb_rows, max_diffs)
    return report


def _compare_keyed(
    report: TableReport,
    names: list[str],
    key_idx: list[int],
    pg_rows: list[tuple[Any, ...]],
    ddb_rows: list[tuple[Any, ...]],
    max_diffs: int,
) -> None:
    def by_key(rows: list[tuple[Any, ...]], side: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in rows:
            key = tuple(row[i] for i in key_idx)
            if key in out:
                report.problems.append(f"{side}: duplicate key {_short(key)}")
            out[key] = row
        return out

    pg = by_key(pg_rows, "postgres")
    dd = by_key(ddb_rows, "duckdb")
    diffs: list[str] = []
    for key in sorted(pg.keys() | dd.keys(), key=_sort_key):
        a, b = pg.get(key), dd.get(key)
        if a == b:
            continue
        report.mismatched_rows += 1
        if len(diffs) >= max_diffs:
            continue
        label = ", ".join(f"{names[i]}={_short(k, 40)}" for i, k in zip(key_idx, key, strict=True))
        if b is None:
            diffs.append(f"[{label}] missing in duckdb: {_short(a, 200)}")
        elif a is None:
            diffs.append(f"[{label}] only in duckdb: {_short(b, 200)}")
        else:
            cols = [
                f"{n}: postgres {_short(x)} != duckdb {_short(y)}"
                for n, x, y in zip(names, a, b, strict=True)
                if x != y
            ]
            diffs.append(f"[{label}] " + "; ".join(cols))
    report.problems.extend(diffs)
    if report.mismatched_rows > len(diffs):
        report.problems.append(f"... and {report.mismatched_rows - len(diffs)} more rows")


def _compare_multiset(
    report: TableReport,
    pg_rows: list[tuple[Any, ...]],
    ddb_rows: list[tuple[Any, ...]],
    max_diffs: int,
) -> None:
    missing = Counter(map(_hashable, pg_rows)) - Counter(map(_hashable, ddb_rows))
    extra = Counter(map(_hashable, ddb_rows)) - Counter(map(_hashable, pg_rows))
    report.mismatched_rows = sum(missing.values()) + sum(extra.values())
    shown = 0
    for label, counter in (("missing in duckdb", missing), ("only in duckdb", extra)):
        for row in sorted(counter, key=_sort_key):
            if shown >= max_diffs:
                break
            report.problems.append(f"{label} (x{counter[row]}): {_short(row, 200)}")
            shown += 1
    if report.mismatched_rows > shown:
        report.problems.append(f"... {report.mismatched_rows - shown} more differing rows")


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def compare(
    pg_conn: psycopg2.extensions.connection,
    duckdb_path: Path | str,
    *,
    tables: Iterable[str] | None = None,
    target_schema: str = "public",
    schema_mapping: dict[str, Any] | None = None,
    max_diffs: int = 10,
) -> Report:
    """Compare Postgres tables (`schema.table`, default: all) with the DuckDB file."""
    described = pg_tables(pg_conn, tables)
    with duckdb.connect(str(duckdb_path), read_only=True) as ddb:
        ddb_all = duckdb_tables(ddb)
        reports = []
        used: set[tuple[str, str]] = set()
        for table in described:
            name = duckdb_table_for_stream(
                stream_name(table.schema, table.name), target_schema, schema_mapping
            )
            if name not in ddb_all:
                reports.append(
                    TableReport(
                        table.qualified,
                        ".".join(name),
                        pg_count=len(_pg_rows(pg_conn, table)),
                        problems=[f"no DuckDB table {'.'.join(name)}; it has {sorted(ddb_all)}"],
                    )
                )
                continue
            used.add(name)
            reports.append(_compare_table(pg_conn, ddb, table, name, ddb_all[name], max_diffs))
        extra = sorted(".".join(n) for n in ddb_all.keys() - used) if tables is None else []
    return Report(reports, extra)


def assert_mirrors(
    pg_conn: psycopg2.extensions.connection, duckdb_path: Path | str, **kwargs: Any
) -> Report:
    """`compare` and fail with the rendered report unless every table matches exactly."""
    report = compare(pg_conn, duckdb_path, **kwargs)
    if not report.ok:
        msg = "DuckDB does not mirror Postgres:\n" + report.render()
        raise AssertionError(msg)
    return report
