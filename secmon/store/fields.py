"""The field names of secmon's own indices that dashboards and reports read, in one place.

The Kibana objects (`secmon/kibana/`) and the monthly report (`secmon/report/`) name
fields only through these classes, so that a renamed field in `store/templates/*.json`
is one edit here; `tests/unit/test_kibana_objects.py` checks every name below against
the template it belongs to (a renamed or retyped field fails loudly there). The
writers (incidents, outbox, scans, audit) still spell their documents out in full:
a document is easier to review whole.
"""

from __future__ import annotations

from collections.abc import Iterator


class IndexFields:
    """Base: `TEMPLATE` names the file in store/templates/; every other upper-case attribute is a field."""

    TEMPLATE = ""

    @classmethod
    def names(cls) -> Iterator[tuple[str, str]]:
        for attribute in dir(cls):
            value = getattr(cls, attribute)
            if attribute.isupper() and attribute != "TEMPLATE" and isinstance(value, str):
                yield attribute, value


class Incident(IndexFields):
    TEMPLATE = "incidents"
    TIME = "event.start"  # first seen: the time field of the data view, and what puts an incident in a month
    END = "event.end"
    CREATED = "event.created"  # when secmon opened it
    ID = "secmon.id"
    AGENCY = "organization.id"
    RULE_ID = "rule.id"
    RULE_NAME = "rule.name"
    SEVERITY = "secmon.severity"  # informational .. critical
    SEVERITY_RANK = "event.severity"  # 0 .. 4, for sorting
    STATUS = "secmon.status"  # open, acknowledged, closed
    RESOLUTION = "secmon.resolution"
    DETECTOR = "secmon.detector"  # rule or anomaly
    GROUP = "secmon.group"  # the entity: "source.ip=203.0.113.9"
    TECHNIQUE = "threat.technique.id"
    COUNT = "event.count"
    OCCURRENCES = "secmon.occurrences"
    UPDATED = "secmon.updated"
    HISTORY = "secmon.history"  # [{at, action, user, note, status}]: read from _source (not nested)
    HISTORY_AT = "secmon.history.at"
    HISTORY_ACTION = "secmon.history.action"
    HISTORY_USER = "secmon.history.user"


class Alert(IndexFields):
    TEMPLATE = "alerts"
    TIME = "@timestamp"  # queued
    AGENCY = "organization.id"
    INCIDENT = "secmon.incident_id"
    STATUS = "secmon.status"  # pending, sending, sent, failed
    ATTEMPTS = "secmon.attempts"
    SENT_AT = "secmon.sent_at"
    LAST_ERROR = "secmon.last_error"
    SUBJECT = "secmon.subject"
    LANGUAGE = "secmon.language"


class Scan(IndexFields):
    TEMPLATE = "scans"
    TIME = "@timestamp"
    WINDOW_FROM = "secmon.window_from"
    WINDOW_TO = "secmon.window_to"
    RULES_RUN = "secmon.rules_run"
    RULES_FAILED = "secmon.rules_failed"
    FAILED_RULE = "secmon.failures.rule"
    OUTCOME = "event.outcome"
    DURATION = "event.duration"  # nanoseconds
    INCIDENTS = "secmon.incidents"
    NEW_INCIDENTS = "secmon.new_incidents"
    TRIGGER = "secmon.trigger"
    HOST = "host.hostname"


class Audit(IndexFields):
    TEMPLATE = "audit"
    TIME = "@timestamp"
    ACTION = "event.action"
    OUTCOME = "event.outcome"
    USER = "user.name"
    HOST = "host.hostname"
    AGENCY = "organization.id"
    COMMAND = "secmon.command"
    MESSAGE = "message"


class Exclusion(IndexFields):
    TEMPLATE = "exceptions"
    TIME = "@timestamp"
    KIND = "secmon.kind"  # exception or suppression
    RULE = "secmon.rule"
    AGENCY = "secmon.agency"  # an agency id or "*" (every agency): not organization.id
    EXPIRES = "secmon.expires"
    AUTHOR = "secmon.author"
    CONDITION_FIELD = "secmon.conditions.field"
    CONDITION_VALUE = "secmon.conditions.value"
    REASON = "secmon.reason"  # text: shown, never aggregated


class Event(IndexFields):
    TEMPLATE = "events"
    TIME = "@timestamp"
    INGESTED = "event.ingested"
    AGENCY = "organization.id"
    DATASET = "event.dataset"  # the source: system.auth, nginx.access, ...
    HOST = "host.hostname"


class DeadLetter(IndexFields):
    TEMPLATE = "deadletter"
    TIME = "@timestamp"
    AGENCY = "organization.id"
    REASON = "error.message"
    PIPELINE = "secmon.pipeline"
    SOURCE = "secmon.source"


class JobState(IndexFields):
    """The scheduler's job documents in `{prefix}-state` (watermark, lag), when a scheduler wrote them."""

    TEMPLATE = "state"  # and the index: {prefix}-state
    KIND = "kind"  # "job" for a job's document, "lease" for the lease
    JOB = "job"
    WATERMARK = "value"  # scan: every event ingested before this was scanned
    LAG = "lag_seconds"
    LAST_OUTCOME = "last.outcome"
    LAST_AT = "last.at"


ALL: tuple[type[IndexFields], ...] = (Incident, Alert, Scan, Audit, Exclusion, Event, DeadLetter, JobState)
