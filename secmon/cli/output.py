"""Tables and JSON for people and machines."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, is_dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

from secmon.model import Incident, ScanSummary


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    return value


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe(text: object, width: int | None = None) -> str:
    """Log content made harmless for a terminal: control characters (CR/LF, ESC, bidi overrides) shown
    as escapes, so they cannot forge rows or retitle the terminal; cut to `width` for display only."""
    shown = _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    shown = "".join(c if unicodedata.category(c) != "Cf" or c == "\u200d" else f"\\u{ord(c):04x}" for c in shown)
    if width is not None and len(shown) > width:
        return shown[: max(1, width - 1)] + "…"
    return shown


def to_json(value: Any) -> str:
    return json.dumps(_plain(value), ensure_ascii=False, indent=2)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


def entity(incident: Incident) -> str:
    return ", ".join(f"{k}={v}" for k, v in incident.finding.group) or "-"


def incidents_table(incidents: list[Incident] | tuple[Incident, ...], tz: str, new: set[str] | None = None) -> str:
    zone = ZoneInfo(tz)
    rows = []
    for incident in incidents:
        f = incident.finding
        rows.append([
            incident.id[:12] + ("*" if new and incident.id in new else ""),
            f.severity.value, incident.status, safe(f.agency, 24), safe(f.rule_title, 60), safe(entity(incident), 60),
            f.first_seen.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
            f.last_seen.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"), str(f.count),
        ])
    return table(["incident", "severity", "status", "agency", "rule", "entity", f"first ({tz})", "last", "events"],
                 rows)


SHOWN = 20  # a scan's table: a screenful; the rest is a command away (837 rows buried the quickstart's news)


def most_important(incidents: tuple[Incident, ...], new: set[str], limit: int = SHOWN) -> list[Incident]:
    """New incidents first, then the most severe, then the most recent activity (then by id: stable)."""
    ranked = sorted(incidents, key=lambda i: i.id)
    ranked.sort(key=lambda i: (i.id in new, i.finding.severity.rank, i.finding.last_seen), reverse=True)
    return ranked[:limit]


def scan_text(summary: ScanSummary, tz: str, more: str = "--json lists them all") -> str:
    """The summary and the SHOWN most important incidents; `more` says where the others are."""
    new = set(summary.new_incident_ids)
    lines = [
        f"scan {summary.id[:12]}: window {summary.window_from.isoformat()} .. {summary.window_to.isoformat()}",
        f"rules run: {summary.rules_run} ({summary.requests} search requests), "
        f"rules failed: {len(summary.rules_failed)}, "
        f"incidents: {len(summary.incidents)} ({len(new)} new, marked *), notifications queued: "
        f"{summary.notifications}, alerts sent: {summary.deliveries_sent}, alerts still queued: "
        f"{summary.deliveries_pending}",
    ]
    if summary.suppressed:
        lines.append(f"suppressed findings: {summary.suppressed}")
    if summary.incidents:
        shown = most_important(summary.incidents, new)
        lines += ["", incidents_table(shown, tz, new)]
        if len(summary.incidents) > len(shown):
            lines.append(f"... and {len(summary.incidents) - len(shown)} more (shown: new ones first, then the "
                         f"most severe and most recent). All of them: {more}")
    for rule, reason in summary.rules_failed:
        lines.append(f"rule failed: {safe(rule)}: {safe(reason)}")
    lines += [f"note: {safe(note)}" for note in summary.notes]
    return "\n".join(lines)
