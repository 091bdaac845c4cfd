"""The tap: the Singer SDK's hooks, each delegating to the module that does the work.

Settings and their schema: settings.py. Command-line extras (--test, config-error fixes, exit
codes): cli.py. The state's format and checks: state.py. The order of work of a run: run.py.
Discovery: connector.py. The stream class: streams.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import typing as t

import click
from singer_sdk.exceptions import (
    AbortedSyncFailedException,
    AbortedSyncPausedException,
    ConfigValidationError,
)
from singer_sdk.sql import SQLTap
from singer_sdk.tap_base import CliTestOptionValue

from tap_pgcdc import cli, logical_messages, report, run, sdk
from tap_pgcdc import connector as pgconn
from tap_pgcdc.checks import bind_tables
from tap_pgcdc.output.messages import MESSAGES_STREAM
from tap_pgcdc.output.writer import PgCdcWriter
from tap_pgcdc.settings import CONFIG_SCHEMA, Settings
from tap_pgcdc.snapshot.session import snapshot_connection
from tap_pgcdc.state import check_input_state, checked_state_text
from tap_pgcdc.streams import PgCdcStream

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import FrameType

    from singer_sdk.streams.core import Stream


class _StartupNoise(logging.Filter):
    """Drops the SDK's "Skipping parse of env var settings..." note.

    The SDK writes it at INFO in every process that reads its settings from a file, so a
    `meltano run` (discovery, then the run) shows it twice while it says nothing to act on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Skipping parse of env var settings..."


logging.getLogger("tap-pgcdc").addFilter(_StartupNoise())


class TapPgCdc(SQLTap):
    """Singer tap for PostgreSQL change data capture over pgoutput logical replication."""

    name = "tap-pgcdc"
    default_stream_class = PgCdcStream
    message_writer_class = PgCdcWriter
    config_jsonschema = CONFIG_SCHEMA

    def __init__(self, *args: t.Any, catalog: t.Any = None, **kwargs: t.Any) -> None:
        """Create the tap; the input catalog is also kept as given (see `catalog_dict`)."""
        self._raw_catalog = _read_raw_catalog(catalog)
        self._discovered: dict[str, t.Any] | None = None
        self._input_identity: dict[str, t.Any] | None = None
        self._report: report.RunReport | None = None
        super().__init__(*args, catalog=catalog, **kwargs)
        if self.input_catalog is not None:
            pgconn.keep_required_properties(self.input_catalog)

    # --- discovery ----------------------------------------------------------------------

    @property
    def catalog_dict(self) -> dict[str, t.Any]:
        """The input catalog (with the root metadata the SDK drops), else a discovered one."""
        if self.input_catalog:
            return _with_raw_metadata(self.input_catalog.to_dict(), self._raw_catalog)
        if self._discovered is None:
            connector = t.cast("pgconn.PgCdcConnector", self.tap_connector)
            self._discovered = {"streams": connector.discover_catalog_entries()}
        return self._discovered

    def discover_streams(self) -> list[Stream]:
        """A stream per catalog entry: the messages stream's own class, else a table's."""
        return [
            logical_messages.MessagesStream(self)
            if entry.get("tap_stream_id") == MESSAGES_STREAM
            else PgCdcStream(tap=self, catalog_entry=entry, connector=self.tap_connector)
            for entry in self.catalog_dict["streams"]
        ]

    # --- command line -----------------------------------------------------------------------

    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's command, reporting the tap's own errors as one line instead of a traceback."""
        return cli.Command.wrapping(t.cast("t.Any", super().get_singer_command()))

    @classmethod
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]) -> t.Any:
        """Read --config; an unreadable file is one error line that names the fix."""
        try:
            return super().cb_config(ctx, param, value)
        except (OSError, ValueError, TypeError) as exc:
            raise cli.unreadable_config(value, exc) from None

    @classmethod
    def cb_test(cls, ctx: click.Context, param: click.Option, value: str) -> None:
        """`--test` runs the preflight check, in `invoke` once --catalog and --state are read."""
        if value == CliTestOptionValue.All.value:
            ctx.meta[cli.PREFLIGHT] = True
            return
        super().cb_test(ctx, param, value)

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: t.Any = None,
        state: t.IO[str] | None = None,
        catalog: t.IO[str] | None = None,
    ) -> None:
        """Run the tap (or, with --test, the preflight check); a bad state file is an error."""
        state_text = None if state is None else checked_state_text(state.read())
        if cli.wants_preflight(click.get_current_context(silent=True)) and not about:
            cls._preflight(config, state_text, catalog)
            return
        super().invoke(
            about=about,
            about_format=about_format,
            config=config,
            state=None if state_text is None else io.StringIO(state_text),
            catalog=catalog,
        )

    @classmethod
    def _preflight(cls, config: t.Any, state_text: str | None, catalog: t.IO[str] | None) -> None:
        """`--test`: the preflight check over the same settings, catalog and state as a run."""
        cls.print_version(print_fn=cls.logger.info)
        catalog_dict = cli.read_catalog(catalog)
        tap = cls(
            config=config.config,
            state=None if state_text is None else json.loads(state_text),
            catalog=catalog_dict,
            parse_env_config=config.parse_env,
            validate_config=True,
        )
        cli.run_preflight(
            cls.logger,
            tap.config,
            tap.settings,
            lambda: [s for s in tap.streams.values() if s.selected and isinstance(s, PgCdcStream)],
            tap.input_identity,
        )

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's validation, with the fix after each error and secret values never shown."""
        try:
            return super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as exc:
            raise cli.explained(exc, self.config_jsonschema) from None

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """On SIGTERM or SIGINT, stop with the STATE already written as the last word.

        The SDK's Tap writes its live state here, but ours can be ahead of the records written
        (a TRUNCATE's table version is recorded when it is read, mid-transaction). Every STATE
        already written is at a transaction boundary, after the records it covers, so the
        target keeps the last of them and the next run resumes there. The exit status is
        128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports a
        process a signal ended: the run did not finish, and a scheduler must not record it
        as a success.
        """
        if self._report is not None:
            self._report.stopped_by(signal.Signals(signum).name)
        cli.exit_on_signal(self.logger, signum)

    # --- state ----------------------------------------------------------------------------

    def load_state(self, state: dict[str, t.Any]) -> None:
        """Validate the input state before the SDK merges it; bad state is an error, not a reset."""
        identity = check_input_state(state)
        if identity is not None:
            self._input_identity = identity
        super().load_state(state)

    @property
    def input_identity(self) -> dict[str, t.Any] | None:
        """The slot and cluster the input state's positions belong to (None: not recorded)."""
        return self._input_identity

    @property
    def settings(self) -> Settings:
        """The settings, parsed."""
        return Settings.from_config(self.config)

    # --- the run --------------------------------------------------------------------------

    def sync_all(self) -> None:  # type: ignore[misc]
        """Snapshot what needs it, then read the slot once for every LOG_BASED stream.

        The SDK's sync_all runs streams one after another; change capture needs one reader for
        all streams, after their snapshots, so the order of work is ours (run.py).
        """
        settings = self.settings
        self._report = run_report = report.RunReport(settings.slot_name, settings.publication_name)
        try:
            self._sync_all(settings, run_report)
        except BaseException as exc:
            run_report.failed(exc)
            raise
        finally:
            # However the run ends (a signal's exit included): its report, once.
            self._report = None
            run_report.write(settings.run_report_path)

    def _sync_all(self, settings: Settings, run_report: report.RunReport) -> None:
        sdk.reset_progress_markers(self)
        chosen = [s for s in self.streams.values() if s.selected]
        streams = [s for s in chosen if isinstance(s, PgCdcStream)]
        messages = logical_messages.active(chosen, settings, self.logger)
        for selected in [*streams, *([messages] if messages else [])]:
            run_report.stream(selected.name, selected.replication_method)
        if not streams and messages is None:
            self.logger.warning("No stream is selected: nothing to do.")
            run_report.reason = report.NO_STREAMS
            return
        run.Run(
            config=self.config,
            settings=settings,
            state=t.cast("dict[str, t.Any]", self.state),
            identity=self._input_identity,
            write_state=self._write_state,
            logger=self.logger,
            run_report=run_report,
            messages=messages,
        ).execute(streams)
        for stream in self.streams.values():
            stream.log_sync_costs()

    def run_sync_dry_run(  # type: ignore[misc]  # the SDK's version needs our table binding
        self,
        dry_run_record_limit: int | None = 1,
        streams: t.Iterable[Stream] | None = None,
    ) -> bool:
        """Read a few rows of each stream, read-only: no slot, no publication, no state change."""
        chosen = [s for s in (streams or self.streams.values()) if isinstance(s, PgCdcStream)]
        _dry_run(self.config, chosen, dry_run_record_limit)
        return True

    def _write_state(self) -> None:
        self.state_writer.write_state(self.state)


def _read_raw_catalog(catalog: t.Any) -> dict[str, t.Any] | None:
    """The input catalog as given (a dict or a JSON file), before the SDK's model parses it."""
    if isinstance(catalog, dict):
        return catalog
    if isinstance(catalog, (str, os.PathLike)):
        try:
            with open(catalog, encoding="utf-8") as handle:
                raw = json.load(handle)
        except (OSError, ValueError):
            return None  # the SDK reports an unreadable catalog itself
        return raw if isinstance(raw, dict) else None
    return None


def _with_raw_metadata(catalog: dict[str, t.Any], raw: dict[str, t.Any] | None) -> dict[str, t.Any]:
    """Restore metadata keys the SDK's model drops, e.g. `replication-method`, `sql-datatype`.

    Meltano records a user's choice of replication method in the standard `replication-method`
    metadata key; the SDK's StreamMetadata has no such field and loses it on parsing. Discovery
    records each column's type in `sql-datatype` (connector.py), which the SDK's Metadata drops.
    """
    if not raw:
        return catalog
    raw_items: dict[tuple[str, tuple[str, ...]], dict[str, t.Any]] = {}
    for stream in raw.get("streams", []) if isinstance(raw.get("streams"), list) else []:
        if not isinstance(stream, dict):
            continue
        for item in stream.get("metadata", []) or []:
            if isinstance(item, dict) and isinstance(item.get("breadcrumb"), list):
                crumb = tuple(str(part) for part in item["breadcrumb"])
                raw_items[str(stream.get("tap_stream_id")), crumb] = item.get("metadata") or {}
    for stream in catalog.get("streams", []):
        for item in stream.get("metadata", []):
            extra = raw_items.get((stream.get("tap_stream_id"), tuple(item["breadcrumb"])), {})
            for key, value in extra.items():
                item["metadata"].setdefault(key, value)
    return catalog


def _dry_run(
    config: Mapping[str, t.Any], streams: Sequence[PgCdcStream], limit: int | None
) -> None:
    """Read a few rows of each stream, read-only: no slot, no publication, no state change."""
    for stream in streams:
        stream.ABORT_AT_RECORD_COUNT = limit
        stream.selected = True
    with snapshot_connection(config) as conn:
        bind_tables(conn, streams)
        for stream in streams:
            stream.snapshot_conn = conn
            with contextlib.suppress(AbortedSyncFailedException, AbortedSyncPausedException):
                stream.sync()
            stream.snapshot_conn = None
