"""Exceptions and suppressions: analysts' decisions that a scan must respect, each with an expiry.

- An *exception* says "events of this rule (or of every rule) in this agency (or in
  all) whose fields have these values are not incidents" (a backup server's nightly
  logins, a vulnerability scanner the agency runs). It becomes a `must_not` clause of
  the rule's query, so excepted events never reach a finding, on the cluster.
- A *suppression* says "this rule's findings for this group are not to be raised
  until then" (a known noisy host while it is being fixed). Findings are dropped
  after detection and counted in the scan summary, never silently.

Both live in `{prefix}-exceptions`; an expired one stops applying by itself (the
scan reads only those whose expiry is in the future). Every change is audited by
the service that makes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from secmon.errors import InputError
from secmon.model import Finding, stable_id
from secmon.store.client import reporting
from secmon.store.indices import Indices
from secmon.types import AGENCY_FIELD, iso, parse_iso

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

ANY = "*"
MAX_VALUE = 1024  # keyword fields index at most this much; a longer value could never be equal


@dataclass(frozen=True)
class Exclusion:
    id: str
    kind: Literal["exception", "suppression"]
    rule: str  # a rule id, or "*" (exceptions only)
    agency: str  # an agency id, or "*"
    conditions: tuple[tuple[str, str], ...]  # exception: field == value, all of them; suppression: the group
    expires: datetime
    reason: str
    author: str
    created: datetime

    def applies(self, rule_id: str, agency: str) -> bool:
        return self.rule in (ANY, rule_id) and self.agency in (ANY, agency)


def new(kind: Literal["exception", "suppression"], rule: str, agency: str, conditions: Sequence[tuple[str, str]],
        expires: datetime, reason: str, author: str, now: datetime) -> Exclusion:
    """A checked exclusion; InputError says what is wrong."""
    if not reason.strip():
        raise InputError("a reason is required", hint="say why, for the audit trail: --reason '...'")
    if expires <= now:
        raise InputError(f"the expiry {iso(expires)} is not in the future")
    if kind == "exception" and not conditions:
        raise InputError("an exception needs at least one condition", hint="--where field=value")
    if kind == "suppression" and rule == ANY:
        raise InputError("a suppression names one rule", hint="--rule RULE_ID")
    for field, value in conditions:
        if not field or any(c.isspace() for c in field):
            raise InputError(f"{field!r} is not a field name", hint="an ECS field such as source.ip")
        if len(value) > MAX_VALUE:
            raise InputError(f"the value for {field} is longer than {MAX_VALUE} characters")
    # One exclusion per scope: adding the same one again renews it (new expiry and reason) instead
    # of stacking copies, and its id is known before it is added (the README's examples use it).
    ident = stable_id("exclusion", kind, rule, agency, tuple(sorted(conditions)))
    return Exclusion(ident, kind, rule, agency, tuple(conditions), expires, reason.strip(), author, now)


# --- applying them --------------------------------------------------------------------------

def exclude_query(query: dict[str, Any], rule_id: str, exclusions: Iterable[Exclusion]) -> dict[str, Any]:
    """`query` without the events the rule's exceptions cover (unchanged when none apply)."""
    clauses = []
    for item in exclusions:
        if item.kind != "exception" or item.rule not in (ANY, rule_id):
            continue
        terms = [{"term": {field: value}} for field, value in item.conditions]
        if item.agency != ANY:
            terms.append({"term": {AGENCY_FIELD: item.agency}})
        clauses.append({"bool": {"filter": terms}})
    if not clauses:
        return query
    return {"bool": {"filter": [query], "must_not": clauses}}


def is_suppressed(finding: Finding, exclusions: Iterable[Exclusion]) -> bool:
    group = dict(finding.group)
    return any(item.kind == "suppression" and item.applies(finding.rule_id, finding.agency)
               and all(group.get(field) == value for field, value in item.conditions)
               for item in exclusions)


# --- storage --------------------------------------------------------------------------------

def to_doc(item: Exclusion) -> dict[str, Any]:
    return {"@timestamp": iso(item.created),
            "secmon": {"kind": item.kind, "rule": item.rule, "agency": item.agency, "expires": iso(item.expires),
                       "conditions": [{"field": f, "value": v} for f, v in item.conditions],
                       "reason": item.reason, "author": item.author}}


def from_doc(ident: str, doc: dict[str, Any]) -> Exclusion:
    s = doc["secmon"]
    return Exclusion(ident, s["kind"], s["rule"], s["agency"],
                     tuple((c["field"], c["value"]) for c in s.get("conditions", ())), parse_iso(s["expires"]),
                     s.get("reason", ""), s.get("author", ""), parse_iso(doc["@timestamp"]))


def save(es: Elasticsearch, indices: Indices, item: Exclusion) -> None:
    with reporting(es, f"store the {item.kind}"):
        es.index(index=indices.exceptions, id=item.id, document=to_doc(item), refresh="wait_for")


def remove(es: Elasticsearch, indices: Indices, ident: str) -> Exclusion:
    found = [item for item in load(es, indices, None) if item.id.startswith(ident)] if len(ident) >= 6 else []
    if len(found) != 1:
        raise InputError(f"no single exception or suppression with id {ident[:80]!r}",
                         hint="`secmon exceptions list --all` shows the ids")
    with reporting(es, "remove the exception"):
        es.delete(index=indices.exceptions, id=found[0].id, refresh="wait_for")
    return found[0]


def load(es: Elasticsearch, indices: Indices, now: datetime | None) -> list[Exclusion]:
    """The exclusions in force at `now` (None: all, expired included), oldest first."""
    query: dict[str, Any] = {"range": {"secmon.expires": {"gt": iso(now)}}} if now else {"match_all": {}}
    with reporting(es, "read exceptions and suppressions"):
        response = es.search(index=indices.exceptions, query=query, size=10_000, sort=[{"@timestamp": "asc"}],
                             ignore_unavailable=True)
    return [from_doc(hit["_id"], hit["_source"]) for hit in response["hits"]["hits"]]
