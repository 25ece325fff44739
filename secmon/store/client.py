"""Build the official client from settings, and turn transport failures into one clear line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from secmon.config import ElasticsearchSettings
from secmon.errors import RequestRefused, StoreUnavailable

# The client package is imported where a client is built or its errors are caught, not with this module:
# its import (the async client, the HTTP libraries) is about 0.35 s of CPU that commands which never
# connect (--help, a usage error, `scan --input`) should not pay.
if TYPE_CHECKING:
    from elasticsearch import ApiError, Elasticsearch

REFUSED_FOR_CONTENT = {400, 413}  # the request itself is wrong or too large: retrying it as it is cannot help
UNAVAILABLE = {429, 502, 503, 504}  # the cluster is busy or missing shards or nodes: the request may pass later
LOCAL_HINT = "is the node running? For the local node: scripts/es-local start"


def _import_client() -> None:
    """Import the client package without `requests`. Its transport looks for every HTTP library it could
    use and imports those installed: `requests` (and its charset detection) is about 0.18 billion of
    the 1.0 billion instructions the package's import takes, at every start of a command, and secmon
    uses the client's default urllib3 node. Only the first import in a process is steered this way;
    `requests` stays importable for anyone else afterwards."""
    if "elastic_transport" in sys.modules or "requests" in sys.modules:
        return
    sys.modules["requests"] = None  # type: ignore[assignment]  # `import requests` raises ImportError
    try:
        import elasticsearch  # noqa: F401
    finally:
        del sys.modules["requests"]


def connect(settings: ElasticsearchSettings) -> Elasticsearch:
    """A client; no request is made here (constructors must not do I/O)."""
    _import_client()
    from elasticsearch import Elasticsearch

    from elasticsearch.serializer import CompatibilityModeNdjsonSerializer

    class WholeNdjson(CompatibilityModeNdjsonSerializer):
        """A `_bulk` body the writer built whole (store/writer.py: bytes ending in a newline) goes as it is;
        the client's own serializer copies it twice more (a megabyte a request, a microsecond a line)."""

        def dumps(self, data: Any) -> bytes:
            if data.__class__ is bytes and data.endswith(b"\n"):
                return data
            return super().dumps(data)

    tls: dict[str, Any] = {"ca_certs": settings.ca_certs} if settings.ca_certs else {}
    return Elasticsearch(
        list(settings.hosts),
        request_timeout=settings.request_timeout,
        **tls,
        retry_on_timeout=True,
        max_retries=2,
        serializers={WholeNdjson.mimetype: WholeNdjson()},
        **settings.credentials(),
    )


@contextmanager
def reporting(es: Elasticsearch, doing: str) -> Iterator[None]:
    """Map the client's exceptions to StoreUnavailable, naming the host and what we were doing."""
    from elasticsearch import ApiError, TransportError

    try:
        yield
    except ApiError as exc:
        reason = _reason(exc)
        if exc.meta.status in REFUSED_FOR_CONTENT:
            raise RequestRefused(f"Elasticsearch refused to {doing}: {reason}") from exc
        raise StoreUnavailable(f"Elasticsearch refused to {doing}: {reason}") from exc
    except TransportError as exc:
        hosts = ", ".join(_hosts(es))
        raise StoreUnavailable(
            f"cannot {doing}: Elasticsearch at {hosts} is unreachable ({type(exc).__name__})", hint=LOCAL_HINT
        ) from exc


def _hosts(es: Elasticsearch) -> list[str]:
    return [str(node.base_url) for node in es.transport.node_pool.all()]


def _reason(exc: ApiError) -> str:
    return refusal(exc.meta.status, exc.body, exc.message)


def refusal(status: object, body: object, message: str = "") -> str:
    """Why Elasticsearch refused a request (or one search of an _msearch): status, root cause type and reason."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        root = (error.get("root_cause") or [error])[0]
        return f"{status} {root.get('type')}: {root.get('reason')}"
    if status == 413:
        return "413 Request Entity Too Large (larger than the node's http.max_content_length)"
    return f"{status} {message or error}"


def check(es: Elasticsearch) -> str:
    """The server's version; StoreUnavailable when it does not answer."""
    with reporting(es, "connect"):
        info = es.info()
    return str(info["version"]["number"])
