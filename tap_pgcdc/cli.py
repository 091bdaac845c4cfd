"""Command-line extras: one-line errors with exit status 1, config-error fixes, the --test report.

The SDK's command line ends a tap's own errors raised in its callbacks (--discover, --test,
--config) in a traceback, shows config validation errors without saying what to do, and would
read a state that is not an object as no state at all. The tap's hooks (tap.py) call in here.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import typing as t

import click
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.plugin_base import SingerCommand

from tap_pgcdc import preflight
from tap_pgcdc.errors import ConfigError, TapPgCdcError

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from tap_pgcdc.settings import Settings
    from tap_pgcdc.streams import PgCdcStream

# ctx.meta key: --test was given; `invoke` runs the preflight check instead of a sync.
PREFLIGHT = "tap_pgcdc.preflight"


class Command(SingerCommand):
    """The SDK's command line, with the tap's own errors as one line each, exit status 1.

    The SDK handles a ConfigValidationError in `invoke` only; callbacks (--discover, --test,
    --config) run before it, and the tap's errors would otherwise end in a traceback.
    """

    @classmethod
    def wrapping(cls, command: SingerCommand) -> Command:
        """The same command line (name, options, callback) as `command`, with our error handling."""
        return cls(
            name=command.name,
            callback=command.callback,
            params=command.params,
            context_settings=command.context_settings,
            help=command.help,
            logger=command.logger,
        )

    def main(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Run the command; the tap's errors become one log line each and exit status 1."""
        try:
            return super().main(*args, **kwargs)
        except TapPgCdcError as exc:
            self.logger.error("%s", " ".join(str(exc).split()))
        except ConfigValidationError as exc:
            for error in exc.errors:
                self.logger.error("%s", error)
            self.logger.error("Config validation failed")
        sys.exit(1)


def exit_on_signal(logger: logging.Logger, signum: int) -> t.NoReturn:
    """End the process after SIGINT or SIGTERM with status 128 + the signal's number.

    A run a signal ended did not finish its work (a snapshot may be half done): a scheduler
    must see a failure (130 for SIGINT, 143 for SIGTERM, as a shell reports them), not the
    success that exit status 0 would claim. Nothing is lost either way: every STATE already
    written is at a transaction boundary, after the records it covers, and the next run
    resumes from the last one the target stored.
    """
    name = signal.Signals(signum).name
    logger.warning(
        "Stopped by %s before the run finished: the last STATE written is where the next run "
        "resumes (exit status %d).",
        name,
        128 + signum,
    )
    sys.exit(128 + signum)


def unreadable_config(value: tuple[str, ...], exc: Exception) -> ConfigError:
    """The error for a --config file the SDK could not read."""
    msg = (
        f"Cannot read the settings given with --config {' '.join(value)}: "
        f"{str(exc).rstrip('.')}. Fix: "
        "pass a readable JSON file holding an object of settings, or ENV to read the "
        "TAP_PGCDC_* environment variables."
    )
    return ConfigError(msg)


def read_catalog(catalog: t.IO[str] | None) -> dict[str, t.Any] | None:
    """The --catalog file given to --test, parsed (the SDK reads it only for a sync)."""
    try:
        return None if catalog is None else t.cast("dict[str, t.Any]", json.loads(catalog.read()))
    except ValueError as exc:
        msg = f"The catalog given with --catalog is not valid JSON: {exc}. Fix: pass the output of --discover."
        raise ConfigError(msg) from None


def run_preflight(
    logger: logging.Logger,
    config: Mapping[str, t.Any],
    settings: Settings,
    selected_streams: Callable[[], list[PgCdcStream]],
    identity: dict[str, t.Any] | None,
) -> None:
    """Check everything a run needs, report every problem with its fix, change nothing.

    Exits with status 1 if there is any problem.
    """
    _log_report(logger, preflight.check(config, settings, selected_streams, identity))


def _log_report(logger: logging.Logger, report: preflight.Report) -> None:
    for note in report.notes:
        logger.info("Preflight: %s", note)
    for warning in report.warnings:
        logger.warning("Preflight warning: %s", warning)
    if report.problems:
        total = len(report.problems)
        for number, problem in enumerate(report.problems, 1):
            logger.error("Preflight problem %d of %d: %s", number, total, problem)
        logger.error(
            "Preflight found %d problem(s); nothing was changed. Fix them, then run "
            "tap-pgcdc --test again.",
            total,
        )
        sys.exit(1)
    logger.info("Preflight passed: a run can start.")


def explained(exc: ConfigValidationError, schema: dict[str, t.Any]) -> ConfigValidationError:
    """The SDK's validation error with the fix after each message and no secret value shown."""
    secrets = _secret_settings(schema)
    errors = [_explain_config_error(error, secrets) for error in exc.errors]
    return ConfigValidationError(str(exc), errors=errors, schema=exc.schema)


def _secret_settings(schema: dict[str, t.Any]) -> set[str]:
    """Names of the settings (at any depth) whose values must never be shown."""
    names: set[str] = set()
    for name, prop in schema.get("properties", {}).items():
        if prop.get("secret"):
            names.add(name)
        names |= _secret_settings(prop)
    return names


_FIXES = {
    "slot_name": "use 1 to 63 lower-case letters, digits and underscores, e.g. 'tap_pgcdc'",
    "sslmode": "use one of disable, allow, prefer, require, verify-ca, verify-full",
    "on_slot_lost": "use fail or resnapshot",
    "origin": "use any (every change) or none (PostgreSQL 16+: only changes made on this server)",
}


def _explain_config_error(error: str, secrets: set[str]) -> str:
    """One SDK validation error with what to do about it; a secret's value is never repeated."""
    match = re.search(r"in config((?:\['[^']*'\])+)$", error)
    path = re.findall(r"'([^']*)'", match.group(1)) if match else []
    required = re.match(r"'([^']+)' is a required property", error)
    if required:
        path = [*path, required.group(1)]
    setting = ".".join(path) or "the settings"
    if set(path) & secrets and not required:
        error = f"The {setting} setting has an invalid value (not shown: it is secret)"
    fix = _FIXES.get(path[-1] if path else "", "")
    if required:
        fix = f"set {setting} (meltano config set tap-pgcdc {setting} <value>, or TAP_PGCDC_{setting.upper()})"
    elif not fix:
        fix = f"correct {setting}; tap-pgcdc --about lists every setting and its allowed values"
    return f"{error}. Fix: {fix}."


def wants_preflight(ctx: click.Context | None) -> bool:
    """Whether --test asked for the preflight check in this invocation."""
    return ctx is not None and bool(ctx.meta.get(PREFLIGHT))
