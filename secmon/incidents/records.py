"""Incidents in Elasticsearch: read the groups' latest incidents, write decisions, page and transition.

Writes use deterministic ids and optimistic concurrency: a create that meets an
existing document, or an update that meets a newer version, is a conflict that
`record` resolves by reading again and deciding again, so concurrent scans
converge instead of failing. Notifications are queued (through the `enqueue`
callback the service passes in) before the incidents are written: a crash in
between leaves a queued notification whose incident the next run writes with the
same id; the outbox ignores the second copy of a notification.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from secmon.errors import InputError, StoreUnavailable
from secmon.incidents.grouping import Burst, Decision, Policy, State, decide_all, reach_of
from secmon.model import Change, Contribution, Explanation, Finding, Incident, Notification, Severity
from secmon.store.client import reporting
from secmon.store.indices import Indices
from secmon.types import iso, parse_iso

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

Version = tuple[int, int]  # (seq_no, primary_term) of the stored document
MAX_ROUNDS = 5
MAX_NEAR = 10_000  # incidents one scan may fold into


@dataclass(frozen=True)
class Recorded:
    decisions: tuple[Decision, ...]
    notifications: tuple[Notification, ...]

    @property
    def incidents(self) -> tuple[Incident, ...]:
        return tuple(d.state.incident for d in self.decisions)

    @property
    def new(self) -> tuple[Incident, ...]:
        return tuple(d.state.incident for d in self.decisions if d.is_new)


# --- documents ------------------------------------------------------------------------------

def to_doc(state: State, scan_id: str = "") -> dict[str, Any]:
    incident, finding = state.incident, state.incident.finding
    techniques = [t.split(".", 1)[1].upper() for t in finding.tags if t.startswith("attack.t")]
    created = incident.created or finding.first_seen
    return {
        "@timestamp": iso(finding.first_seen),
        "organization": {"id": finding.agency},
        "rule": {"id": finding.rule_id, "name": finding.rule_title, "description": finding.description},
        "event": {"kind": "alert", "severity": finding.severity.rank, "start": iso(finding.first_seen),
                  "end": iso(finding.last_seen), "count": finding.count, "created": iso(created)},
        "secmon": {
            "id": incident.id, "group_key": state.group_key, "detector": finding.detector,
            "severity": finding.severity.value, "status": incident.status, "resolution": incident.resolution,
            "group": [f"{k}={v}" for k, v in finding.group], "group_fields": [k for k, _ in finding.group],
            "sample_event_ids": list(finding.sample_event_ids), "scan_id": scan_id,
            "occurrences": incident.occurrences, "updated": iso(incident.updated or created),
            "bursts": [{"start": iso(b.start), "end": iso(b.end), "count": b.count} for b in state.bursts],
            "contributions": [{"key": k, "count": c} for k, c in state.contributions],
            "history": [{"at": iso(c.at), "action": c.action, "user": c.user, "note": c.note, "status": c.status}
                        for c in incident.history],
            "i18n": {lang: {"title": title, "description": text} for lang, title, text in finding.translations},
            **({"explanation": explanation_doc(finding.explanation)} if finding.explanation else {}),
        },
        "threat": {"technique": {"id": techniques}},
        "tags": list(finding.tags),
    }


def explanation_doc(e: Explanation) -> dict[str, Any]:
    return {"score": e.score, "threshold": e.threshold, "model": e.model, "query": e.query, "note": e.note,
            "centre_wide": e.centre_wide,
            "contributions": [{"feature": c.feature, "actual": c.actual, "typical": c.typical,
                               "percentile": c.percentile, "share": c.share} for c in e.contributions],
            "new_values": [{"feature": f, "values": list(v)} for f, v in e.new_values]}


def explanation_from(d: dict[str, Any]) -> Explanation:
    return Explanation(score=float(d["score"]), threshold=float(d["threshold"]), model=str(d["model"]),
                       contributions=tuple(Contribution(c["feature"], c["actual"], c.get("typical"), c["percentile"],
                                                        c["share"]) for c in d.get("contributions", ())),
                       new_values=tuple((n["feature"], tuple(n["values"])) for n in d.get("new_values", ())),
                       query=d.get("query", ""), note=d.get("note", ""),
                       centre_wide=bool(d.get("centre_wide", False)))


def from_doc(incident_id: str, doc: dict[str, Any]) -> State:
    s, event = doc["secmon"], doc["event"]
    group = tuple((k, v) for k, _, v in (item.partition("=") for item in s.get("group", [])))
    translations = tuple((lang, t.get("title", ""), t.get("description", ""))
                         for lang, t in (s.get("i18n") or {}).items())
    finding = Finding(
        rule_id=doc["rule"]["id"], rule_title=doc["rule"]["name"], severity=Severity(s["severity"]),
        agency=doc["organization"]["id"], group=group, first_seen=parse_iso(event["start"]),
        last_seen=parse_iso(event["end"]), count=event["count"], sample_event_ids=tuple(s.get("sample_event_ids", ())),
        tags=tuple(doc.get("tags", ())), description=doc["rule"].get("description", ""),
        translations=translations, detector=s.get("detector", "rule"),
        explanation=explanation_from(s["explanation"]) if s.get("explanation") else None)
    history = tuple(Change(parse_iso(c["at"]), c["action"], c["user"], c.get("note", ""), c.get("status", "open"))
                    for c in s.get("history", ()))
    created = parse_iso(event["created"])
    incident = Incident(id=incident_id, finding=finding, status=s["status"], created=created,
                        occurrences=s.get("occurrences", 1), resolution=s.get("resolution", ""),
                        updated=parse_iso(s["updated"]) if s.get("updated") else created, history=history)
    bursts = tuple(Burst(parse_iso(b["start"]), parse_iso(b["end"]), b["count"]) for b in s.get("bursts", ())) or (
        Burst(finding.first_seen, finding.last_seen, finding.count),)
    contributions = tuple((c["key"], c["count"]) for c in s.get("contributions", ())) or (("stored", finding.count),)
    return State(incident, bursts, s.get("group_key") or finding.group_key, contributions)


# --- scan time ------------------------------------------------------------------------------

# What a scan reads of a stored incident: what `decide` folds a finding into, and what the scan reports.
# Not the texts that come from the rule or detector file (description, translations, tags): the finding of
# the same group carries them (`with_texts`), and a merge does not rewrite them (`merge_doc`). Nor what
# `to_doc` derives again (threat, group_fields, @timestamp, the severity rank).
NEAR_FIELDS = [
    "event.start", "event.end", "event.count", "event.created", "rule.id", "rule.name", "organization.id",
    *(f"secmon.{name}" for name in ("id", "group_key", "detector", "severity", "status", "resolution", "group",
                                    "sample_event_ids", "occurrences", "updated", "bursts", "contributions",
                                    "history", "explanation")),
]


def with_texts(state: State, finding: Finding) -> State:
    """A state read with NEAR_FIELDS, given the texts of its rule from a finding of its group (same rule)."""
    texts = replace(state.incident.finding, description=finding.description, translations=finding.translations,
                    tags=finding.tags)
    return replace(state, incident=replace(state.incident, finding=texts))


def merge_doc(state: State, scan_id: str) -> dict[str, Any]:
    """The fields a merge changes (`grouping._merge`), for a partial update: the texts and the rest stay as stored."""
    full = to_doc(state, scan_id)
    event, s = full["event"], full["secmon"]
    return {
        "@timestamp": full["@timestamp"],
        "event": {key: event[key] for key in ("severity", "start", "end", "count")},
        "secmon": {key: s[key] for key in ("severity", "sample_event_ids", "scan_id", "occurrences", "updated",
                                           "bursts", "contributions", "history", *(("explanation",)
                                                                                   if "explanation" in s else ()))},
    }


def incidents_near(es: Elasticsearch, indices: Indices, findings: Sequence[Finding], quiet_period: timedelta
                   ) -> tuple[dict[str, list[State]], dict[str, Version]]:
    """The incidents of the findings' groups whose activity is within the quiet period of theirs,
    with their versions for conditional writes; read with NEAR_FIELDS, their texts from the findings."""
    by_group = {f.group_key: f for f in findings}
    keys = sorted(by_group)
    low = min(f.first_seen - reach_of(f, quiet_period) for f in findings)
    high = max(f.last_seen + reach_of(f, quiet_period) for f in findings)
    groups: dict[str, list[State]] = {}
    versions: dict[str, Version] = {}
    for i in range(0, len(keys), 1000):
        query = {"bool": {"filter": [{"terms": {"secmon.group_key": keys[i:i + 1000]}},
                                     {"range": {"event.end": {"gte": iso(low)}}},
                                     {"range": {"event.start": {"lte": iso(high)}}}]}}
        with reporting(es, "read the incidents of the groups found"):
            response = es.search(index=indices.incidents, query=query, size=MAX_NEAR, seq_no_primary_term=True,
                                 sort=[{"event.end": "asc"}], track_total_hits=MAX_NEAR + 1, ignore_unavailable=True,
                                 source_includes=NEAR_FIELDS)
        if response["hits"]["total"]["value"] > MAX_NEAR:
            raise StoreUnavailable(f"more than {MAX_NEAR} incidents overlap this scan's findings",
                                   hint="scan a shorter window")
        for hit in response["hits"]["hits"]:
            state = from_doc(hit["_id"], hit["_source"])
            state = with_texts(state, by_group[state.group_key])
            groups.setdefault(state.group_key, []).append(state)
            versions[hit["_id"]] = (hit["_seq_no"], hit["_primary_term"])
    return groups, versions


def record(es: Elasticsearch, indices: Indices, findings: Sequence[Finding], policy: Policy, now: datetime,
           enqueue: Callable[[list[Notification]], object], scan_id: str = "") -> Recorded:
    """Fold `findings` into incidents: queue their notifications, then write them; converge on conflicts."""
    pending = list(findings)
    done: dict[str, Decision] = {}
    notifications: dict[tuple[str, str], Notification] = {}
    for _ in range(MAX_ROUNDS):
        if not pending:
            break
        groups, versions = incidents_near(es, indices, pending, policy.quiet_period)
        decisions = decide_all(groups, pending, policy, now)
        queued = [n for d in decisions for n in d.notifications]
        if queued:
            enqueue(queued)  # first: a crash after it is repaired by the next run, not lost
        conflicted = _write(es, indices, decisions, versions, scan_id)
        for decision in decisions:
            if decision.state.incident.id not in conflicted:
                done[decision.state.incident.id] = decision
                notifications.update({(n.incident.id, n.key): n for n in decision.notifications})
        again = {d.state.group_key for d in decisions if d.state.incident.id in conflicted}
        pending = [f for f in pending if f.group_key in again]
        if pending:  # the other writer's document exists but a search may not see it before a refresh
            with reporting(es, "refresh the incidents"):
                es.indices.refresh(index=indices.incidents)
    if pending:
        raise StoreUnavailable(f"{len(pending)} findings could not be folded into incidents: other writers kept "
                               f"changing them ({MAX_ROUNDS} rounds)")
    return Recorded(tuple(done.values()), tuple(notifications.values()))


def _write(es: Elasticsearch, indices: Indices, decisions: list[Decision], versions: dict[str, Version],
           scan_id: str) -> set[str]:
    """Write what changed; the ids whose write met a conflict (someone else wrote first)."""
    operations: list[dict[str, Any]] = []
    for decision in decisions:
        if not decision.changed:
            continue
        ident = decision.state.incident.id
        action: dict[str, Any] = {"_index": indices.incidents, "_id": ident}
        if decision.is_new:
            operations += [{"create": action}, to_doc(decision.state, scan_id)]
        else:  # a partial update: it was read without its texts (NEAR_FIELDS), which stay as stored
            seq, term = versions[ident]
            operations += [{"update": {**action, "if_seq_no": seq, "if_primary_term": term}},
                           {"doc": merge_doc(decision.state, scan_id)}]
    if not operations:
        return set()
    with reporting(es, "store incidents"):
        # refresh now, not wait_for: the next scan (seconds away) must see them, and the index is small
        response = es.bulk(operations=operations, refresh=True)
    conflicts, failures = set(), []
    for item in response["items"]:
        outcome = next(iter(item.values()))
        if outcome.get("status") == 409:
            conflicts.add(outcome["_id"])
        elif outcome.get("error"):
            failures.append(outcome["error"])
    if failures:
        first = failures[0]
        raise StoreUnavailable(f"{len(failures)} incidents were not stored: {first.get('type')}: "
                               f"{first.get('reason')}")
    return conflicts


# --- analysts -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    incidents: tuple[Incident, ...]
    total: int  # all that match the filters, of which `incidents` is one page


def search(es: Elasticsearch, indices: Indices, *, agency: str | None = None, status: str | None = None,
           since: datetime | None = None, until: datetime | None = None, limit: int = 100, offset: int = 0,
           newest_first: bool = True) -> Page:
    filters: list[dict[str, Any]] = []
    if agency:
        filters.append({"term": {"organization.id": agency}})
    if status:
        filters.append({"term": {"secmon.status": status}})
    if since or until:
        bounds = {**({"gte": iso(since)} if since else {}), **({"lt": iso(until)} if until else {})}
        filters.append({"range": {"event.end": bounds}})
    order = "desc" if newest_first else "asc"
    with reporting(es, "search incidents"):
        response = es.search(index=indices.incidents, query={"bool": {"filter": filters}}, size=limit, from_=offset,
                             sort=[{"event.end": order}, {"secmon.id": "asc"}], track_total_hits=True,
                             ignore_unavailable=True)
    hits = response["hits"]
    return Page(tuple(from_doc(h["_id"], h["_source"]).incident for h in hits["hits"]), hits["total"]["value"])


def get(es: Elasticsearch, indices: Indices, ident: str) -> tuple[State, Version]:
    """One incident by id or by a unique prefix of it (the tables show 12 characters)."""
    if not ident or len(ident) < 6 or not all(c in "0123456789abcdef" for c in ident):
        raise InputError(f"{ident[:80]!r} is not an incident id", hint="give at least 6 hex characters of an id")
    with reporting(es, "read the incident"):
        response = es.search(index=indices.incidents, query={"prefix": {"secmon.id": ident}}, size=2,
                             seq_no_primary_term=True, ignore_unavailable=True)
    hits = response["hits"]["hits"]
    if not hits:
        raise InputError(f"no incident with id {ident}")
    if len(hits) > 1:
        raise InputError(f"{ident} is the start of more than one incident id", hint="give more characters")
    hit = hits[0]
    return from_doc(hit["_id"], hit["_source"]), (hit["_seq_no"], hit["_primary_term"])


def save(es: Elasticsearch, indices: Indices, state: State, version: Version) -> None:
    """Write an analyst's change; a conflict (a scan or another analyst wrote meanwhile) is an error to retry."""
    with reporting(es, "update the incident"):
        response = es.options(ignore_status=409).index(
            index=indices.incidents, id=state.incident.id, document=to_doc(state), if_seq_no=version[0],
            if_primary_term=version[1], refresh=True)
    if response.meta.status == 409:
        raise StoreUnavailable("the incident changed while you were updating it (a scan added events)",
                               hint="run the command again")


def with_change(state: State, change: Change, **fields: Any) -> State:
    incident = replace(state.incident, history=state.incident.history + (change,), updated=change.at, **fields)
    return replace(state, incident=incident)
