"""Index templates are installed when missing or of another version, read back in one request."""

from __future__ import annotations

from typing import Any

from secmon.store.indices import Indices
from secmon.store.templates import TEMPLATE_NAMES, install_templates, load_template


def test_templates_are_installed_once_and_again_when_a_version_differs(es: Any, prefix: str) -> None:
    indices = Indices(prefix)
    first = install_templates(es, indices)
    assert [c.name for c in first] == [f"{prefix}-{name}" for name in TEMPLATE_NAMES]
    assert all(c.old_version is None and c.changed for c in first)
    assert not any(c.changed for c in install_templates(es, indices))  # all in place: nothing written

    name = TEMPLATE_NAMES[0]
    body = load_template(name, prefix)
    es.indices.put_index_template(name=f"{prefix}-{name}", **{**body, "version": body["version"] + 100})
    es.indices.put_index_template(name=f"{prefix}-{name}x", index_patterns=[f"{prefix}-{name}x-*"])  # not ours
    again = {c.name: c for c in install_templates(es, indices)}
    assert again[f"{prefix}-{name}"].old_version == body["version"] + 100 and again[f"{prefix}-{name}"].changed
    assert [n for n, c in again.items() if c.changed] == [f"{prefix}-{name}"]
    found = es.indices.get_index_template(name=f"{prefix}-{name}")["index_templates"][0]["index_template"]
    assert found["version"] == body["version"]
