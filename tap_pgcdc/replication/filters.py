"""Server-side filters (PostgreSQL 15+): a publication entry's column list and row filter.

Pure decisions over facts (`filters_ops` reads them): which columns a managed publication must
publish for a stream, whether a row filter is one the server can apply without breaking the
application's own writes, and the SQL of a table's entry. No I/O here.

Two rules of PostgreSQL 15+ shape them. On a publication that publishes UPDATE and DELETE (the
tap's always does), (1) a column list must cover the table's replica identity, and (2) a row
filter may reference only replica-identity columns: otherwise the server refuses the
application's UPDATE or DELETE on that table at execution ("column list used by the publication
does not cover the replica identity", "column used in the publication WHERE expression is not
part of the replica identity"). Under REPLICA IDENTITY FULL every column is replica identity: a
filter may use any column, and no column list can leave one out.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from tap_pgcdc.pg.quoting import quote_ident

if t.TYPE_CHECKING:
    from collections.abc import Collection, Sequence

FILTERS_SINCE = 150000  # column lists and row filters on publications


@dataclass(frozen=True, slots=True)
class Leaf:
    """A table whose UPDATEs and DELETEs the server checks: the selected table, or each leaf
    partition of a partitioned one (the leaf's replica identity is what is checked)."""

    name: str  # schema.name, for messages
    sql: str  # "schema"."name", for the fix
    full: bool  # REPLICA IDENTITY FULL: every column is replica identity
    identity: frozenset[str]  # its replica identity's columns (empty under FULL or NOTHING)


@dataclass(frozen=True, slots=True)
class TableColumns:
    """A selected table's columns as a column list sees them."""

    oid: int
    display: str  # schema.name
    columns: tuple[str, ...]  # by attnum
    # Columns no column list may name: generated ones before PostgreSQL 18 (never published;
    # the tap reads them by key), virtual generated ones on 18.
    unlistable: frozenset[str]
    leaves: tuple[Leaf, ...]


@dataclass(frozen=True, slots=True)
class Entry:
    """A table's entry in a publication beyond its name: a column list and a row filter."""

    columns: tuple[str, ...] | None = None  # None: every column
    where: str | None = None  # the filter as the server prints it (pg_get_expr); None: none

    def sql(self) -> str:
        """The entry's text after the table's name in FOR TABLE / SET TABLE."""
        text = ""
        if self.columns is not None:
            text += f" ({', '.join(quote_ident(name) for name in self.columns)})"
        if self.where is not None:
            text += f" WHERE ({self.where})"
        return text

    def record(self) -> dict[str, t.Any]:
        """What a bookmark keeps of it (see `changes_since`)."""
        return {
            "columns": None if self.columns is None else list(self.columns),
            "where": self.where,
        }


NO_ENTRY = Entry()


def column_list(
    table: TableColumns, selected: Collection[str], key: Sequence[str], version: int
) -> tuple[str, ...] | None:
    """The column list of a managed publication's entry for `table`; None: every column.

    Kept always, whether selected or not: the stream's key (a delete's record and chunked
    snapshots need it) and every leaf's replica-identity columns (rule 1 above). No list at all
    before PostgreSQL 15, under REPLICA IDENTITY FULL (on the table or any leaf partition), or
    when the list would hold every column anyway.
    """
    if version < FILTERS_SINCE or any(leaf.full for leaf in table.leaves):
        return None
    needed = set(selected) | set(key)
    for leaf in table.leaves:
        needed |= leaf.identity
    listable = [name for name in table.columns if name not in table.unlistable]
    kept = tuple(name for name in listable if name in needed)
    return None if len(kept) == len(listable) else kept


def kept_reasons(table: TableColumns, selected: Collection[str], key: Sequence[str]) -> list[str]:
    """Why each deselected column that the column list keeps is kept (for the log)."""
    reasons = []
    for name in table.columns:
        if name in selected or name in table.unlistable:
            continue
        if name in key:
            reasons.append(f"{name} (the stream's key)")
        elif any(name in leaf.identity for leaf in table.leaves):
            reasons.append(f"{name} (replica identity)")
    return reasons


def row_filter_problem(
    stream: str, table: TableColumns, expression: str, referenced: Collection[str]
) -> str | None:
    """Why the server would refuse the application's UPDATEs and DELETEs under this filter.

    Rule 2 above, checked for every leaf: a filter column outside a leaf's replica identity
    (FULL covers every column). None if the filter is safe.
    """
    for leaf in table.leaves:
        if leaf.full:
            continue
        outside = sorted(set(referenced) - leaf.identity)
        if not outside:
            continue
        identity = ", ".join(sorted(leaf.identity)) or "none"
        return (
            f"row_filters for stream {stream} ({expression}) uses {', '.join(outside)}, which "
            f"{'is' if len(outside) == 1 else 'are'} not part of the replica identity of "
            f"{leaf.name} (its replica identity columns: {identity}): PostgreSQL would then "
            f"refuse every UPDATE and DELETE on {leaf.name} while the publication lists it "
            '("column used in the publication WHERE expression is not part of the replica '
            'identity"). Nothing was changed. Fix: filter on replica identity (key) columns '
            f"only ({identity}), or make every column replica identity with ALTER TABLE "
            f"{leaf.sql} REPLICA IDENTITY FULL;"
        )
    return None


def statement_problem(stream: str, expression: str) -> str | None:
    """A filter is one expression: a `;` outside quotes would end the statement it is put in."""
    quote = None
    for char in expression:
        if quote is not None:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ";":
            return (
                f"row_filters for stream {stream} contains ';' ({expression}): a row filter is "
                "one SQL boolean expression. Nothing was changed. Fix: remove the ';'."
            )
    return None


def version_problem(streams: Sequence[str], version: int) -> str | None:
    """Row filters need PostgreSQL 15+; the tap does not imitate them client-side."""
    if not streams or version >= FILTERS_SINCE:
        return None
    return (
        f"row_filters is set for {', '.join(streams)}, but PostgreSQL {version // 10000} "
        "publications have no row filters (PostgreSQL 15 has), and the tap does not filter "
        "changes itself. Fix: remove row_filters, or upgrade the server to PostgreSQL 15+."
    )


def same_filter(setting: str, deparsed: str) -> bool:
    """Whether a row_filters expression is the publication's filter as the server prints it.

    Without create_publication the tap cannot have the server parse the setting (that needs
    the right to create a publication), so the setting must be the printed text itself,
    outer parentheses and spacing aside.
    """

    def bare(text: str) -> str:
        text = " ".join(text.split())
        while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
            text = text[1:-1].strip()
        return text

    return bare(setting) == bare(deparsed)


def _balanced(text: str) -> bool:
    depth = 0
    quoted = False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def changes_since(recorded: object, wanted: Entry, columns: Sequence[str]) -> str | None:
    """Why a stream's target rows are wrong after its entry changes from `recorded`; None: not.

    Args:
        recorded: The entry its bookmark kept (`Entry.record`), or None: a bookmark from before
            filters (every column, no filter).
        wanted: The entry the publication gets now.
        columns: The table's listable columns now (what `columns = None` publishes).

    A filter added, removed or changed changes which rows belong in the target. A column list
    that now publishes a column it did not means the changes in the slot before the change
    lack that column. Both are re-snapshotted once; a narrower list is not (the tap leaves
    deselected columns out itself).
    """
    before = recorded if isinstance(recorded, dict) else {}
    where = before.get("where")
    if where != wanted.where:
        if where is None:
            return f"row filter ({wanted.where}) added"
        if wanted.where is None:
            return f"row filter ({where}) removed"
        return f"row filter changed from ({where}) to ({wanted.where})"
    listed = before.get("columns")
    if listed is None:
        return None
    now = wanted.columns if wanted.columns is not None else tuple(columns)
    added = [name for name in now if name not in listed]
    if added:
        return f"column list now publishes {', '.join(added)}"
    return None
