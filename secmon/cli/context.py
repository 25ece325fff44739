"""What every command module shares: option types and lazily built settings and client."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from secmon.errors import ExitCode
from secmon.types import DEFAULT_TIMEZONE, parse_duration

if TYPE_CHECKING:
    from secmon.config import Settings


EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)


class When(click.ParamType):
    """An ISO 8601 time; without an offset it is local time in Asia/Ho_Chi_Minh."""

    name = "TIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not a time like 2005-06-14 or 2005-06-14T15:16:01+07:00", param, ctx)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(DEFAULT_TIMEZONE))
        try:  # windows reach back from a time (lookbacks, correlation spans): keep far from datetime's edges
            inside = EARLIEST <= moment.astimezone(timezone.utc) < LATEST
        except OverflowError:  # 0001-01-01 in a zone east of UTC
            inside = False
        if not inside:
            self.fail(f"{value!r} is outside the times secmon handles ({EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d})",
                      param, ctx)
        return moment


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def agency_option(required: bool = False, help: str = "Agency id from the config.") -> Any:
    """`--agency/-a`, checked against the config's agencies when the command line is read ('' is no agency)."""
    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        known = [a.id for a in settings_of(ctx).agencies]
        if value not in known:
            raise click.BadParameter(f"unknown agency {value!r}; agencies in the config: "
                                     f"{', '.join(known) or 'none configured'}")
        return value
    return click.option("--agency", "-a", required=required, callback=check, help=help)


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        from secmon.config import load_settings  # imported when a command needs the config

        obj["settings"] = load_settings(obj["config_path"])
    return obj["settings"]  # type: ignore[no-any-return]


def es_of(ctx: click.Context) -> Any:
    obj = ctx.ensure_object(dict)
    if "es" not in obj:
        from secmon.store.client import connect  # the Elasticsearch client: only commands that talk to it

        obj["es"] = connect(settings_of(ctx).elasticsearch)
    return obj["es"]



class Exit(Exception):
    """Raised by a command to end with a documented exit code without an error message."""

    def __init__(self, code: ExitCode):
        super().__init__(code.name)
        self.code = code
