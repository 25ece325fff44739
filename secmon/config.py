"""secmon.yml -> typed, validated settings, once, at start-up.

Every section is a frozen dataclass; `_build` checks keys and types against
the dataclass fields, so the file format and the code cannot drift apart.
Secrets never live in the file: it names environment variables that hold them.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from secmon.errors import ConfigError, InputError
from secmon.types import AGENCY_ID, DEFAULT_TIMEZONE, parse_duration
from secmon.yamlio import Located, load_file

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass(frozen=True)
class ElasticsearchSettings:
    hosts: tuple[str, ...] = ("http://127.0.0.1:9200",)
    index_prefix: str = "secmon"
    api_key_env: str = ""  # name of the env var holding an API key
    username_env: str = ""
    password_env: str = ""
    ca_certs: str = ""
    request_timeout: int = 30

    def credentials(self) -> dict[str, Any]:
        """Client auth arguments, read from the environment now."""
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ConfigError(f"elasticsearch.api_key_env names {self.api_key_env}, which is not set")
            return {"api_key": key}
        if self.username_env:
            user, password = os.environ.get(self.username_env), os.environ.get(self.password_env or "")
            if not user or not password:
                raise ConfigError(
                    f"elasticsearch.username_env/password_env name {self.username_env}/{self.password_env}, "
                    "which must both be set"
                )
            return {"basic_auth": (user, password)}
        return {}


@dataclass(frozen=True)
class Agency:
    id: str
    name: str
    language: Literal["vi", "en"] = "vi"
    timezone: str = DEFAULT_TIMEZONE
    recipients: tuple[str, ...] = ()
    min_severity: Literal["informational", "low", "medium", "high", "critical"] = "low"  # floor for its emails
    retention: str = "365d"  # event indices older than this are deleted by the retention job
    future_skew: str = "1d"  # collect stores no event older than `retention` or further ahead than this


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "secmon@localhost"
    starttls: bool = False
    ssl: bool = False
    username_env: str = ""
    password_env: str = ""
    timeout: int = 10
    # SMTP AUTH over a clear connection gives the password away: refused unless this says so.
    allow_plaintext_auth: bool = False
    # Kept for old configs; the per-recipient hourly cap (alerts.hourly_cap) replaced it.
    digest_over: int = 5


@dataclass(frozen=True)
class Route:
    """A centre-wide route: these recipients get every incident of the named agencies at or above a severity."""

    name: str
    recipients: tuple[str, ...]
    min_severity: Literal["informational", "low", "medium", "high", "critical"] = "high"
    agencies: tuple[str, ...] = ("*",)
    language: Literal["vi", "en"] = "vi"
    timezone: str = DEFAULT_TIMEZONE


@dataclass(frozen=True)
class AlertSettings:
    max_age: str = "2d"  # retried with exponential backoff until this old, then `failed`
    retry_base: str = "1m"  # first retry after this, doubling each time
    retry_max: str = "1h"  # the longest wait between two attempts
    claim_timeout: str = "5m"  # a `sending` claim older than this was abandoned (a crash): sent again
    hourly_cap: int = 20  # per recipient; above it, one overflow digest for the rest of the hour
    daily_digest: str = "08:00"  # agency local time of the daily digest ("" for none)
    templates: str = ""  # a folder with vi/ and en/ templates overriding the built-in ones
    kibana_url: str = ""  # base URL for links to incidents in emails ("" for no link)
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class IncidentSettings:
    quiet_period: str = "1h"  # a group's activity after this long without any folds into a new incident
    renotify_interval: str = ""  # an open incident still growing is told again after this ("" for never)


@dataclass(frozen=True)
class ScheduleSettings:
    scan_interval: str = "5m"
    lookback: str = "15m"  # where the first scheduled scan starts (no watermark yet): now - lookback
    ingest_delay: str = "1m"  # scan events ingested up to now - ingest_delay (in-flight bulks settle)
    max_chunk: str = "1h"  # catching up after downtime: at most this much ingest time per scan
    outbox_interval: str = "1m"
    retrain_interval: str = "1d"
    retention_interval: str = "1d"
    lease: str = "1m"  # one active scheduler: a standby takes over this long after the holder dies


@dataclass(frozen=True)
class Settings:
    elasticsearch: ElasticsearchSettings = field(default_factory=ElasticsearchSettings)
    agencies: tuple[Agency, ...] = ()
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    operator: str = ""  # who runs secmon, for the audit trail ("" for the OS account)
    rules: tuple[str, ...] = ("rules",)
    pipelines: tuple[str, ...] = ("pipelines",)
    base_dir: str = "."  # relative paths above are resolved against the config's folder

    def agency(self, agency_id: str) -> Agency:
        for agency in self.agencies:
            if agency.id == agency_id:
                return agency
        known = ", ".join(a.id for a in self.agencies) or "none configured"
        raise ConfigError(f"unknown agency {agency_id!r}", hint=f"agencies in the config: {known}")

    def resolve(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else Path(self.base_dir) / path


# --- validation ---------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", bool: "true or false"}.get(tp, str(tp))


def _dotted(at: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in at).lstrip(".")


def _convert(value: Any, tp: Any, doc: Located, at: tuple[str | int, ...]) -> Any:
    origin = typing.get_origin(tp)
    name = _dotted(at)
    wrong = ConfigError(
        f"{name}: expected {_type_name(tp)}, found {value!r}", location=doc.loc(*at)
    )
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, doc, at)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, list):
            raise wrong
        (item_tp, _) = typing.get_args(tp)
        return tuple(_convert(v, item_tp, doc, at + (i,)) for i, v in enumerate(value))
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise wrong
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise wrong
        return str(value)
    raise TypeError(f"unsupported settings type {tp}")


def _build(cls: type, data: Any, doc: Located, at: tuple[str | int, ...]) -> Any:
    section = _dotted(at) or "the top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{section}: expected a mapping of keys, found {data!r}", location=doc.loc(*at))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "base_dir"}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(sorted(fields))}"
            raise ConfigError(f"unknown key {key!r} in {section}", location=doc.loc(*at, key), hint=hint)
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        if name in data:
            values[name] = _convert(data[name], hints[name], doc, at + (name,))
        elif fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{section}: missing required key {name!r}", location=doc.loc(*at))
    return cls(**values)


def _check(settings: Settings, doc: Located) -> None:
    seen: set[str] = set()
    for i, agency in enumerate(settings.agencies):
        if not AGENCY_ID.match(agency.id):
            raise ConfigError(
                f"agencies[{i}].id {agency.id!r} is not a valid agency id",
                location=doc.loc("agencies", i, "id"),
                hint="lower-case letters, digits, '-' and '_', at most 63, used in index names",
            )
        if agency.id in seen:
            raise ConfigError(f"agency id {agency.id!r} appears twice", location=doc.loc("agencies", i, "id"))
        seen.add(agency.id)
        try:
            ZoneInfo(agency.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"agencies[{i}].timezone {agency.timezone!r} is not an IANA time zone",
                location=doc.loc("agencies", i, "timezone"),
                hint=f"for example {DEFAULT_TIMEZONE}",
            ) from None
        for j, address in enumerate(agency.recipients):
            if not _EMAIL.match(address):
                raise ConfigError(
                    f"agencies[{i}].recipients[{j}] {address!r} is not an email address",
                    location=doc.loc("agencies", i, "recipients", j),
                )
    durations = [("schedule", k) for k in ("scan_interval", "lookback", "ingest_delay", "max_chunk",
                                           "outbox_interval", "retrain_interval", "retention_interval", "lease")]
    durations += [("alerts", k) for k in ("max_age", "retry_base", "retry_max", "claim_timeout")]
    durations += [("incidents", "quiet_period")]
    if settings.incidents.renotify_interval:
        durations.append(("incidents", "renotify_interval"))
    for section, key in durations:
        try:
            parse_duration(getattr(getattr(settings, section), key))
        except ValueError as exc:
            raise ConfigError(f"{section}.{key}: {exc}", location=doc.loc(section, key)) from None
    for i, agency in enumerate(settings.agencies):
        for key in ("retention", "future_skew"):
            try:
                parse_duration(getattr(agency, key))
            except ValueError as exc:
                raise ConfigError(f"agencies[{i}].{key}: {exc}", location=doc.loc("agencies", i, key)) from None
    if settings.alerts.daily_digest and not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", settings.alerts.daily_digest):
        raise ConfigError(f"alerts.daily_digest {settings.alerts.daily_digest!r} is not a time of day like 08:00",
                          location=doc.loc("alerts", "daily_digest"), hint='"" turns the daily digest off')
    if parse_duration(settings.alerts.claim_timeout).total_seconds() <= settings.smtp.timeout:
        raise ConfigError(f"alerts.claim_timeout {settings.alerts.claim_timeout!r} must be longer than smtp.timeout "
                          f"({settings.smtp.timeout}s): a claim that expires mid-send lets another deliverer send "
                          "the same email again", location=doc.loc("alerts", "claim_timeout"))
    if settings.alerts.kibana_url and not re.match(r"^https?://[^\s'()]+$", settings.alerts.kibana_url):
        raise ConfigError(f"alerts.kibana_url {settings.alerts.kibana_url!r} is not an http(s) URL",
                          location=doc.loc("alerts", "kibana_url"), hint="for example https://kibana.example.vn:5601")
    if settings.alerts.hourly_cap < 1:
        raise ConfigError("alerts.hourly_cap must be at least 1", location=doc.loc("alerts", "hourly_cap"))
    known = {a.id for a in settings.agencies}
    for i, route in enumerate(settings.alerts.routes):
        for j, address in enumerate(route.recipients):
            if not _EMAIL.match(address):
                raise ConfigError(f"alerts.routes[{i}].recipients[{j}] {address!r} is not an email address",
                                  location=doc.loc("alerts", "routes", i, "recipients", j))
        for j, agency_id in enumerate(route.agencies):
            if agency_id != "*" and agency_id not in known:
                raise ConfigError(f"alerts.routes[{i}].agencies[{j}] {agency_id!r} is not a configured agency",
                                  location=doc.loc("alerts", "routes", i, "agencies", j),
                                  hint=f"'*' or one of: {', '.join(sorted(known)) or 'none configured'}")
    smtp = settings.smtp
    if smtp.username_env and not (smtp.starttls or smtp.ssl) and not smtp.allow_plaintext_auth:
        raise ConfigError("smtp.username_env is set but neither smtp.starttls nor smtp.ssl is on: the password "
                          "would cross the network in clear text", location=doc.loc("smtp", "username_env"),
                          hint="turn on starttls or ssl, or set smtp.allow_plaintext_auth: true to accept the risk")
    if not re.match(r"^[a-z0-9][a-z0-9_-]*$", settings.elasticsearch.index_prefix):
        raise ConfigError(
            "elasticsearch.index_prefix must be lower-case letters, digits, '-' or '_'",
            location=doc.loc("elasticsearch", "index_prefix"),
        )
    if not settings.elasticsearch.hosts:
        raise ConfigError("elasticsearch.hosts: at least one host is needed", location=doc.loc("elasticsearch"))


def load_settings(path: Path) -> Settings:
    """Read and validate a secmon.yml; every problem is a ConfigError naming file:line."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="pass --config or create secmon.yml")
    try:
        doc = load_file(path)
    except InputError as exc:  # a YAML syntax error is a config problem here
        raise ConfigError(exc.message, location=exc.location) from None
    settings: Settings = _build(Settings, doc.data, doc, ())
    settings = dataclasses.replace(settings, base_dir=str(path.resolve().parent))
    _check(settings, doc)
    return settings
