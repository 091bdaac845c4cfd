"""Server-side filters for a run: each stream's column list and row filter, judged up front.

`plan_filters` reads the facts once and decides, before anything changes, what each LOG_BASED
stream's publication entry is to be (`replication.filters.Entry`), the WHERE its snapshot
applies, and which streams must be snapshotted again because their entry changed since their
bookmark; every refusal is a ConfigError with its fix. `record_filters` keeps each stream's
entry with its bookmark once the publication has it.

- Column lists (PostgreSQL 15+, create_publication): the selected columns plus what must always
  be published (`replication.filters.column_list`). Before 15, or with a publication the tap
  does not manage, every column travels and the tap leaves deselected ones out itself.
- Row filters (`row_filters`, PostgreSQL 15+): with create_publication the server parses each
  one in a trial that is rolled back (`filters_ops.trial_row_filters`); the printed form is
  what the publication and the snapshot use. Without it, the publication must already have the
  same filter (and no column list), which the snapshot then applies: the target gets exactly
  the rows whose changes are published.
"""

from __future__ import annotations

import dataclasses
import typing as t
from dataclasses import dataclass, field

from tap_pgcdc import resnapshot
from tap_pgcdc.checks import record_publication
from tap_pgcdc.errors import ConfigError, PrivilegeError
from tap_pgcdc.pg.quoting import quote_ident
from tap_pgcdc.replication.filters import (
    FILTERS_SINCE,
    NO_ENTRY,
    Entry,
    TableColumns,
    changes_since,
    column_list,
    kept_reasons,
    row_filter_problem,
    same_filter,
    statement_problem,
    version_problem,
)
from tap_pgcdc.replication.filters_ops import Trial, fetch_table_columns, trial_row_filters
from tap_pgcdc.state import FILTER_KEY, recorded_publication

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Mapping, Sequence

    import psycopg2.extensions

    from tap_pgcdc.replication.publication import PublicationFacts
    from tap_pgcdc.settings import Settings
    from tap_pgcdc.streams import PgCdcStream


@dataclass(frozen=True, slots=True)
class FilterPlan:
    """What a run's publication entries and snapshots are to be."""

    entries: dict[int, Entry] = field(default_factory=dict)  # table OID -> its entry
    wheres: dict[str, str] = field(default_factory=dict)  # stream -> its snapshot's WHERE
    changed: dict[str, str] = field(default_factory=dict)  # stream -> why it is re-snapshotted


def plan_filters(
    control: psycopg2.extensions.connection,
    settings: Settings,
    streams: Sequence[PgCdcStream],
    publication: PublicationFacts,
    logger: logging.Logger | None = None,
) -> FilterPlan:
    """Decide every LOG_BASED stream's entry; refuse a filter the server cannot apply safely.

    Raises:
        ConfigError: A row filter for a stream that is not LOG_BASED, before PostgreSQL 15,
            invalid, on a column outside the replica identity, or (without create_publication)
            not the publication's.
    """
    version = publication.server_version
    filters = dict(settings.row_filters)
    refuse_full_table(settings, streams)
    log_streams = [s for s in streams if s.is_log_based]
    filtered = [s for s in log_streams if s.name in filters]
    problem = version_problem([s.name for s in filtered], version)
    if problem is None:
        problem = next(
            (p for s in filtered if (p := statement_problem(s.name, filters[s.name]))), None
        )
    if problem is not None:
        raise ConfigError(problem)
    if version < FILTERS_SINCE:
        return FilterPlan()
    existing = publication.publication
    if existing is not None and existing.info.all_tables:
        # It publishes every table whole, and the tap leaves it so: no list, no filter.
        if filtered:
            msg = (
                f"row_filters is set for {', '.join(s.name for s in filtered)}, but publication "
                f"{publication.name!r} is FOR ALL TABLES, which publishes every row of every "
                "table and can carry no row filter. Nothing was changed. Fix: remove "
                "row_filters, or set publication_name to a new publication, which the tap "
                "creates for the selected tables with their filters (with on_slot_lost = "
                "resnapshot, streams read through the old one are then snapshotted again)."
            )
            raise ConfigError(msg)
        return FilterPlan()
    tables = fetch_table_columns(control, [s.table.oid for s in log_streams])
    if settings.create_publication:
        owned = publication.publication is not None and publication.publication.owned
        trials = trial_row_filters(
            control,
            {s.table.oid: (s.table.quoted_name, filters[s.name]) for s in filtered},
            publication.name if owned else None,
        )
        entries = _managed_entries(log_streams, tables, filters, trials, logger)
    else:
        entries = _existing_entries(log_streams, filters, publication)
    changed = {}
    for stream in log_streams:
        entry = entries.get(stream.table.oid, NO_ENTRY)
        table = tables.get(stream.table.oid)
        if stream.log_position is None or table is None:
            continue
        listable = [name for name in table.columns if name not in table.unlistable]
        why = changes_since(stream.bookmark.get(FILTER_KEY), entry, listable)
        if why is not None:
            changed[stream.name] = why
    wheres = {
        s.name: where for s in log_streams if (where := entries.get(s.table.oid, NO_ENTRY).where)
    }
    return FilterPlan(entries=entries, wheres=wheres, changed=changed)


def refuse_full_table(settings: Settings, streams: Sequence[PgCdcStream]) -> None:
    """A row filter is the publication's: a FULL_TABLE stream with one is an error.

    Raises:
        ConfigError: row_filters names a selected FULL_TABLE stream.
    """
    full = {s.name for s in streams if not s.is_log_based}
    other = sorted(name for name in settings.row_filters if name in full)
    if other:
        msg = (
            f"row_filters is set for {', '.join(other)}, which {'is' if len(other) == 1 else 'are'}"
            " not LOG_BASED: row filters are applied by the publication. Fix: remove them "
            "from row_filters, or set the stream's replication-method to LOG_BASED."
        )
        raise ConfigError(msg)


def _managed_entries(
    streams: Sequence[PgCdcStream],
    tables: Mapping[int, TableColumns],
    filters: dict[str, str],
    trials: Mapping[int, Trial],
    logger: logging.Logger | None,
) -> dict[int, Entry]:
    """The entries of a publication the tap manages: a column list and the parsed filter."""
    entries: dict[int, Entry] = {}
    for stream in streams:
        table = tables.get(stream.table.oid)
        if table is None:  # dropped meanwhile: the publication's judgement names it
            continue
        where = None
        trial = trials.get(stream.table.oid)
        if trial is not None:
            expression = filters[stream.name]
            if trial.privilege:
                msg = (
                    f"Cannot check row_filters for stream {stream.name} on {table.display}: "
                    f"{trial.error} Checking a row filter (and listing the table with it) needs "
                    "what managing the publication needs: the CREATE privilege on the database "
                    "and ownership of the table. Nothing was changed. Fix: run the tap as the "
                    "table's owner, or set create_publication = false and have the owner list "
                    "the table with this filter."
                )
                raise PrivilegeError(msg)
            if trial.error is not None:
                msg = (
                    f"row_filters for stream {stream.name} ({expression}) is not a row filter "
                    f"PostgreSQL accepts on {table.display}: {trial.error} Nothing was changed. "
                    "Fix: write a boolean SQL expression over the table's own columns, using "
                    "only immutable built-in operators and functions."
                )
                raise ConfigError(msg)
            problem = row_filter_problem(stream.name, table, expression, trial.referenced)
            if problem is not None:
                raise ConfigError(problem)
            where = trial.deparsed
        selected = set(stream.get_selected_schema().get("properties", {}))
        # The log's key (replica identity) and the key the target upserts by, if it differs.
        key = (*stream.table.key, *(stream.primary_keys or ()))
        columns = column_list(table, selected, key, FILTERS_SINCE)
        if columns is not None and logger is not None:
            kept = kept_reasons(table, selected, key)
            logger.info(
                "Stream %s: the publication sends only columns %s%s.",
                stream.name,
                ", ".join(columns),
                f" (deselected but kept: {', '.join(kept)})" if kept else "",
            )
        entry = Entry(columns=columns, where=where)
        if entry != NO_ENTRY:
            entries[stream.table.oid] = entry
    return entries


def _existing_entries(
    streams: Sequence[PgCdcStream], filters: dict[str, str], facts: PublicationFacts
) -> dict[int, Entry]:
    """A publication the tap does not manage: each row filter must already be its filter."""
    publication = facts.publication
    entries: dict[int, Entry] = {}
    if publication is None:  # the publication's judgement gives the SQL that creates it
        return entries
    for stream in streams:
        expression = filters.get(stream.name)
        if expression is None:
            continue
        name = quote_ident(facts.name)
        existing = publication.entry(stream.table.oid)
        if existing.where is None or not same_filter(expression, existing.where):
            has = f"has the filter ({existing.where})" if existing.where else "has no filter"
            msg = (
                f"row_filters for stream {stream.name} ({expression}) is not the row filter "
                f"of publication {facts.name!r} for {stream.table.quoted_name}, which {has}, "
                "and create_publication is false: the snapshot must keep exactly the rows whose "
                "changes are published. Fix: set row_filters for the stream to the "
                "publication's filter as PostgreSQL prints it, or have the publication's owner "
                f"run ALTER PUBLICATION {name} SET TABLE ... {stream.table.quoted_name} WHERE "
                f"({expression}) (listing its other tables too), or set create_publication = "
                "true."
            )
            raise ConfigError(msg)
        # A column list there stays a difference: the publication's judgement refuses it.
        entries[stream.table.oid] = Entry(where=existing.where)
    return entries


def prepare(
    control: psycopg2.extensions.connection,
    settings: Settings,
    streams: Sequence[PgCdcStream],
    publication: PublicationFacts,
    logger: logging.Logger,
) -> tuple[FilterPlan, PublicationFacts]:
    """Plan the filters (`plan_filters`), act on the plan's re-snapshots and WHEREs.

    Returns:
        The plan, and the publication's facts with the entries it is to have.
    """
    plan = plan_filters(control, settings, streams, publication, logger)
    log_streams = [s for s in streams if s.is_log_based]
    for name, why in plan.changed.items():
        # The log is intact but the target's rows were chosen by another filter (or lack a
        # column now published): the snapshot, after an ACTIVATE_VERSION, replaces them.
        logger.warning(
            "Stream %s: %s since its bookmark, so the rows the target holds are not the ones "
            "it now publishes: snapshotting it again (after an ACTIVATE_VERSION).",
            name,
            why,
        )
    resnapshot.mark(log_streams, plan.changed)
    for stream in log_streams:
        stream.row_filter = plan.wheres.get(stream.name)
    return plan, dataclasses.replace(publication, entries=plan.entries)


def record(
    control: psycopg2.extensions.connection,
    name: str,
    plan: FilterPlan,
    streams: Sequence[PgCdcStream],
) -> bool:
    """Keep with each bookmark its publication membership and entry, once the publication has
    them (`checks.record_publication`).

    Returns:
        Whether a bookmark with a position now records another membership: the tap changed
        its table's entry (SET TABLE creates a new catalog row for it). The caller writes a
        STATE at once, so that the next run does not take the new row for a gap in the
        publication (there was none: the change was one transaction).
    """
    before = {s.name: recorded_publication(s.bookmark) for s in streams}
    record_publication(control, name, streams)
    moved = False
    for stream in streams:
        entry = plan.entries.get(stream.table.oid, NO_ENTRY)
        if entry == NO_ENTRY:
            stream.bookmark.pop(FILTER_KEY, None)
        else:
            stream.bookmark[FILTER_KEY] = entry.record()
        now = recorded_publication(stream.bookmark)
        previous = before[stream.name]
        if stream.log_position is not None and previous is not None and previous != now:
            moved = True
    return moved
