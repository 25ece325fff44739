"""The monthly report over the data the quickstart loads: numbers checked against the indices, both
languages, the PDF's pages, and the HTML as headless Chromium draws it.

The data is loaded once for the module (collect the real 2005 auth log for so-tttt, scan it,
deliver the alerts to a loopback SMTP server, acknowledge and close incidents of July 2005).
"""

from __future__ import annotations

from collections import Counter

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from secmon.config import Settings, load_settings
from secmon.report.month import Month
from secmon.service.report import MonthlyReport, monthly_report
from tests.conftest import DATASETS, ROOT, Mailbox, drop_prefix, free_port, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.dataset]
JULY, JUNE = Month(2005, 7), Month(2005, 6)
TZ = "Asia/Ho_Chi_Minh"
LOG = DATASETS / "loghub_linux_full" / "Linux" / "Linux.log"


@dataclass(frozen=True)
class Loaded:
    config: str
    prefix: str
    settings: Settings
    acknowledged: tuple[str, ...]
    closed: str
    folder: Path


def _ok(*args: str) -> str:
    code, out, err = run_cli(*args)
    assert code == 0, f"secmon {' '.join(args[2:])} exited {code}: {err}"
    return out


@pytest.fixture(scope="module")
def loaded(es, es_url, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:  # type: ignore[no-untyped-def]
    if not LOG.is_file():
        pytest.skip(f"the quickstart's log is not at {LOG} (../shared/datasets beside the checkout)")
    from aiosmtpd.controller import Controller

    folder = tmp_path_factory.mktemp("report")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    smtp_port = free_port()
    controller = Controller(Mailbox(), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    config = folder / "secmon.yml"
    # A century of retention: collecting 2005 events must never be refused for their age.
    config.write_text(f"""\
elasticsearch: {{hosts: [{es_url}], index_prefix: {prefix}}}
agencies:
  - {{id: so-tttt, name: "Sở Thông tin và Truyền thông", language: vi, retention: 36500d,
     recipients: [soc@so-tttt.example.vn]}}
  - {{id: portal, name: Provincial public portal, language: en, retention: 36500d, recipients: [a@portal.example.vn]}}
smtp: {{host: 127.0.0.1, port: {smtp_port}, sender: secmon@monitoring.example.vn}}
operator: analyst-1
rules: [{ROOT / 'rules' / 'linux'}]  # only Linux rules can fire on this log: a quarter of the scan's requests
pipelines: [{ROOT / 'pipelines'}]
""", encoding="utf-8")
    c = str(config)
    try:
        _ok("-c", c, "setup")
        _ok("-c", c, "collect", str(LOG), "--agency", "so-tttt", "--source", "linux-auth", "--year", "2005")
        _ok("-c", c, "scan", "--from", "2005-06-01", "--to", "2006-03-01", "--no-deliver")
        _ok("-c", c, "deliver")
        july = es.search(index=f"{prefix}-incidents", size=3, sort=[{"event.start": "asc"}],
                         query={"range": {"event.start": {"gte": "2005-07-01T00:00:00+07:00",
                                                          "lt": "2005-08-01T00:00:00+07:00"}}})["hits"]["hits"]
        ids = tuple(hit["_id"] for hit in july[:2])
        assert len(ids) == 2, "the quickstart's log has brute force in July 2005"
        for ident in ids:
            _ok("-c", c, "incidents", "ack", ident, "--note", "calling the agency")
        _ok("-c", c, "incidents", "close", ids[0], "--as", "true_positive", "--note", "blocked")
        es.indices.refresh(index=f"{prefix}-*")
        yield Loaded(c, prefix, load_settings(config), ids, ids[0], folder)
    finally:
        controller.stop()
        drop_prefix(es, prefix)


@pytest.fixture(scope="module")
def reports(es, loaded: Loaded) -> dict[str, MonthlyReport]:  # type: ignore[no-untyped-def]
    """The centre's July report in both languages, through the function a scheduler job would call."""
    return {lang: monthly_report(es, loaded.settings, JULY, None, lang) for lang in ("vi", "en")}


def _month(field: str, month: Month) -> dict[str, Any]:
    return {"range": {field: {"gte": month.start(TZ).isoformat(), "lt": month.end(TZ).isoformat()}}}


def test_numbers_match_the_indices(es, loaded: Loaded, reports: dict[str, MonthlyReport]) -> None:  # type: ignore[no-untyped-def]
    facts = reports["vi"].facts
    incidents = f"{loaded.prefix}-incidents"
    hits = es.search(index=incidents, query=_month("event.start", JULY), size=10_000)["hits"]["hits"]
    assert facts.incidents.total == len(hits) > 0
    assert facts.previous.total == es.count(index=incidents, query=_month("event.start", JUNE))["count"] > 0
    severities = es.search(index=incidents, query=_month("event.start", JULY), size=0,
                           aggs={"s": {"terms": {"field": "secmon.severity"}}})["aggregations"]["s"]["buckets"]
    assert {k: n for k, n in facts.incidents.by_severity if n} == {b["key"]: b["doc_count"] for b in severities}
    # Counted from the stored incidents themselves (the library's other SSH rules fire on this log too).
    by_rule = Counter(h["_source"]["rule"]["name"] for h in hits)
    assert dict(facts.incidents.by_rule) == dict(by_rule) and by_rule["SSH password brute force"] > 0
    assert facts.incidents.events == sum(h["_source"]["event"]["count"] for h in hits)
    assert dict(facts.incidents.by_status) == {"open": len(hits) - 2, "acknowledged": 1, "closed": 1}
    assert facts.incidents.to_acknowledge.measured == 2 and facts.incidents.to_close.measured == 1
    assert facts.incidents.to_acknowledge.mean is not None and facts.incidents.to_acknowledge.mean >= 0

    month_ids = {h["_id"] for h in hits}
    alerts = es.search(index=f"{loaded.prefix}-alerts", size=10_000)["hits"]["hits"]
    about = [a for a in alerts if set(a["_source"]["secmon"]["incident_id"]) & month_ids]
    statuses: dict[str, int] = {}
    for alert in about:
        statuses[alert["_source"]["secmon"]["status"]] = statuses.get(alert["_source"]["secmon"]["status"], 0) + 1
    assert dict(facts.alerts.by_status) == statuses and facts.alerts.count("sent") > 0

    events = es.count(index=f"{loaded.prefix}-events-so-tttt-*", query=_month("@timestamp", JULY))["count"]
    assert dict(facts.events) == {"so-tttt": events}
    assert facts.coverage.runs == 1 and facts.coverage.percent == 100.0 and facts.coverage.gaps == ()
    assert facts.anomalies.total == 0  # no anomaly detector ran on this data


def test_both_languages(loaded: Loaded, reports: dict[str, MonthlyReport]) -> None:
    vi, en = reports["vi"], reports["en"]
    total = vi.facts.incidents.total
    assert vi.title == "Báo cáo giám sát an toàn thông tin – Tháng 7 năm 2005"
    assert en.title == "Security monitoring report – July 2005"
    for made in (vi, en):
        assert f'<div class="v">{total}</div>' in made.html
        assert made.html.count('<img class="chart"') == 5  # per day, compared, rules, agencies, coverage
    assert "Sự cố theo ngày và mức độ" in vi.html and "Cao" in vi.html
    assert "Incidents per day by severity" in en.html and "High" in en.html

    out = loaded.folder / "july-en.html"
    code, said, err = run_cli("-c", loaded.config, "report", "--month", "2005-07", "--lang", "en", "--out", str(out))
    assert code == 0, err
    assert f"({total} incidents" in said
    assert out.read_text(encoding="utf-8").count("<section") == en.html.count("<section")


def test_agency_pdf_has_the_expected_pages(loaded: Loaded) -> None:
    try:
        import weasyprint  # noqa: F401
    except OSError as exc:
        pytest.skip(f"WeasyPrint cannot load pango ({exc}); scripts/bootstrap installs it")
    from pypdf import PdfReader

    out = loaded.folder / "so-tttt.pdf"
    code, _, err = run_cli("-c", loaded.config, "report", "--month", "2005-07", "--agency", "so-tttt",
                           "--format", "pdf", "--out", str(out))
    assert code == 0, err
    pdf = PdfReader(out)
    assert 3 <= len(pdf.pages) <= 6, f"{len(pdf.pages)} pages"
    for page in pdf.pages:
        assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (595, 842)  # A4
    first, last = pdf.pages[0].extract_text(), pdf.pages[-1].extract_text()
    assert "Báo cáo giám sát an toàn thông tin" in first  # the agency's language
    assert "Sở Thông tin và Truyền thông (so-tttt)" in first
    assert "Cách đọc báo cáo" in last and f"1 / {len(pdf.pages)}" in first.replace("\n", " ")


def _near(pixel: tuple[int, ...], colour: str, slack: int = 10) -> bool:
    target = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return all(abs(p - t) <= slack for p, t in zip(pixel[:3], target))


def test_chromium_draws_the_page_and_its_charts(loaded: Loaded, reports: dict[str, MonthlyReport]) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (scripts/bootstrap installs Debian's chromium)")
    from PIL import Image

    from secmon.report import charts

    page = loaded.folder / "july.html"
    page.write_text(reports["en"].html, encoding="utf-8")
    shot = loaded.folder / "july.png"
    width, height = 1000, 3400
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={loaded.folder / 'chromium'}", f"--window-size={width},{height}",
                           f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and shot.is_file(), f"chromium failed: {done.stderr[-2000:]}"
    image = Image.open(shot).convert("RGB")
    assert image.size == (width, height)
    colours = image.getcolors(maxcolors=width * height)  # (count, colour) per distinct colour
    assert colours
    ink = sum(n for n, c in colours if c != (255, 255, 255))
    assert ink > 0.05 * width * height, "the page is (nearly) blank"
    # Colours that only the charts use: the high-severity bars, the bar charts, the scanned strip.
    for colour, least in ((charts.SEVERITY_COLOURS[3], 2_000), (charts.BAR, 5_000), (charts.COVERED, 20_000)):
        found = sum(n for n, c in colours if _near(c, colour))
        assert found >= least, f"only {found} pixels of {colour}: a chart did not render"
