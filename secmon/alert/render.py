"""Render an incident as an email in the agency's language and local time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from secmon.config import Agency
from secmon.detect.anomaly.explain import lines as explanation_lines
from secmon.model import Incident, Severity

TEXT = {
    "vi": {
        "alert": "Cảnh báo an ninh",
        "intro": "Hệ thống giám sát an toàn thông tin phát hiện sự cố sau tại đơn vị của quý cơ quan:",
        "rule": "Quy tắc phát hiện", "severity": "Mức độ", "agency": "Đơn vị", "group": "Đối tượng",
        "first": "Bắt đầu", "last": "Kết thúc", "count": "Số sự kiện", "incident": "Mã sự cố",
        "techniques": "Kỹ thuật ATT&CK", "description": "Mô tả",
        "footer": "Thư này do secmon gửi tự động. Vui lòng xác minh và phản hồi cho trung tâm giám sát.",
        "tz": "giờ Việt Nam",
        "digest": "sự cố mới",
        "digest_intro": "Hệ thống giám sát an toàn thông tin phát hiện {n} sự cố mới tại đơn vị của quý cơ quan:",
    },
    "en": {
        "alert": "Security alert",
        "intro": "The security monitoring centre detected the following incident at your agency:",
        "rule": "Rule", "severity": "Severity", "agency": "Agency", "group": "Entity",
        "first": "First seen", "last": "Last seen", "count": "Events", "incident": "Incident id",
        "techniques": "ATT&CK techniques", "description": "Description",
        "footer": "This message was sent automatically by secmon. Please verify and reply to the monitoring centre.",
        "tz": "local time",
        "digest": "new incidents",
        "digest_intro": "The security monitoring centre detected {n} new incidents at your agency:",
    },
}

SEVERITY_NAMES = {
    "vi": {Severity.INFORMATIONAL: "Thông tin", Severity.LOW: "Thấp", Severity.MEDIUM: "Trung bình",
           Severity.HIGH: "Cao", Severity.CRITICAL: "Nghiêm trọng"},
    "en": {s: s.value.capitalize() for s in Severity},
}


def local(moment: datetime, timezone: str) -> str:
    return moment.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)")


def render(incident: Incident, agency: Agency) -> tuple[str, str]:
    """(subject, plain-text body)."""
    text, finding = TEXT[agency.language], incident.finding
    severity = SEVERITY_NAMES[agency.language][finding.severity]
    entity = ", ".join(f"{k}={v}" for k, v in finding.group) or "-"
    subject = f"[secmon][{severity}] {text['alert']}: {finding.rule_title} ({entity})"
    techniques = ", ".join(t.split(".", 1)[1].upper() for t in finding.tags if t.startswith("attack.t")) or "-"
    lines = [
        text["intro"], "",
        f"{text['rule']}: {finding.rule_title}",
        f"{text['severity']}: {severity}",
        f"{text['agency']}: {agency.name} ({agency.id})",
        f"{text['group']}: {entity}",
        f"{text['first']}: {local(finding.first_seen, agency.timezone)}",
        f"{text['last']}: {local(finding.last_seen, agency.timezone)}",
        f"{text['count']}: {finding.count}",
        f"{text['techniques']}: {techniques}",
        f"{text['incident']}: {incident.id}",
    ]
    if finding.description:
        lines += ["", f"{text['description']}: {finding.description.strip()}"]
    if finding.explanation is not None:
        lines += ["", *explanation_lines(finding.explanation, agency.language)]
    lines += ["", "--", text["footer"]]
    return subject, "\n".join(lines) + "\n"


def render_digest(incidents: list[Incident], agency: Agency) -> tuple[str, str]:
    """One email for many incidents: a line each, most severe first."""
    text = TEXT[agency.language]
    names = SEVERITY_NAMES[agency.language]
    ordered = sorted(incidents, key=lambda i: (-i.finding.severity.rank, i.finding.first_seen))
    top = names[ordered[0].finding.severity]
    subject = f"[secmon][{top}] {text['alert']}: {len(incidents)} {text['digest']} ({agency.name})"
    lines = [text["digest_intro"].format(n=len(incidents)), ""]
    for incident in ordered:
        f = incident.finding
        entity = ", ".join(f"{k}={v}" for k, v in f.group) or "-"
        lines.append(f"- [{names[f.severity]}] {f.rule_title} | {entity} | {local(f.first_seen, agency.timezone)}"
                     f" .. {local(f.last_seen, agency.timezone)} | {text['count']}: {f.count} | {incident.id}")
    lines += ["", "--", text["footer"]]
    return subject, "\n".join(lines) + "\n"
