"""The sample email of `secmon alerts test-email`: the real templates, message and SMTP path, no outbox."""

from __future__ import annotations

from datetime import datetime, timedelta

from secmon.alert.message import message_id
from secmon.alert.render import Templates, alert_context
from secmon.config import Agency, Settings
from secmon.model import Delivery, Finding, Incident, Notification, Severity, stable_id
from secmon.types import iso


def sample_delivery(settings: Settings, agency: Agency, to: str, now: datetime) -> Delivery:
    finding = Finding(
        rule_id="secmon-test-email", rule_title="secmon test email", severity=Severity.INFORMATIONAL,
        agency=agency.id, group=(("host.hostname", "test-host"),), first_seen=now - timedelta(minutes=5),
        last_seen=now, count=1, description="A test of the alert email path. No action is needed.",
        translations=(("vi", "Thư thử nghiệm của secmon", "Thư kiểm tra đường gửi cảnh báo. Không cần xử lý."),))
    incident = Incident(stable_id("test-email", to, iso(now)), finding, created=now)
    context = alert_context(Notification(incident, "opened", "test"), agency.name, agency.language, agency.timezone,
                            settings)
    rendered = Templates.of(settings).render("alert", agency.language, context)
    delivery_id = stable_id("test-email", to, iso(now))
    return Delivery(id=delivery_id, kind="alert", agencies=(agency.id,), recipient=to, language=agency.language,
                    timezone=agency.timezone, subject=rendered.subject, text=rendered.text, html=rendered.html,
                    message_id=message_id(delivery_id, settings.smtp.sender), incident_ids=(incident.id,), queued=now)
