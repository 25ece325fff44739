"""Facts -> the report's HTML (one Jinja2 template, the words of `text.py`), charts inlined. Pure.

Rule names, entities and agency names come from logs and analysts: autoescaping
makes them text, control characters are shown as escapes, and long values are cut
for the page (the indices keep them whole).
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined

from secmon.report import charts
from secmon.report.facts import SEVERITIES, MonthlyFacts, change
from secmon.report.text import MONTHS_EN, TEXT

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
LONGEST = 120  # characters of one value on the page


def printable(value: object, width: int = LONGEST) -> str:
    """Control characters (ESC, bidi overrides, ...) as escapes; cut to `width`."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))
    text = text.replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


class Words:
    """The language's words and its way of writing numbers, times and durations."""

    def __init__(self, language: str, timezone: str):
        self.language = language
        self.text = TEXT[language]
        self.zone = ZoneInfo(timezone)

    def __getitem__(self, key: str) -> str:
        return self.text[key]

    def number(self, value: float | None, decimals: int = 0) -> str:
        if value is None:
            return "–"
        shown = f"{value:,.{decimals}f}"
        return shown.translate(str.maketrans(",.", ".,")) if self.language == "vi" else shown

    def percent(self, value: float | None) -> str:
        return "–" if value is None else self.number(value, 1) + " %"

    def signed(self, value: float | None, decimals: int = 0) -> str:
        if value is None:
            return "–"
        return ("+" if value > 0 else "") + self.number(value, decimals)

    def delta(self, now: float | None, before: float | None) -> str:
        difference, percent = change(now, before)
        if difference is None:
            return "–"
        if difference == 0:
            return self.text["no_change"]
        return self.signed(difference) + (f" ({self.signed(percent, 0)} %)" if percent is not None else "")

    def minutes(self, value: float | None, missing: str = "") -> str:
        if value is None:
            return missing or self.text["not_measured"]
        whole = int(round(value))
        if whole < 60:
            return self.text["minutes"].format(n=whole)
        if whole < 1440:
            return self.text["hours"].format(h=whole // 60, m=whole % 60)
        return self.text["days"].format(d=whole // 1440, h=whole % 1440 // 60)

    def when(self, moment: datetime | None) -> str:
        return "–" if moment is None else moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")

    def span(self, length: timedelta) -> str:
        return self.minutes(length.total_seconds() / 60)

    def month(self, facts: MonthlyFacts) -> str:
        m = facts.month
        return self.text["month"].format(month=m.month, year=m.year, month_name=MONTHS_EN[m.month - 1])

    def label(self, key: str) -> str:
        """A status, severity or resolution in this language (unknown ones as they are)."""
        return self.text.get(key, key)


def _data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _charts(facts: MonthlyFacts, words: Words) -> dict[str, str]:
    severity_names = [words.label(s) for s in SEVERITIES]
    now, before = facts.incidents, facts.previous
    made = {
        "daily": charts.daily(now.per_day, severity_names, words["daily_chart"]),
        "compared": charts.compared(severity_names, [now.severity(s) for s in SEVERITIES],
                                    [before.severity(s) for s in SEVERITIES],
                                    (words["this_month"], words["previous_month"]), words["compared_chart"]),
        "coverage": charts.coverage(facts.coverage.start, facts.coverage.end, facts.coverage.covered,
                                    (words["covered"], words["gap"]), words["coverage_chart"]),
    }
    if now.by_rule:
        made["rules"] = charts.ranked([(printable(r, 48), n) for r, n in now.by_rule], words["rules_chart"])
    if facts.agency is None and now.by_agency:
        made["agencies"] = charts.ranked([(printable(a, 48), n) for a, n in now.by_agency[:15]],
                                         words["agencies_chart"])
    return {name: _data_uri(svg) for name, svg in made.items()}


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("secmon.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["printable"] = printable
    return env


def render(facts: MonthlyFacts, language: str, notes: tuple[str, ...] = ()) -> tuple[str, str]:
    """(title, HTML document) of the month's report in `language` (vi or en)."""
    words = Words(language, facts.timezone)
    scope = (words["scope_agency"].format(name=printable(facts.agency_name or facts.agency), id=facts.agency)
             if facts.agency else words["scope_all"])
    title = f"{words['title']} – {words.month(facts)}"
    context: dict[str, Any] = {
        "f": facts, "w": words, "lang": language, "title": title, "scope": scope, "notes": notes,
        "charts": _charts(facts, words), "severities": SEVERITIES,
        "high_now": facts.incidents.severity("high") + facts.incidents.severity("critical"),
        "high_before": facts.previous.severity("high") + facts.previous.severity("critical"),
        "events": dict(facts.events), "incidents_by_agency": dict(facts.incidents.by_agency),
        "alerts_by_agency": {row[0]: row for row in facts.alerts.by_agency},
    }
    return title, _environment().get_template("report.html.j2").render(context)
