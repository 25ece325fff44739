"""The local node is a real Elasticsearch 9.x that the official client accepts."""

from __future__ import annotations

import urllib.request

import pytest

pytestmark = pytest.mark.integration


def test_root_endpoint_is_elasticsearch_9(es_url: str) -> None:
    with urllib.request.urlopen(es_url + "/") as response:
        assert response.headers["X-elastic-product"] == "Elasticsearch"
        body = response.read().decode()
    assert '"number" : "9.' in body or '"number":"9.' in body


def test_official_client_info_and_ping(es) -> None:  # type: ignore[no-untyped-def]
    assert es.ping()
    info = es.info()
    assert info["version"]["number"].startswith("9.")
    import elasticsearch

    client_minor = elasticsearch.__versionstr__.split(".")[:2]
    assert info["version"]["number"].split(".")[:2] == client_minor, "pin the client to the server's major.minor"
