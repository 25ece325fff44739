"""What auditors and analysts see in Kibana: data views, saved searches, charts and dashboards. Pure.

This is the source that `secmon kibana export` turns into `kibana/secmon-saved-objects.ndjson`
(and, for one agency's space, into that space's objects). Each chart is one readable
line: what it counts, split by what. Field names come from `store/fields.py` only.

Ids are literals (or, in an agency's space, `<id>--<agency>`): importing again
overwrites the same objects, and a dashboard's links to its charts never break.
"""

from __future__ import annotations

from dataclasses import dataclass

from secmon.kibana.lens import (
    Dashboard,
    DataView,
    Lens,
    Panel,
    RuntimeField,
    SavedSearch,
    count,
    date_histogram,
    metric,
    terms,
)
from secmon.store.fields import (
    Alert,
    Audit,
    DeadLetter,
    Event,
    Exclusion,
    Incident,
    Scan,
)
from secmon.store.indices import Indices
from secmon.store.templates import TEMPLATE_NAMES, load_template
from secmon.types import AGENCY_FIELD

# Names and time fields of the data views we curate; any other template gets a plain one.
VIEW_NAMES = {
    "incidents": ("secmon: incidents", Incident.TIME), "alerts": ("secmon: alert deliveries", Alert.TIME),
    "scans": ("secmon: scan runs", Scan.TIME), "audit": ("secmon: audit trail", Audit.TIME),
    "events": ("secmon: events", Event.TIME), "deadletter": ("secmon: dead letters", DeadLetter.TIME),
    # Exceptions are decisions, not a time series: the time picker must not hide one still in force.
    "exceptions": ("secmon: exceptions and suppressions", None),
}


def _minutes_between(first: str, then: str) -> str:
    """Painless: minutes from the incident's first `first` step (else its creation) to its first `then` step."""
    return (
        "def s = params['_source']['secmon']; if (s == null || s['history'] == null) { return; } "
        "String start = null; String end = null; "
        f"for (def h : s['history']) {{ if (start == null && h['action'] == '{first}') {{ start = h['at']; }} "
        f"if (end == null && h['action'] == '{then}') {{ end = h['at']; }} }} "
        "if (end == null) { return; } "
        "long from = 0; "
        "if (start != null) { from = ZonedDateTime.parse(start).toInstant().toEpochMilli(); } "
        f"else if (doc['{Incident.CREATED}'].size() > 0) {{ from = doc['{Incident.CREATED}'].value.toInstant()"
        ".toEpochMilli(); } else { return; } "
        "emit((ZonedDateTime.parse(end).toInstant().toEpochMilli() - from) / 60000.0);"
    )


def _seconds_between(earlier: str, later: str) -> str:
    return (f"if (doc['{earlier}'].size() > 0 && doc['{later}'].size() > 0) {{ "
            f"emit((doc['{later}'].value.toInstant().toEpochMilli() - "
            f"doc['{earlier}'].value.toInstant().toEpochMilli()) / 1000.0); }}")


TO_ACK = RuntimeField("secmon.minutes_to_acknowledge", "double", _minutes_between("opened", "acknowledged"),
                      (Incident.HISTORY_AT, Incident.HISTORY_ACTION, Incident.CREATED))
TO_CLOSE = RuntimeField("secmon.minutes_to_close", "double", _minutes_between("opened", "closed"),
                        (Incident.HISTORY_AT, Incident.HISTORY_ACTION, Incident.CREATED))
SCAN_LAG = RuntimeField("secmon.lag_seconds", "double", _seconds_between(Scan.WINDOW_TO, Scan.TIME),
                        (Scan.WINDOW_TO, Scan.TIME))
INGEST_LAG = RuntimeField("secmon.ingest_lag_seconds", "double", _seconds_between(Event.TIME, Event.INGESTED),
                          (Event.TIME, Event.INGESTED))
# In an agency's space, these data views name the agency's own indices.
OWN = {"events": Indices.events_pattern, "deadletter": Indices.deadletter}
RUNTIME = {"incidents": (TO_ACK, TO_CLOSE), "scans": (SCAN_LAG,), "events": (INGEST_LAG,)}


@dataclass(frozen=True)
class Bundle:
    """The objects one Kibana space gets, in import order (data views before what uses them)."""

    views: tuple[DataView, ...]
    searches: tuple[SavedSearch, ...]
    charts: tuple[Lens, ...]
    dashboards: tuple[Dashboard, ...]


def data_views(prefix: str, agency: str | None = None) -> dict[str, DataView]:
    """One data view per index template; in an agency's space, its own event and dead-letter indices."""
    views = {}
    for name in TEMPLATE_NAMES:
        template = load_template(name, prefix)
        title = template["index_patterns"][0]
        if agency and name in OWN:  # the agency's own indices, not the pattern of all agencies
            title = OWN[name](Indices(prefix), agency)
        mapped = template["template"]["mappings"].get("properties", {})
        label, time_field = VIEW_NAMES.get(name, (f"secmon: {name}", "@timestamp" if "@timestamp" in mapped else None))
        views[name] = DataView(_id(f"secmon-{name}", agency), title, label + (f" ({agency})" if agency else ""),
                               time_field, name, RUNTIME.get(name, ()))
    return views


def _id(base: str, agency: str | None) -> str:
    return f"{base}--{agency}" if agency else base


# --- the centre's space -----------------------------------------------------------------------

def centre(prefix: str) -> Bundle:
    v = data_views(prefix)
    inc, alerts, scans, audit, exc, events, dead = (v["incidents"], v["alerts"], v["scans"], v["audit"],
                                                    v["exceptions"], v["events"], v["deadletter"])
    searches = (
        SavedSearch("secmon-open-incidents", "secmon: open incidents by severity", inc,
                    (Incident.AGENCY, Incident.SEVERITY, Incident.RULE_NAME, Incident.GROUP, Incident.COUNT,
                     Incident.END), (Incident.SEVERITY_RANK, "desc"), f'{Incident.STATUS} : "open"'),
        SavedSearch("secmon-pending-alerts", "secmon: alerts not yet delivered", alerts,
                    (Alert.AGENCY, Alert.SUBJECT, Alert.STATUS, Alert.ATTEMPTS, Alert.LAST_ERROR),
                    (Alert.TIME, "desc"), f'not {Alert.STATUS} : "sent"'),
        SavedSearch("secmon-failed-scans", "secmon: scan runs with failed rules", scans,
                    (Scan.WINDOW_FROM, Scan.WINDOW_TO, Scan.RULES_RUN, Scan.RULES_FAILED, Scan.FAILED_RULE),
                    (Scan.TIME, "desc"), f"{Scan.RULES_FAILED} > 0"),
        SavedSearch("secmon-audit-trail", "secmon: audit trail", audit,
                    (Audit.ACTION, Audit.OUTCOME, Audit.USER, Audit.HOST, Audit.AGENCY, Audit.MESSAGE),
                    (Audit.TIME, "desc")),
        SavedSearch("secmon-deadletters", "secmon: dead-lettered lines by reason", dead,
                    (DeadLetter.AGENCY, DeadLetter.PIPELINE, DeadLetter.REASON, DeadLetter.SOURCE),
                    (DeadLetter.TIME, "desc")),
        SavedSearch("secmon-exceptions-in-force", "secmon: exceptions and suppressions in force", exc,
                    (Exclusion.KIND, Exclusion.AGENCY, Exclusion.RULE, Exclusion.CONDITION_FIELD,
                     Exclusion.CONDITION_VALUE, Exclusion.EXPIRES, Exclusion.AUTHOR, Exclusion.REASON),
                    (Exclusion.EXPIRES, "asc"), f"{Exclusion.EXPIRES} > now"),
    )
    s = {search.id: search for search in searches}

    incidents_n = Lens("secmon-soc-incidents", "Incidents", inc, "metric", metrics=(count("Incidents"),))
    open_n = Lens("secmon-soc-open", "Open incidents", inc, "metric",
                  metrics=(count("Open", f'{Incident.STATUS} : "open"'),))
    tta = Lens("secmon-soc-mtta", "Mean time to acknowledge (minutes)", inc, "metric",
               metrics=(metric("average", TO_ACK.name, "Minutes to acknowledge"),))
    ttc = Lens("secmon-soc-mttc", "Mean time to close (minutes)", inc, "metric",
               metrics=(metric("average", TO_CLOSE.name, "Minutes to close"),))
    by_severity = Lens("secmon-soc-by-severity", "Incidents over time by severity", inc, "bar",
                       (date_histogram(Incident.TIME), terms(Incident.SEVERITY, "Severity", 5)), (count("Incidents"),))
    by_agency = Lens("secmon-soc-by-agency", "Incidents over time by agency", inc, "bar",
                     (date_histogram(Incident.TIME), terms(Incident.AGENCY, "Agency", 20)), (count("Incidents"),))
    by_status = Lens("secmon-soc-by-status", "Open, acknowledged, closed", inc, "donut",
                     (terms(Incident.STATUS, "Status", 3),), (count("Incidents"),))
    resolutions = Lens("secmon-soc-resolutions", "Closed incidents by resolution", inc, "donut",
                       (terms(Incident.RESOLUTION, "Resolution", 3),), (count("Incidents"),),
                       f'{Incident.STATUS} : "closed"')
    top_rules = Lens("secmon-soc-top-rules", "Top rules", inc, "table",
                     (terms(Incident.RULE_NAME, "Rule", 15),),
                     (count("Incidents"), metric("unique_count", Incident.AGENCY, "Agencies"),
                      metric("sum", Incident.COUNT, "Events")))
    techniques = Lens("secmon-soc-techniques", "Top ATT&CK techniques", inc, "bar_horizontal",
                      (terms(Incident.TECHNIQUE, "Technique", 15),), (count("Incidents"),))
    entities = Lens("secmon-soc-entities", "Top entities", inc, "table",
                    (terms(Incident.GROUP, "Entity", 20), terms(Incident.AGENCY, "Agency", 5)),
                    (count("Incidents"), metric("sum", Incident.COUNT, "Events")))
    anomalies = Lens("secmon-soc-anomalies", "Anomaly incidents over time", inc, "bar",
                     (date_histogram(Incident.TIME), terms(Incident.RULE_NAME, "Detector", 10)), (count("Incidents"),),
                     f'{Incident.DETECTOR} : "anomaly"')
    soc = Dashboard("secmon-soc-overview", "secmon: SOC overview",
                    "What was detected, how fast it was handled, and where (all agencies).",
                    ((Panel(incidents_n, 12, 6), Panel(open_n, 12, 6), Panel(tta, 12, 6), Panel(ttc, 12, 6)),
                     (Panel(by_severity, 24, 12), Panel(by_agency, 24, 12)),
                     (Panel(by_status, 12, 12), Panel(resolutions, 12, 12), Panel(techniques, 24, 12)),
                     (Panel(top_rules, 24, 14), Panel(entities, 24, 14)),
                     (Panel(anomalies, 48, 10),)),
                    searches=(s["secmon-open-incidents"],))

    scans_n = Lens("secmon-audit-scans", "Scan runs", scans, "metric", metrics=(count("Scan runs"),))
    scans_failed = Lens("secmon-audit-scans-failed", "Scan runs with failed rules", scans, "metric",
                        metrics=(count("Runs with failures", f"{Scan.RULES_FAILED} > 0"),))
    scanned_to = Lens("secmon-audit-scanned-to", "Scanned up to", scans, "metric",
                      metrics=(metric("max", Scan.WINDOW_TO, "Latest window end", "date"),))
    lag = Lens("secmon-audit-scan-lag", "Scan lag (seconds behind the window end)", scans, "line",
               (date_histogram(Scan.TIME),),
               (metric("average", SCAN_LAG.name, "Average lag"), metric("max", SCAN_LAG.name, "Worst lag")))
    windows = Lens("secmon-audit-windows", "Windows scanned per day", scans, "table",
                   (date_histogram(Scan.TIME, "1d", "Day"), terms(Scan.TRIGGER, "Trigger", 5)),
                   (count("Runs"), metric("min", Scan.WINDOW_FROM, "From", "date"),
                    metric("max", Scan.WINDOW_TO, "To", "date"), metric("sum", Scan.NEW_INCIDENTS, "New incidents")))
    failing = Lens("secmon-audit-failing-rules", "Failing rules", scans, "table",
                   (terms(Scan.FAILED_RULE, "Rule", 20),), (count("Scan runs"),))
    deliveries = Lens("secmon-audit-deliveries", "Alert deliveries by status and agency", alerts, "bar_horizontal",
                      (terms(Alert.AGENCY, "Agency", 20), terms(Alert.STATUS, "Status", 4)), (count("Alerts"),))
    deliveries_time = Lens("secmon-audit-deliveries-time", "Alert deliveries over time", alerts, "bar",
                           (date_histogram(Alert.TIME), terms(Alert.STATUS, "Status", 4)), (count("Alerts"),))
    trail = Lens("secmon-audit-trail-table", "Audit trail by action, user and outcome", audit, "table",
                 (terms(Audit.ACTION, "Action", 20), terms(Audit.USER, "User", 10), terms(Audit.OUTCOME, "Outcome", 3)),
                 (count("Entries"),))
    trail_time = Lens("secmon-audit-trail-time", "Audit trail over time by outcome", audit, "bar",
                      (date_histogram(Audit.TIME), terms(Audit.OUTCOME, "Outcome", 3)), (count("Entries"),))
    in_force = Lens("secmon-audit-exceptions", "Exceptions and suppressions in force", exc, "table",
                    (terms(Exclusion.KIND, "Kind", 2), terms(Exclusion.AGENCY, "Agency", 20),
                     terms(Exclusion.RULE, "Rule", 20)),
                    (count("In force"), metric("min", Exclusion.EXPIRES, "First expiry", "date")),
                    f"{Exclusion.EXPIRES} > now")
    audit_board = Dashboard("secmon-audit-overview", "secmon: Audit",
                            "Was everything scanned, who was told, and who did what.",
                            ((Panel(scans_n, 12, 6), Panel(scans_failed, 12, 6), Panel(scanned_to, 24, 6)),
                             (Panel(windows, 24, 14), Panel(lag, 24, 14)),
                             (Panel(failing, 16, 12), Panel(deliveries, 32, 12)),
                             (Panel(deliveries_time, 48, 10),),
                             (Panel(trail, 24, 14), Panel(trail_time, 24, 14)),
                             (Panel(in_force, 48, 10),)),
                            searches=(s["secmon-audit-trail"], s["secmon-exceptions-in-force"]))

    health = _health_charts(None, events, dead)
    health_board = Dashboard("secmon-data-health", "secmon: Data health",
                             "Is every agency's data arriving, parsed, and on time?",
                             ((Panel(health[0], 24, 12), Panel(health[1], 24, 12)),
                              (Panel(health[2], 24, 14), Panel(health[3], 24, 14)),
                              (Panel(health[4], 24, 12), Panel(health[5], 24, 12))),
                             searches=(s["secmon-deadletters"],))
    boards = (soc, audit_board, health_board)
    return Bundle(tuple(v.values()), searches, _charts(boards), boards)


def _health_charts(agency: str | None, events: DataView, dead: DataView) -> tuple[Lens, ...]:
    base = "secmon-health"
    return (
        Lens(_id(f"{base}-events-agency", agency), "Events per hour by agency", events, "bar",
             (date_histogram(Event.TIME, "1h"), terms(Event.AGENCY, "Agency", 20)), (count("Events"),)),
        Lens(_id(f"{base}-events-source", agency), "Events per hour by source", events, "bar",
             (date_histogram(Event.TIME, "1h"), terms(Event.DATASET, "Source", 20)), (count("Events"),)),
        Lens(_id(f"{base}-sources", agency), "Sources: last event and last arrival", events, "table",
             (terms(Event.AGENCY, "Agency", 50), terms(Event.DATASET, "Source", 20)),
             (count("Events"), metric("max", Event.TIME, "Last event", "date"),
              metric("max", Event.INGESTED, "Last arrival", "date"))),
        Lens(_id(f"{base}-ingest-lag", agency), "Ingest lag (seconds from event to Elasticsearch)", events, "line",
             (date_histogram(Event.INGESTED),),
             (metric("average", INGEST_LAG.name, "Average lag"), metric("max", INGEST_LAG.name, "Worst lag"))),
        Lens(_id(f"{base}-deadletter-reasons", agency), "Dead letters by reason", dead, "bar_horizontal",
             (terms(DeadLetter.REASON, "Reason", 15),), (count("Dead letters"),)),
        Lens(_id(f"{base}-deadletter-time", agency), "Dead letters over time by pipeline", dead, "bar",
             (date_histogram(DeadLetter.TIME), terms(DeadLetter.PIPELINE, "Pipeline", 10)), (count("Dead letters"),)),
    )


# --- one agency's space -----------------------------------------------------------------------

def agency_space(prefix: str, agency: str, name: str) -> Bundle:
    """The agency's own dashboard over its own data; its role's document-level security agrees."""
    v = data_views(prefix, agency)
    inc, alerts, events, dead = v["incidents"], v["alerts"], v["events"], v["deadletter"]
    a = agency
    incidents_n = Lens(_id("secmon-agency-incidents", a), "Incidents", inc, "metric", metrics=(count("Incidents"),))
    open_n = Lens(_id("secmon-agency-open", a), "Open incidents", inc, "metric",
                  metrics=(count("Open", f'{Incident.STATUS} : "open"'),))
    tta = Lens(_id("secmon-agency-mtta", a), "Mean time to acknowledge (minutes)", inc, "metric",
               metrics=(metric("average", TO_ACK.name, "Minutes to acknowledge"),))
    by_severity = Lens(_id("secmon-agency-by-severity", a), "Incidents over time by severity", inc, "bar",
                       (date_histogram(Incident.TIME), terms(Incident.SEVERITY, "Severity", 5)), (count("Incidents"),))
    rules = Lens(_id("secmon-agency-rules", a), "Rules and entities", inc, "table",
                 (terms(Incident.RULE_NAME, "Rule", 15), terms(Incident.GROUP, "Entity", 10),
                  terms(Incident.STATUS, "Status", 3)),
                 (count("Incidents"), metric("sum", Incident.COUNT, "Events")))
    told = Lens(_id("secmon-agency-alerts", a), "Alerts by status", alerts, "donut",
                (terms(Alert.STATUS, "Status", 4),), (count("Alerts"),))
    health = _health_charts(a, events, dead)
    board = Dashboard(_id("secmon-agency", a), f"secmon: {name}",
                      f"Incidents, alerts and data health of {name} ({agency}) only.",
                      ((Panel(incidents_n, 16, 6), Panel(open_n, 16, 6), Panel(tta, 16, 6)),
                       (Panel(by_severity, 32, 12), Panel(told, 16, 12)),
                       (Panel(rules, 48, 14),),
                       (Panel(health[1], 24, 12), Panel(health[3], 24, 12)),
                       (Panel(health[2], 24, 12), Panel(health[4], 24, 12))),
                      query=f'{AGENCY_FIELD} : "{agency}"')  # every view of this board has the field
    views = tuple(v[name] for name in ("incidents", "alerts", "events", "deadletter"))
    return Bundle(views, (), _charts((board,)), (board,))


def _charts(boards: tuple[Dashboard, ...]) -> tuple[Lens, ...]:
    seen: dict[str, Lens] = {}
    for board in boards:
        for _, panel, _ in board.panels():
            seen.setdefault(panel.lens.id, panel.lens)
    return tuple(seen.values())
