"""Relation plans: what each pgoutput relation's tuples mean as records of one stream.

A Relation message describes a table's published columns; later change messages refer to it by
OID and carry tuple data in the same column order. Tuple values are None (SQL NULL),
UNCHANGED_TOAST (a large value the server did not resend because it did not change) or text.
This module turns them into records without ever writing NULL for a value that was not sent:
those columns are reported as missing so the change writer can fill them in.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from tap_pgcdc.output.jsontext import Fragment, fragment
from tap_pgcdc.replication.messages import UNCHANGED_TOAST, Relation

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tap_pgcdc.replication.messages import TupleData

    Converter = Callable[[str], t.Any]


@dataclass(frozen=True, slots=True, eq=False)
class RelationPlan:
    """How to turn one relation's tuples into records of one stream.

    Resolved once per Relation message, so per-row work is a loop over prepared converters.
    Compared and hashed by identity: writers keep per-plan layouts keyed by the plan.
    """

    relation: Relation
    names: tuple[str, ...]  # column names, in tuple-data order
    converters: tuple[Converter, ...]  # text -> value, per column
    key_positions: tuple[int, ...]  # the stream's primary key columns, as tuple positions
    identity_positions: tuple[int, ...]  # columns the server flags as replica identity
    not_sent: tuple[str, ...]  # stream columns the log never carries (generated columns)
    fragments: tuple[Fragment | None, ...]  # text -> JSON of the converted value (None: the text)

    @classmethod
    def build(
        cls,
        relation: Relation,
        converters: Sequence[Converter],
        primary_key: Sequence[str],
        not_sent: Sequence[str] = (),
    ) -> RelationPlan:
        """The plan of one Relation message for a stream.

        Args:
            relation: The Relation message (its columns in tuple-data order).
            converters: text -> value, one per column of `relation`, in the same order.
            primary_key: The stream's primary key column names.
            not_sent: Stream columns the log never carries (read by key instead).
        """
        names = tuple(col.name for col in relation.columns)
        position = {name: i for i, name in enumerate(names)}
        return cls(
            relation=relation,
            names=names,
            converters=tuple(converters),
            key_positions=tuple(position[k] for k in primary_key if k in position),
            identity_positions=tuple(i for i, col in enumerate(relation.columns) if col.is_key),
            not_sent=tuple(not_sent),
            fragments=tuple(fragment(convert) for convert in converters),
        )

    def row(
        self, new: TupleData, old: TupleData | None = None
    ) -> tuple[dict[str, t.Any], list[str]]:
        """The record of a new row, and the columns whose values were not sent.

        An unchanged TOAST value is taken from the old row when the server sent a full old row
        (REPLICA IDENTITY FULL carries it inline); otherwise it is reported missing.
        """
        record: dict[str, t.Any] = {}
        missing: list[str] = []
        for i, value in enumerate(new):
            name = self.names[i]
            if value is None:
                record[name] = None
            elif value is UNCHANGED_TOAST:
                previous = old[i] if old is not None else UNCHANGED_TOAST
                if previous is UNCHANGED_TOAST:
                    missing.append(name)
                elif previous is None:
                    record[name] = None
                else:
                    record[name] = self.converters[i](t.cast("str", previous))
            else:
                record[name] = self.converters[i](t.cast("str", value))
        missing.extend(self.not_sent)
        return record, missing

    def old_row(self, old: TupleData, kind: str) -> dict[str, t.Any]:
        """The record of an old row: only the values the old tuple really carries.

        A 'K' tuple carries the replica identity columns and sends NULL for the others; those
        NULLs are placeholders, not values, so they are left out.
        """
        positions: Sequence[int] = (
            self.identity_positions if kind == "K" else range(len(self.names))
        )
        record: dict[str, t.Any] = {}
        for i in positions:
            value = old[i]
            if value is UNCHANGED_TOAST:
                continue
            record[self.names[i]] = (
                None if value is None else self.converters[i](t.cast("str", value))
            )
        return record

    def key_text(self, tup: TupleData) -> tuple[t.Any, ...]:
        """The primary key's raw values in a tuple (for comparing old and new keys)."""
        return tuple(tup[i] for i in self.key_positions)
