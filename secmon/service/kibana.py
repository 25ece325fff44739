"""The Kibana flow: export the saved objects, write or apply the roles, import into the centre's and agencies' spaces.

Applying roles and importing are audited (who, when, which roles and spaces).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from secmon.config import Settings
from secmon.errors import KibanaUnavailable
from secmon.kibana import catalog, roles
from secmon.kibana.client import DEFAULT_SPACE, ImportResult, KibanaClient
from secmon.kibana.export import saved_objects, to_ndjson
from secmon.service.common import actor, audit, indices_of
from secmon.store.client import reporting

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


def export(settings: Settings, agency: str | None = None) -> str:
    """The NDJSON of the centre's objects, or (with `agency`) of that agency's space."""
    prefix = settings.elasticsearch.index_prefix
    if agency is None:
        return to_ndjson(saved_objects(catalog.centre(prefix)))
    known = settings.agency(agency)
    return to_ndjson(saved_objects(catalog.agency_space(prefix, known.id, known.name)))


def role_definitions(settings: Settings) -> list[roles.Role]:
    return roles.all_roles(indices_of(settings), [a.id for a in settings.agencies])


def apply_roles(es: Elasticsearch, settings: Settings, now: datetime) -> list[roles.Role]:
    """Create or update every role through the Elasticsearch security API (needs `manage_security`)."""
    defined = role_definitions(settings)
    for role in defined:
        with reporting(es, f"create the role {role.name}"):
            es.security.put_role(name=role.name, **role.body)
    audit(es, indices_of(settings), "kibana-roles", "success", now, {"roles": [r.name for r in defined]},
          user=actor(settings))
    return defined


@dataclass(frozen=True)
class SpaceImport:
    result: ImportResult
    created: bool  # the space did not exist and was made


def import_spaces(es: Elasticsearch, settings: Settings, kibana: KibanaClient, agencies: list[str], centre: bool,
                  now: datetime) -> list[SpaceImport]:
    """The centre's objects into the default space (if `centre`), each agency's into its own space.

    Every space is attempted; objects Kibana refused are in the results, and the
    audit trail records the outcome either way.
    """
    done: list[SpaceImport] = []
    try:
        if centre:
            done.append(SpaceImport(kibana.import_objects(DEFAULT_SPACE, export(settings)), False))
        for agency_id in agencies:
            agency = settings.agency(agency_id)
            created = False
            if not kibana.space_exists(agency.id):
                kibana.create_space(agency.id, agency.name, f"secmon: {agency.name} ({agency.id}), for its auditors")
                created = True
            done.append(SpaceImport(kibana.import_objects(agency.id, export(settings, agency.id)), created))
    except KibanaUnavailable as exc:
        _audit_import(es, settings, done, now, str(exc))
        raise
    _audit_import(es, settings, done, now)
    return done


def _audit_import(es: Elasticsearch, settings: Settings, done: list[SpaceImport], now: datetime,
                  error: str = "") -> None:
    refused = sum(len(d.result.errors) for d in done)
    outcome = "failure" if error or refused else "success"
    audit(es, indices_of(settings), "kibana-import", outcome, now,
          {"spaces": [d.result.space for d in done], "imported": sum(d.result.imported for d in done),
           "refused": refused, "created_spaces": [d.result.space for d in done if d.created]},
          user=actor(settings), message=error)
