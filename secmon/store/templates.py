"""Install the versioned index templates shipped in `store/templates/*.json`.

Installing is idempotent: a template whose stored `version` equals ours is left
alone, an older one is replaced. Existing indices keep their mapping until they
roll over to a new month (events) or are recreated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from secmon.store.client import reporting
from secmon.store.indices import Indices

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

TEMPLATE_NAMES = ("events", "deadletter", "incidents", "alerts", "scans", "audit", "exceptions", "state",
                  "models")


@dataclass(frozen=True)
class TemplateChange:
    name: str
    old_version: int | None
    new_version: int

    @property
    def changed(self) -> bool:
        return self.old_version != self.new_version


def load_template(name: str, prefix: str) -> dict[str, Any]:
    text = resources.files("secmon.store").joinpath("templates", f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text.replace("{{prefix}}", prefix))  # type: ignore[no-any-return]


def install_templates(es: Elasticsearch, indices: Indices) -> list[TemplateChange]:
    from elasticsearch import NotFoundError  # with the client, not at start-up (store/client.py)

    # The installed versions in one request, and only they: every command that writes runs this at its
    # start, and the templates' mappings in full are tens of kilobytes to parse (a name the pattern matches
    # that is not ours is ignored).
    with reporting(es, f"read the index templates {indices.prefix}-*"):
        try:
            found = es.indices.get_index_template(
                name=f"{indices.prefix}-*",
                filter_path="index_templates.name,index_templates.index_template.version")
            installed = {t["name"]: t.get("index_template", {}).get("version")  # none: no version
                         for t in found.body.get("index_templates", [])}  # none matched: {}
        except NotFoundError:
            installed = {}
    changes = []
    for name in TEMPLATE_NAMES:
        body = load_template(name, indices.prefix)
        template_name = f"{indices.prefix}-{name}"
        old = installed.get(template_name)
        if old != body["version"]:
            with reporting(es, f"install index template {template_name}"):
                es.indices.put_index_template(name=template_name, **body)
        changes.append(TemplateChange(template_name, old, body["version"]))
    return changes
