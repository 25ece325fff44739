"""The monthly report without Elasticsearch: months, the numbers, the queries' fields, the document."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from secmon.report import charts, queries
from secmon.report import facts as f
from secmon.report.document import printable, render
from secmon.report.month import Month
from secmon.report.text import TEXT
from secmon.store.fields import Incident
from tests.mappings import aggregatable, mapping

TZ = "Asia/Ho_Chi_Minh"
OCT = Month(2026, 10)


def test_months() -> None:
    assert Month.parse("2026-10") == OCT and str(OCT) == "2026-10"
    assert OCT.previous() == Month(2026, 9) and Month(2026, 1).previous() == Month(2025, 12)
    assert Month(2026, 12).next() == Month(2027, 1)
    assert OCT.days() == 31 and Month(2028, 2).days() == 29
    assert OCT.start(TZ) == datetime(2026, 9, 30, 17, tzinfo=UTC)  # local midnight, +07
    assert OCT.end(TZ) == datetime(2026, 10, 31, 17, tzinfo=UTC)
    for bad in ("2026-13", "2026-1", "october", "1969-12", ""):
        with pytest.raises(ValueError):
            Month.parse(bad)


def incident(ident: str, first: datetime, severity: str = "high", agency: str = "so-tttt", rule: str = "SSH",
             history: list[tuple[str, datetime]] = (), status: str = "open", detector: str = "rule",
             group: list[str] = ("source.ip=203.0.113.9",), count: int = 10, resolution: str = "") -> f.IncidentRecord:
    doc = {"secmon": {"id": ident, "severity": severity, "status": status, "resolution": resolution,
                      "detector": detector, "group": list(group),
                      "history": [{"at": at.isoformat(), "action": action, "user": "a", "status": status}
                                  for action, at in history]},
           "organization": {"id": agency}, "rule": {"id": "r1", "name": rule},
           "event": {"start": first.isoformat(), "count": count, "created": (first + timedelta(days=1)).isoformat()},
           "threat": {"technique": {"id": ["T1110.001"]}}}
    return f.IncidentRecord.from_source(doc)


def test_incident_numbers() -> None:
    t = datetime(2026, 10, 5, 3, tzinfo=UTC)
    records = [
        incident("a", t, history=[("opened", t), ("acknowledged", t + timedelta(minutes=30)),
                                  ("closed", t + timedelta(hours=5))], status="closed", resolution="benign"),
        incident("b", t, severity="critical", history=[("opened", t), ("acknowledged", t + timedelta(minutes=90))],
                 status="acknowledged"),
        incident("c", datetime(2026, 10, 31, 16, 59, tzinfo=UTC), agency="portal", rule="<b>Web</b>",
                 group=[], detector="anomaly"),  # 23:59 local on the 31st
        incident("d", t, history=[], count=3),  # no history: opened = its creation, never acknowledged
    ]
    s = f.summarize(records, OCT, TZ)
    assert s.total == 4 and s.events == 33
    assert s.by_severity == (("informational", 0), ("low", 0), ("medium", 0), ("high", 3), ("critical", 1))
    assert s.by_status == (("open", 2), ("acknowledged", 1), ("closed", 1))
    assert s.by_resolution == (("benign", 1),)
    assert s.by_agency == (("so-tttt", 3), ("portal", 1))
    assert s.by_technique == (("T1110.001", 4),)
    assert s.to_acknowledge == f.Durations(2, 60.0, 60.0, 90.0)
    assert s.to_close == f.Durations(1, 300.0, 300.0, 300.0)
    assert s.open_unacknowledged == 2
    days = dict(s.per_day)
    assert len(days) == 31 and days[datetime(2026, 10, 31).date()] == (0, 0, 0, 1, 0)
    assert days[datetime(2026, 10, 5).date()] == (0, 0, 0, 2, 1)
    assert s.entities[0] == f.EntityRow("source.ip=203.0.113.9", "so-tttt", 3, 23)
    assert f.EntityRow(f.NO_ENTITY, "portal", 1, 10) in s.entities


def test_coverage_and_gaps() -> None:
    start, end = OCT.start(TZ), OCT.end(TZ)
    day = timedelta(days=1)
    runs = [f.ScanRun(start - day, start + day, 81, ()), f.ScanRun(start + day, start + 2 * day, 81, ("r9",)),
            f.ScanRun(start + 10 * day, start + 12 * day, 0, ()), f.ScanRun(start + 11 * day, end + day, 81, ())]
    c = f.coverage(runs, start, end)
    assert c.covered == ((start, start + 2 * day), (start + 10 * day, end))
    assert c.gaps == ((start + 2 * day, start + 10 * day),)
    assert round(c.percent, 3) == round(100 * 23 / 31, 3)
    assert c.runs == 4 and c.failed_runs == 2 and c.failing_rules == (("r9", 1),)
    assert f.coverage([], start, end).gaps == ((start, end),) and f.coverage([], start, end).percent == 0


def test_alert_numbers() -> None:
    s = f.alert_summary({("so-tttt", "sent"): 5, ("so-tttt", "failed"): 1, ("portal", "pending"): 2,
                         ("portal", "sent"): 1})
    assert s.by_status == (("sent", 6), ("failed", 1), ("pending", 2))
    assert s.total == 9 and s.waiting == 2
    assert s.by_agency == (("portal", 1, 0, 2), ("so-tttt", 5, 1, 0))


def test_every_field_the_queries_name_is_in_its_template() -> None:
    t = datetime(2026, 10, 1, tzinfo=UTC)
    bodies = {
        "incidents": [queries.incidents(t, t, "so-tttt"), queries.INCIDENT_SORT],
        "alerts": list(queries.alerts_by_agency_and_status(["x"])),
        "scans": [queries.scans(t, t)],
        "events": list(queries.events_per_agency(t, t)),
    }
    for template, parts in bodies.items():
        named = set().union(*(queries.fields_named(p) for p in parts))
        assert named, template
        for field in named:
            assert aggregatable(template, field), f"{template}: {field} cannot be filtered, sorted or aggregated"
    for field in queries.INCIDENT_SOURCE:
        assert mapping("incidents", field), field
    for field in queries.SCAN_SOURCE:
        assert mapping("scans", field), field
    assert Incident.HISTORY in queries.INCIDENT_SOURCE


def month_facts(records: list[f.IncidentRecord], agency: str | None = None) -> f.MonthlyFacts:
    start, end = OCT.start(TZ), OCT.end(TZ)
    summary = f.summarize(records, OCT, TZ)
    return f.MonthlyFacts(OCT, TZ, agency, "Sở <TTTT>" if agency else "", datetime(2026, 11, 1, tzinfo=UTC),
                          summary, f.summarize([], OCT.previous(), TZ),
                          f.summarize([r for r in records if r.detector == "anomaly"], OCT, TZ),
                          f.alert_summary({("so-tttt", "sent"): 3}), f.alert_summary({}),
                          f.coverage([f.ScanRun(start, start + timedelta(days=3), 5, ())], start, end),
                          (("so-tttt", 123456),))


def test_both_languages_have_every_word_and_every_section() -> None:
    assert set(TEXT["vi"]) == set(TEXT["en"])
    t = datetime(2026, 10, 5, 3, tzinfo=UTC)
    facts = month_facts([incident("a", t), incident("b", t, detector="anomaly")])
    pages = {lang: render(facts, lang)[1] for lang in ("vi", "en")}
    sections = {}
    for lang, html in pages.items():
        sections[lang] = re.findall(r'<section id="([a-z-]+)"', html)
        assert html.count('<img class="chart"') == 5
        assert TEXT[lang]["how_1"].split()[0] in html
    assert sections["vi"] == sections["en"] == ["summary", "incidents", "rules", "agencies", "entities", "response",
                                                "alerts", "coverage", "anomalies", "how-to-read"]
    assert "Tháng 10 năm 2026" in pages["vi"] and "123.456" in pages["vi"]  # Vietnamese thousands separator
    assert "October 2026" in pages["en"] and "123,456" in pages["en"]
    agency = render(month_facts([incident("a", t)], "so-tttt"), "vi")[1]
    assert 'id="agencies"' not in agency and "Sở &lt;TTTT&gt; (so-tttt)" in agency


def test_log_content_cannot_forge_the_document() -> None:
    t = datetime(2026, 10, 5, 3, tzinfo=UTC)
    hostile = incident("a", t, rule="<script>alert(1)</script>\x1b[31mred\u202eevil", group=["user.name=<img src=x>"])
    html = render(month_facts([hostile]), "en")[1]
    assert "<script>" not in html and "<img src=x>" not in html
    assert "&lt;script&gt;" in html and "\\x1b[31m" in html and "\\u202e" in html
    assert printable("x" * 500).endswith("…") and len(printable("x" * 500)) == 120


def test_charts_are_svg_and_the_same_numbers_give_the_same_bytes() -> None:
    rows = [("SSH password brute force", 15), ("Ngày mới: đăng nhập", 3)]
    first, again = charts.ranked(rows, "Quy tắc"), charts.ranked(rows, "Quy tắc")
    assert first == again and first.lstrip().startswith("<?xml") and "<svg" in first
    start = OCT.start(TZ)
    strip = charts.coverage(start, OCT.end(TZ), [(start, start + timedelta(days=3))], ("Scanned", "Gap"), "t")
    assert charts.COVERED in strip and charts.GAP in strip
