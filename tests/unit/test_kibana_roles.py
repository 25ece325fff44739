"""The roles grant exactly what they should: an agency's auditors see only that agency's indices and documents."""

from __future__ import annotations

import fnmatch
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from secmon.kibana import roles
from secmon.store.indices import Indices

ROOT = Path(__file__).resolve().parents[2]
INDICES = Indices("secmon")
AGENCIES = ["so-tttt", "portal", "so-tttt-hcm"]  # one id is the start of another: patterns must not mix them


def matches(pattern: str, index: str) -> bool:
    """How Elasticsearch reads a role's index name: /regex/ (Lucene), else a wildcard pattern."""
    if pattern.startswith("/") and pattern.endswith("/"):
        return re.fullmatch(pattern[1:-1], index) is not None  # the syntax used is the same in Python
    return fnmatch.fnmatchcase(index, pattern)


def own_indices(agency: str) -> set[str]:
    when = datetime(2026, 10, 1, tzinfo=UTC)
    return {INDICES.events(agency, when), INDICES.deadletter(agency)}


def by_name(role: roles.Role) -> dict[str, dict]:
    grants: dict[str, dict] = {}
    for grant in role.body["indices"]:
        for name in grant["names"]:
            assert name not in grants, f"{role.name}: {name} granted twice"
            grants[name] = grant
    return grants


@pytest.mark.parametrize("agency", AGENCIES)
def test_an_auditor_reads_only_its_agency(agency: str) -> None:
    role = roles.auditor(INDICES, agency)
    assert role.name == f"secmon-auditor-{agency}"
    grants = by_name(role)
    events = roles.own_events(INDICES, agency)
    assert set(grants) == {events, f"secmon-deadletter-{agency}", "secmon-incidents",
                           "secmon-alerts", "secmon-audit", "secmon-exceptions", "secmon-scans"}
    for other in AGENCIES:  # its own event and dead-letter indices, and no other agency's
        for index in own_indices(other):
            assert any(matches(p, index) for p in grants) == (other == agency), f"{role.name} and {index}"
    for name, grant in grants.items():
        assert grant["privileges"] == ["read", "view_index_metadata"], f"{name}: read only"
    for shared in ("secmon-incidents", "secmon-alerts", "secmon-audit"):
        assert grants[shared]["query"] == {"term": {"organization.id": agency}}
    assert grants["secmon-exceptions"]["query"] == {"terms": {"secmon.agency": [agency, "*"]}}
    for own in (events, f"secmon-deadletter-{agency}", "secmon-scans"):
        assert "query" not in grants[own]  # its own indices, and scan runs that hold no agency's data
    assert role.body["cluster"] == []
    (kibana,) = role.body["applications"]
    assert kibana["resources"] == [f"space:{agency}"]
    assert all(p.startswith("feature_") and p.endswith(".read") for p in kibana["privileges"])
    for other in set(AGENCIES) - {agency}:
        assert f'"space:{other}"' not in json.dumps(role.body)


def test_the_analyst_reads_everything_and_appends_to_the_audit_trail() -> None:
    grants = by_name(roles.analyst(INDICES))
    assert grants["secmon-*"]["privileges"] == ["read", "view_index_metadata"]
    assert grants["secmon-incidents"]["privileges"] == ["write"]  # ack, close, reopen
    assert grants["secmon-exceptions"]["privileges"] == ["write"]  # add, remove
    assert grants["secmon-audit"]["privileges"] == ["create_doc"]  # never edits or deletes an entry
    assert not any("query" in g for g in grants.values())


def test_the_service_role_is_least_privilege() -> None:
    role = roles.service(INDICES)
    assert role.body["cluster"] == ["monitor", "manage_index_templates"]
    grants = by_name(role)
    assert grants["secmon-*"]["privileges"] == ["create_index", "write", "read", "view_index_metadata",
                                                "maintenance"]
    assert grants["secmon-events-*"]["privileges"] == ["delete_index"]  # retention drops whole months
    assert "applications" not in role.body and "run_as" not in role.body
    deployed = ROOT / "docker" / "secmon-role.json"
    if deployed.exists():  # the deployment's `secmon` role (another branch) must grant the same
        body = json.loads(deployed.read_text())
        assert body["cluster"] == role.body["cluster"] and body["indices"] == role.body["indices"]


def test_every_configured_agency_gets_a_role_and_the_prefix_is_honoured() -> None:
    made = roles.all_roles(Indices("soc"), AGENCIES)
    assert [r.name for r in made] == ["secmon-analyst", "secmon-service",
                                      *(f"secmon-auditor-{a}" for a in AGENCIES)]
    for role in made:
        for grant in role.body["indices"]:
            assert all(name.lstrip("/").startswith("soc-") for name in grant["names"]), f"{role.name}: {grant}"
