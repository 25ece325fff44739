"""Kibana's HTTP API, the three calls secmon needs: does a space exist, create it, import saved objects.

Plain HTTP from the standard library (no Kibana client library is worth a
dependency for three calls). Every request carries `kbn-xsrf` (Kibana refuses
writes without it) and the credentials secmon uses for Elasticsearch; every
failure is a KibanaUnavailable naming the URL and what Kibana said.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from secmon.errors import KibanaUnavailable

DEFAULT_SPACE = "default"
MAX_ERROR = 300  # characters of a refusal quoted in the message


@dataclass(frozen=True)
class ImportResult:
    space: str
    imported: int
    errors: tuple[str, ...]  # one line per object Kibana refused: "type id: reason"


@dataclass(frozen=True)
class KibanaClient:
    url: str  # http(s)://host:5601, no trailing path
    authorization: str = ""  # the Authorization header value ("" for none)
    ca_certs: str = ""
    timeout: float = 30.0

    @staticmethod
    def authorization_for(credentials: dict[str, Any]) -> str:
        """The header for the credentials the Elasticsearch client gets (`ElasticsearchSettings.credentials()`)."""
        if "api_key" in credentials:
            return f"ApiKey {credentials['api_key']}"
        if "basic_auth" in credentials:
            user, password = credentials["basic_auth"]
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return ""

    def _path(self, space: str, path: str) -> str:
        prefix = "" if space == DEFAULT_SPACE else f"/s/{urllib.parse.quote(space, safe='')}"
        return f"{self.url.rstrip('/')}{prefix}{path}"

    def _call(self, method: str, url: str, body: bytes | None = None, content_type: str = "application/json",
              missing_ok: bool = False) -> tuple[int, Any]:
        headers = {"kbn-xsrf": "secmon", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if self.authorization:
            headers["Authorization"] = self.authorization
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        context = ssl.create_default_context(cafile=self.ca_certs or None) if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            if missing_ok and exc.code == 404:
                return 404, None
            raise KibanaUnavailable(f"Kibana refused {method} {url}: {exc.code} {text[:MAX_ERROR]}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise KibanaUnavailable(f"cannot reach Kibana at {self.url}: {reason}",
                                    hint="is Kibana up? --kibana-url or $SECMON_KIBANA_URL") from None

    def space_exists(self, space: str) -> bool:
        status, _ = self._call("GET", f"{self.url.rstrip('/')}/api/spaces/space/{urllib.parse.quote(space, safe='')}",
                               missing_ok=True)
        return status == 200

    def create_space(self, space: str, name: str, description: str) -> None:
        body = json.dumps({"id": space, "name": name, "description": description, "disabledFeatures": []},
                          ensure_ascii=False).encode("utf-8")
        self._call("POST", f"{self.url.rstrip('/')}/api/spaces/space", body)

    def import_objects(self, space: str, ndjson: str) -> ImportResult:
        """Import (overwriting objects with the same ids) into `space`; what Kibana refused is returned, not lost."""
        data = ndjson.encode("utf-8")
        boundary = "secmon-" + hashlib.sha256(data).hexdigest()[:32]  # cannot occur in the data it hashes, in practice
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"secmon.ndjson\"\r\n"
                "Content-Type: application/ndjson\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        _, answer = self._call("POST", self._path(space, "/api/saved_objects/_import?overwrite=true"), body,
                               f"multipart/form-data; boundary={boundary}")
        answer = answer if isinstance(answer, dict) else {}
        errors = tuple(f"{e.get('type')} {e.get('id')}: {_reason(e.get('error'))}" for e in answer.get("errors") or ())
        return ImportResult(space, int(answer.get("successCount", 0)), errors)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise KibanaUnavailable(f"Kibana answered something that is not JSON: {raw[:MAX_ERROR]!r}") from None


def _reason(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)[:MAX_ERROR]
    return str(error)[:MAX_ERROR]
