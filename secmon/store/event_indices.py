"""The monthly event indices as whole indices: list an agency's, delete some. No policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from secmon.store.client import reporting
from secmon.store.indices import Indices

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


def event_indices(es: Elasticsearch, indices: Indices, agency: str) -> list[str]:
    """The names matching the agency's event pattern (which may include a longer agency id's: see Indices)."""
    with reporting(es, f"list the event indices of {agency}"):
        found = es.indices.get(index=indices.events_pattern(agency), ignore_unavailable=True, allow_no_indices=True,
                               expand_wildcards="open,closed", features="settings")
    return sorted(found)


def delete_index(es: Elasticsearch, name: str) -> None:
    """Delete one index by its exact name (never a wildcard: a typo must not delete everything)."""
    with reporting(es, f"delete index {name}"):
        es.indices.delete(index=name, ignore_unavailable=True)


def refresh_events(es: Elasticsearch, indices: Indices) -> None:
    """Make every event indexed so far searchable now, rather than at the next periodic refresh."""
    with reporting(es, "refresh the event indices"):
        es.indices.refresh(index=indices.events_pattern(), ignore_unavailable=True, allow_no_indices=True)
