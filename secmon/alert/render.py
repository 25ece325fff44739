"""Render emails from Jinja2 templates in the recipient's language and time zone.

Templates live in `secmon/alert/templates/{vi,en}/` (alert, digest, overflow, daily; each as
`.subject.txt`, `.txt` and `.html`); a file of the same name under `alerts.templates` overrides
it. HTML is autoescaped; the text and the subject are not escaped, so every value from log
content is made visible-only (`secmon.alert.safe`) before any template sees it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import (BaseLoader, ChoiceLoader, FileSystemLoader, PackageLoader, StrictUndefined, TemplateError,
                    TemplateSyntaxError, select_autoescape)
from jinja2.sandbox import SandboxedEnvironment

from secmon.alert.safe import header_text, one_line, paragraph
from secmon.config import Settings
from secmon.errors import ConfigError, Location
from secmon.model import Explanation, Incident, Notification, Severity
from secmon.types import Language, iso

KINDS = ("alert", "overflow", "daily")
LANGUAGES: tuple[Language, ...] = ("vi", "en")
PARTS = ("subject.txt", "txt", "html")
LAYOUTS = ("base.txt", "base.html", "digest.txt", "digest.html")  # extended by the kinds above
SUBJECT_LIMIT = 250
VALUE_LIMIT = 200  # one host name, user name or group value
TITLE_LIMIT = 300
TEXT_LIMIT = 4000  # a rule description
QUERY_LIMIT = 2000  # an anomaly's Kibana query (it quotes the entity, which comes from logs)
NEW_VALUES_LIMIT = 10  # values never seen, shown per feature

SEVERITY_NAMES: dict[str, dict[Severity, str]] = {
    "vi": {Severity.INFORMATIONAL: "Thông tin", Severity.LOW: "Thấp", Severity.MEDIUM: "Trung bình",
           Severity.HIGH: "Cao", Severity.CRITICAL: "Nghiêm trọng"},
    "en": {s: s.value.capitalize() for s in Severity},
}

RenderError = TemplateError  # what rendering one email can raise (an override using an unknown variable)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


class Templates:
    """The compiled templates: built-in ones, overridden file by file from `alerts.templates`.

    Every template is compiled here, so a syntax error in an override is a ConfigError
    naming file:line at start-up, not a failure on the first alert.
    """

    def __init__(self, override: Path | None = None) -> None:
        loaders: list[BaseLoader] = [PackageLoader("secmon.alert", "templates")]
        if override is not None:
            if not override.is_dir():
                raise ConfigError(f"alerts.templates: {override} is not a folder",
                                  hint="a folder with vi/ and en/ holding the templates to override")
            loaders.insert(0, FileSystemLoader(str(override)))
        # Sandboxed: an override is operator data and must not reach Python internals.
        self.env = SandboxedEnvironment(
            loader=ChoiceLoader(loaders), autoescape=select_autoescape(enabled_extensions=("html",)),
            undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        for language in LANGUAGES:
            for name in LAYOUTS + tuple(f"{kind}.{part}" for kind in KINDS for part in PARTS):
                try:
                    self.env.get_template(f"{language}/{name}")
                except TemplateSyntaxError as exc:
                    raise ConfigError(f"template error: {exc.message}",
                                      location=Location(exc.filename or f"{language}/{name}", exc.lineno)) from None
                except UnicodeDecodeError:
                    raise ConfigError(f"template {language}/{name} is not UTF-8 text",
                                      location=Location(str(override or "secmon/alert/templates"))) from None

    @classmethod
    def of(cls, settings: Settings) -> Templates:
        return _compiled(settings.resolve(settings.alerts.templates) if settings.alerts.templates else None)

    def render(self, kind: str, language: str, context: Mapping[str, Any]) -> Rendered:
        """Raises RenderError (an override that uses an unknown variable)."""
        def part(name: str) -> str:
            try:
                return self.env.get_template(f"{language}/{kind}.{name}").render(context)
            except UnicodeDecodeError:  # an override edited since start-up
                raise TemplateError(f"template {language}/{kind}.{name} is not UTF-8 text") from None

        return Rendered(subject=header_text(part("subject.txt"), SUBJECT_LIMIT),
                        text=part("txt").rstrip() + "\n", html=part("html"))


@functools.lru_cache(maxsize=8)
def _compiled(override: Path | None) -> Templates:
    """Compiling every template costs ~0.1 s: once per process and folder. Jinja still reloads an
    override file that changed on disk (auto_reload), so editing one needs no restart."""
    return Templates(override)


def local_time(moment: datetime, timezone: str) -> str:
    return moment.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)")


def kibana_link(settings: Settings, incident_id: str, first_seen: datetime) -> str:
    """Discover on the incidents data view (id `<prefix>-incidents`), filtered to this incident's id.

    The time range starts at the incident's first event (its @timestamp), so Discover shows it
    however old it is. "" when alerts.kibana_url is not set.
    """
    base = settings.alerts.kibana_url.rstrip("/")
    if not base:
        return ""
    view = f"{settings.elasticsearch.index_prefix}-incidents"
    return (f"{base}/app/discover#/?_g=(time:(from:'{iso(first_seen)}',to:now))"
            f"&_a=(dataSource:(dataViewId:'{view}',type:dataView),query:(language:kuery,query:'_id:{incident_id}'))")


def incident_view(incident: Incident, language: str, timezone: str, settings: Settings) -> dict[str, Any]:
    """What templates may show of an incident: every value from log content made visible-only and capped."""
    f = incident.finding
    group = [(one_line(k, VALUE_LIMIT), one_line(v, VALUE_LIMIT)) for k, v in f.group]
    return {
        "id": incident.id, "url": kibana_link(settings, incident.id, f.first_seen),
        "rule_id": one_line(f.rule_id, VALUE_LIMIT), "title": one_line(f.title(language), TITLE_LIMIT),
        "description": paragraph(f.text(language), TEXT_LIMIT),
        "severity": f.severity.value, "severity_name": SEVERITY_NAMES[language][f.severity],
        "group": group, "entity": one_line(", ".join(f"{k}={v}" for k, v in group) or "-", VALUE_LIMIT),
        "first_seen": local_time(f.first_seen, timezone), "last_seen": local_time(f.last_seen, timezone),
        "count": f.count, "occurrences": incident.occurrences, "status": incident.status,
        "techniques": ", ".join(one_line(t.split(".", 1)[1].upper(), 20) for t in f.tags
                                if t.startswith("attack.t")) or "-",
        "anomaly": anomaly_view(f.explanation) if f.explanation is not None else None,
    }


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"


def anomaly_view(e: Explanation) -> dict[str, Any]:
    """Why a window is anomalous, as templates show it: numbers already formatted, every value that can
    come from logs (new values, the entity quoted in the query) made visible-only and capped."""
    return {
        "score": f"{e.score:.3f}", "threshold": f"{e.threshold:.3f}", "model": one_line(e.model, VALUE_LIMIT),
        "centre_wide": e.centre_wide,
        "contributions": [{"feature": one_line(c.feature, VALUE_LIMIT), "actual": _number(c.actual),
                           "typical": None if c.typical is None else _number(c.typical),
                           "percentile": f"{c.percentile:.0f}", "share": f"{c.share:.0%}"}
                          for c in e.contributions],
        "new_values": [{"feature": one_line(name, VALUE_LIMIT),
                        "values": [one_line(v, VALUE_LIMIT) for v in values[:NEW_VALUES_LIMIT]]}
                       for name, values in e.new_values if values],
        "note": one_line(e.note, VALUE_LIMIT), "query": one_line(e.query, QUERY_LIMIT),
    }


def alert_context(notification: Notification, agency_name: str, language: str, timezone: str, settings: Settings
                  ) -> dict[str, Any]:
    incident = notification.incident
    return {"kind": "alert", "reason": notification.reason, "key": notification.key, "timezone": timezone,
            "agency": {"id": incident.finding.agency, "name": one_line(agency_name, VALUE_LIMIT)},
            "incident": incident_view(incident, language, timezone, settings)}


def summary(view: Mapping[str, Any], agency_name: str, reason: str) -> dict[str, Any]:
    """The line an alert becomes in an overflow digest, stored on its outbox document."""
    keys = ("id", "url", "title", "severity", "severity_name", "entity", "first_seen", "last_seen", "count")
    return {**{k: view[k] for k in keys}, "agency": agency_name, "reason": reason, "status": ""}
