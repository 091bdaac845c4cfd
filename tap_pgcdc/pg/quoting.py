"""SQL identifiers and literals, quoted as Postgres' quote_ident and quote_literal do."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """`name` as a double-quoted identifier (always quoted: case and keywords are kept)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """`value` as a standard-conforming string literal."""
    return "'" + value.replace("'", "''") + "'"


def pct(sql: str) -> str:
    """`sql` with `%` doubled, for statements that also carry `%s` parameters (psycopg2)."""
    return sql.replace("%", "%%")
