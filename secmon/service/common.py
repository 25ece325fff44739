"""What every flow shares: the operator's identity, the audit trail, and `setup`.

Each flow takes its client and clock as arguments (nothing connects at import
or construction time) and returns a summary; printing is the caller's business.
"""

from __future__ import annotations

import os
import pwd
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any

from secmon.config import Settings
from secmon.store.client import check, reporting
from secmon.store.indices import Indices
from secmon.store.templates import TemplateChange, install_templates
from secmon.types import iso

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


def operator() -> str:
    """Who is acting: the OS account of this process (never $LOGNAME or $USER, which anyone can set)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a container user with no passwd entry
        return f"uid:{os.getuid()}"


def actor(settings: Settings) -> str:
    """The name the audit trail records: the operator the config names, else the OS account."""
    return settings.operator or operator()


def indices_of(settings: Settings) -> Indices:
    return Indices(settings.elasticsearch.index_prefix)


def audit(es: Elasticsearch, indices: Indices, action: str, outcome: str, now: datetime,
          details: dict[str, Any], agency: str | None = None, message: str = "", user: str | None = None) -> None:
    doc = audit_doc(action, outcome, now, details, agency, message, user)
    with reporting(es, "write the audit trail"):
        es.index(index=indices.audit, document=doc)


def audit_doc(action: str, outcome: str, now: datetime, details: dict[str, Any], agency: str | None = None,
              message: str = "", user: str | None = None) -> dict[str, Any]:
    """One entry of the audit trail (`{prefix}-audit`), for `audit` or for a bulk that writes it with others."""
    doc: dict[str, Any] = {
        "@timestamp": iso(now), "event": {"action": action, "outcome": outcome},
        "user": {"name": user or operator()}, "host": {"hostname": socket.gethostname()},
        "secmon": {"details": details, "command": action}, "message": message}
    if agency:
        doc["organization"] = {"id": agency}
    return doc


def setup(es: Elasticsearch, settings: Settings, now: datetime) -> tuple[str, list[TemplateChange]]:
    version = check(es)
    indices = indices_of(settings)
    changes = install_templates(es, indices)
    audit(es, indices, "setup", "success", now, {"templates": [c.name for c in changes if c.changed]})
    return version, changes
