"""What every command module shares: option types and lazily built settings and client."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import click

from secmon.config import DEFAULT_TIMEZONE, Settings, load_settings, parse_duration
from secmon.errors import ExitCode
from secmon.store.client import connect


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
        return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(DEFAULT_TIMEZONE))


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj["config_path"])
    return obj["settings"]  # type: ignore[no-any-return]


def es_of(ctx: click.Context) -> Any:
    obj = ctx.ensure_object(dict)
    if "es" not in obj:
        obj["es"] = connect(settings_of(ctx).elasticsearch)
    return obj["es"]



class Exit(Exception):
    """Raised by a command to end with a documented exit code without an error message."""

    def __init__(self, code: ExitCode):
        super().__init__(code.name)
        self.code = code
