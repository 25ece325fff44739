"""secmon.yml -> typed, validated settings, once, at start-up.

Every section is a frozen dataclass; `secmon.validation` checks keys and types against
the dataclass fields (pydantic-core), so the file format and the code cannot drift apart,
and reports every problem of the file at once.
Secrets never live in the file: it names environment variables that hold them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from secmon.errors import ConfigError, InputError
from secmon.types import AGENCY_ID, DEFAULT_TIMEZONE, parse_duration
from secmon.validation import Problems, shaped
from secmon.yamlio import load_file

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


def _check(settings: Settings, problems: Problems) -> None:
    """What a type cannot say: every broken value is one more problem, and checking goes on."""
    seen: set[str] = set()
    for i, agency in enumerate(settings.agencies):
        if not AGENCY_ID.match(agency.id):
            problems.add(f"agencies[{i}].id {agency.id!r} is not a valid agency id", "agencies", i, "id",
                         hint="lower-case letters, digits, '-' and '_', at most 63, used in index names")
        if agency.id in seen:
            problems.add(f"agency id {agency.id!r} appears twice", "agencies", i, "id")
        seen.add(agency.id)
        try:
            ZoneInfo(agency.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.add(f"agencies[{i}].timezone {agency.timezone!r} is not an IANA time zone",
                         "agencies", i, "timezone", hint=f"for example {DEFAULT_TIMEZONE}")
        for j, address in enumerate(agency.recipients):
            if not _EMAIL.match(address):
                problems.add(f"agencies[{i}].recipients[{j}] {address!r} is not an email address",
                             "agencies", i, "recipients", j)
    durations = [("schedule", k) for k in ("scan_interval", "lookback", "ingest_delay", "max_chunk",
                                           "outbox_interval", "retrain_interval", "retention_interval", "lease")]
    durations += [("alerts", k) for k in ("max_age", "retry_base", "retry_max", "claim_timeout")]
    durations += [("incidents", "quiet_period")]
    if settings.incidents.renotify_interval:
        durations.append(("incidents", "renotify_interval"))
    parsed: dict[str, timedelta] = {}
    for section, key in durations:
        try:
            parsed[f"{section}.{key}"] = parse_duration(getattr(getattr(settings, section), key))
        except ValueError as exc:
            problems.add(f"{section}.{key}: {exc}", section, key)
    for i, agency in enumerate(settings.agencies):
        for key in ("retention", "future_skew"):
            try:
                parse_duration(getattr(agency, key))
            except ValueError as exc:
                problems.add(f"agencies[{i}].{key}: {exc}", "agencies", i, key)
    alerts = settings.alerts
    if alerts.daily_digest and not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", alerts.daily_digest):
        problems.add(f"alerts.daily_digest {alerts.daily_digest!r} is not a time of day like 08:00",
                     "alerts", "daily_digest", hint='"" turns the daily digest off')
    claim = parsed.get("alerts.claim_timeout")
    if claim is not None and claim.total_seconds() <= settings.smtp.timeout:
        problems.add(f"alerts.claim_timeout {alerts.claim_timeout!r} must be longer than smtp.timeout "
                     f"({settings.smtp.timeout}s): a claim that expires mid-send lets another deliverer send "
                     "the same email again", "alerts", "claim_timeout")
    if alerts.kibana_url and not re.match(r"^https?://[^\s'()]+$", alerts.kibana_url):
        problems.add(f"alerts.kibana_url {alerts.kibana_url!r} is not an http(s) URL", "alerts", "kibana_url",
                     hint="for example https://kibana.example.vn:5601")
    if alerts.hourly_cap < 1:
        problems.add("alerts.hourly_cap must be at least 1", "alerts", "hourly_cap")
    known = {a.id for a in settings.agencies}
    for i, route in enumerate(alerts.routes):
        for j, address in enumerate(route.recipients):
            if not _EMAIL.match(address):
                problems.add(f"alerts.routes[{i}].recipients[{j}] {address!r} is not an email address",
                             "alerts", "routes", i, "recipients", j)
        for j, agency_id in enumerate(route.agencies):
            if agency_id != "*" and agency_id not in known:
                problems.add(f"alerts.routes[{i}].agencies[{j}] {agency_id!r} is not a configured agency",
                             "alerts", "routes", i, "agencies", j,
                             hint=f"'*' or one of: {', '.join(sorted(known)) or 'none configured'}")
    smtp = settings.smtp
    if smtp.username_env and not (smtp.starttls or smtp.ssl) and not smtp.allow_plaintext_auth:
        problems.add("smtp.username_env is set but neither smtp.starttls nor smtp.ssl is on: the password "
                     "would cross the network in clear text", "smtp", "username_env",
                     hint="turn on starttls or ssl, or set smtp.allow_plaintext_auth: true to accept the risk")
    if not re.match(r"^[a-z0-9][a-z0-9_-]*$", settings.elasticsearch.index_prefix):
        problems.add("elasticsearch.index_prefix must be lower-case letters, digits, '-' or '_'",
                     "elasticsearch", "index_prefix")
    if not settings.elasticsearch.hosts:
        problems.add("elasticsearch.hosts: at least one host is needed", "elasticsearch")


def load_settings(path: Path) -> Settings:
    """Read and validate a secmon.yml: one ConfigError naming file:line:column of every problem."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="pass --config or create secmon.yml")
    try:
        doc = load_file(path)
    except InputError as exc:  # a YAML syntax error is a config problem here
        raise ConfigError(exc.message, location=exc.location) from None
    problems = Problems(doc)
    data = {} if doc.data is None else doc.data
    if isinstance(data, dict) and "base_dir" in data:  # set from the file's folder, never by the file
        problems.add("unknown key 'base_dir' in the top level", "base_dir",
                     hint="relative paths are resolved against the config file's folder")
        data = {k: v for k, v in data.items() if k != "base_dir"}
    settings = shaped(Settings, data, problems)
    if settings is not None:
        settings = dataclasses.replace(settings, base_dir=str(path.resolve().parent))
        _check(settings, problems)
    problems.raise_for(ConfigError)
    assert settings is not None  # raise_for raised otherwise
    return settings
