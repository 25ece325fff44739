"""An outbox document -> the MIME message: multipart/alternative, text and HTML, local Date.

The headers are a fixed set. Addresses come from the config only; the Subject was made
safe when the document was rendered and is cleaned again here, because the outbox is
an index anyone with write access could have edited.
"""

from __future__ import annotations

import re
from datetime import datetime
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from zoneinfo import ZoneInfo

from secmon.alert.render import SUBJECT_LIMIT
from secmon.alert.safe import body_text, header_text
from secmon.model import Delivery

# 7bit: text parts are quoted-printable or base64, so no server without 8BITMIME can mangle Vietnamese.
# refold_source "none": the Subject we encode below is written as is.
POLICY = policy.SMTP.clone(cte_type="7bit", refold_source="none")
HEADERS = frozenset({"from", "to", "subject", "date", "message-id", "auto-submitted", "content-language",
                     "x-secmon-incident", "mime-version", "content-type"})
MAX_INCIDENT_IDS = 100  # in the X-Secmon-Incident header; a digest lists the rest in its body
_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


def message_id(delivery_id: str, sender: str) -> str:
    """The Message-ID of an outbox document: the same on every resend of it."""
    return f"<{delivery_id}@{sender.rpartition('@')[2] or 'secmon'}>"


def encoded_subject(subject: str) -> str:
    """RFC 2047 encoded words, folded, always UTF-8.

    Not left to the email package's folder: CPython 3.11's can split an encoded word in two where
    ASCII and non-ASCII words meet (`=?utf-8?q?user=2Ename=3D=C2=` then a new word), which mail
    clients then show raw. The legacy encoder splits only between characters.
    """
    return Header(subject, "utf-8", header_name="Subject").encode(linesep="\n")


def build(delivery: Delivery, sender: str, now: datetime) -> EmailMessage:
    """Raises ValueError (or its subclasses) when the document cannot become a message."""
    message = EmailMessage(policy=POLICY)
    message["From"] = Address(addr_spec=sender)
    message["To"] = Address(addr_spec=delivery.recipient)
    message.set_raw("Subject", encoded_subject(header_text(delivery.subject, SUBJECT_LIMIT)))
    message["Date"] = format_datetime(now.astimezone(ZoneInfo(delivery.timezone)))  # local offset, not -0000
    message["Message-ID"] = delivery.message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to us
    ids = [i for i in delivery.incident_ids[:MAX_INCIDENT_IDS] if _ID.match(i)]
    if ids:
        message["X-Secmon-Incident"] = " ".join(ids)
    message.set_content(body_text(delivery.text))
    message.add_alternative(body_text(delivery.html), subtype="html")
    message["Content-Language"] = header_text(delivery.language, 16)  # after the parts: set_content drops Content-* headers
    return message
