"""Elasticsearch roles for the people and processes that use secmon's indices. Pure.

- `secmon-analyst`: the centre's analysts: read every secmon index, work incidents and
  exceptions (the `secmon incidents` / `secmon exceptions` commands write them), append to
  the audit trail (never edit it); Kibana: everything in the default space, read elsewhere.
- `secmon-auditor-<agency>`: one agency's auditors and admins: read its own event and
  dead-letter indices, and only its own documents of the shared indices (document-level
  security: `organization.id` for incidents, alerts and the audit trail; `secmon.agency`, or
  `*` for centre-wide ones, for exceptions); scan runs whole, since a run covers every
  agency and holds no agency's data; Kibana: read the dashboards of its own space only.
- `secmon-service`: the scheduler and the collectors: exactly what their Elasticsearch
  calls need (the same grants as docker/secmon-role.json, which the deployment's `setup`
  service puts under the role name `secmon`).

Kibana privileges are given the way Elasticsearch stores them (application
`kibana-.kibana`, `feature_<id>.<privilege>` on `space:<id>`), so one request per role
through the Elasticsearch security API sets both halves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from secmon.store.fields import Exclusion, Incident
from secmon.store.indices import Indices

KIBANA = "kibana-.kibana"
READ = ["read", "view_index_metadata"]
ALL_SPACES = "*"


@dataclass(frozen=True)
class Role:
    name: str
    body: dict[str, Any]  # what PUT /_security/role/<name> takes


def analyst(indices: Indices) -> Role:
    p = indices.prefix
    return Role("secmon-analyst", {
        "description": "secmon: the centre's analysts: every index, incident and exception work",
        "cluster": ["monitor"],
        "indices": [
            {"names": [f"{p}-*"], "privileges": READ},
            {"names": [indices.incidents, indices.exceptions], "privileges": ["write"]},
            {"names": [indices.audit], "privileges": ["create_doc"]},  # append only: the trail stays as written
        ],
        "applications": [
            {"application": KIBANA, "privileges": ["space_all"], "resources": ["space:default"]},
            {"application": KIBANA, "privileges": ["read"], "resources": [ALL_SPACES]},
        ],
        "metadata": {"managed_by": "secmon"},
    })


def agency_filter(agency: str) -> dict[str, Any]:
    """The documents of the shared indices that belong to `agency` (its auditors' document-level security).

    Incidents, alerts and the audit trail name the agency in the same field (a test holds them to it)."""
    return {"term": {Incident.AGENCY: agency}}


def exception_filter(agency: str) -> dict[str, Any]:
    """Its own exceptions and suppressions, and the centre-wide ones (`*`) that apply to it too."""
    return {"terms": {Exclusion.AGENCY: [agency, "*"]}}


def own_events(indices: Indices, agency: str) -> str:
    """The agency's monthly event indices, and no other's: `events-a-*` would also match agency `a-b`'s
    indices, so the role names them by a (Lucene) regular expression: `<prefix>-events-<agency>-yyyy.mm`."""
    return f"/{indices.prefix}-events-{agency}-[0-9]{{4}}\\.[0-9]{{2}}/"


def auditor(indices: Indices, agency: str) -> Role:
    return Role(f"secmon-auditor-{agency}", {
        "description": f"secmon: auditors of agency {agency}: its own indices and documents only",
        "cluster": [],
        "indices": [
            {"names": [own_events(indices, agency), indices.deadletter(agency)], "privileges": READ},
            {"names": [indices.incidents, indices.alerts, indices.audit], "privileges": READ,
             "query": agency_filter(agency)},
            {"names": [indices.exceptions], "privileges": READ, "query": exception_filter(agency)},
            {"names": [indices.scans], "privileges": READ},
        ],
        "applications": [
            {"application": KIBANA, "resources": [f"space:{agency}"],
             "privileges": ["feature_dashboard_v2.read", "feature_discover_v2.read", "feature_visualize_v2.read"]},
        ],
        "metadata": {"managed_by": "secmon", "agency": agency},
    })


def service(indices: Indices) -> Role:
    """What the scheduler's and collectors' calls need: templates, create and write our indices, read them back
    (searches, points in time), refresh them (maintenance), and drop expired monthly event indices (retention)."""
    return Role("secmon-service", {
        "description": "secmon: the scheduler and the collectors",
        "cluster": ["monitor", "manage_index_templates"],
        "indices": [
            {"names": [f"{indices.prefix}-*"],
             "privileges": ["create_index", "write", "read", "view_index_metadata", "maintenance"]},
            {"names": [f"{indices.prefix}-events-*"], "privileges": ["delete_index"]},
        ],
        "metadata": {"managed_by": "secmon"},
    })


def all_roles(indices: Indices, agencies: list[str]) -> list[Role]:
    return [analyst(indices), service(indices), *(auditor(indices, agency) for agency in agencies)]
