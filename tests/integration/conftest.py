"""Fixtures shared by integration test modules (tests/conftest.py holds the node, SMTP and CLI ones)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from elasticsearch import helpers

from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from tests.conftest import scratch_prefix


@pytest.fixture(scope="session")
def windows_indices(es) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """name -> index holding the Windows events of test_sigma_audit_cluster ("audit") and of
    test_sigma_windows_ecs_cluster ("ecs"), indexed with secmon's events template.

    Both modules once built this alone: two template installs and two bulks with refresh=wait_for
    (each waits for the next periodic refresh), about 1.4 s of setup each. One prefix, one install and
    one bulk with refresh=true (visible at once) now serve both. Each set keeps its own index, so a
    module's searches see exactly the documents they always saw.
    """
    from tests.integration.test_sigma_audit_cluster import documents as audit
    from tests.unit.test_sigma_windows_ecs import documents as ecs

    with scratch_prefix(es) as prefix:
        install_templates(es, Indices(prefix))
        sets = {"audit": audit(), "ecs": {ident: {**doc, "organization": {"id": "ecs"}} for ident, doc in ecs().items()}}
        names = {kind: f"{prefix}-events-{kind}-2026.01" for kind in sets}
        actions = [{"_index": names[kind], "_id": ident, "_source": doc}
                   for kind, docs in sets.items() for ident, doc in docs.items()]
        ok, errors = helpers.bulk(es, actions, raise_on_error=False, refresh=True)
        assert not errors and ok == len(actions), errors[:3]
        yield names
