"""Per-agency access, end to end where it can run here.

Kibana does not run on these machines and the local node has no security module, so:
- the roles' document-level-security filters run as queries on the real node, over
  documents of several agencies, and must select exactly the agency's documents;
- `secmon kibana import` and `secmon kibana roles --apply` talk to a small HTTP server on
  loopback that records each request and answers as the documented API does: the test
  checks the requests secmon builds (paths, headers, bodies), not Kibana's behaviour.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from secmon.kibana import roles
from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from tests.conftest import run_cli, write_config

pytestmark = pytest.mark.integration


class Recorder:
    """An HTTP server on 127.0.0.1 that records requests; `answer(method, path, body)` -> (status, json)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.refuse: set[str] = set()  # saved-object ids whose import is refused
        self.spaces: set[str] = set()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.requests.append({"method": self.command, "path": self.path,
                                          "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                status, answer = recorder.answer(self.command, self.path, body, self.headers)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Elastic-Product", "Elasticsearch")  # the ES client checks it
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, method: str, path: str, body: bytes, headers: Any) -> tuple[int, Any]:
        if path.startswith("/api/spaces/space/") and method == "GET":
            space = path.rsplit("/", 1)[1]
            return (200, {"id": space}) if space in self.spaces else (404, {"message": "Not Found"})
        if path == "/api/spaces/space" and method == "POST":
            self.spaces.add(json.loads(body)["id"])
            return 200, json.loads(body)
        if path.endswith("/api/saved_objects/_import?overwrite=true"):
            objects = [json.loads(line) for line in ndjson_of(body, headers["Content-Type"]).splitlines()]
            refused = [o for o in objects if o["id"] in self.refuse]
            return 200, {"success": not refused, "successCount": len(objects) - len(refused),
                         "errors": [{"id": o["id"], "type": o["type"], "error": {"type": "unknown",
                                                                                  "message": "refused by test"}}
                                    for o in refused]}
        if path.startswith("/_security/role/") and method == "PUT":
            return 200, {"role": {"created": True}}
        if method in ("POST", "PUT") and "/_doc" in path:  # the audit entry of --apply
            return 201, {"_index": "audit", "_id": "1", "_version": 1, "result": "created",
                         "_shards": {"total": 1, "successful": 1, "failed": 0}, "_seq_no": 0, "_primary_term": 1}
        return 404, {"error": f"unexpected {method} {path}"}

    def __enter__(self) -> Recorder:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def ndjson_of(body: bytes, content_type: str) -> str:
    """The `file` part of a multipart/form-data body, parsed as a mail client would."""
    message = message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=policy.HTTP)
    (part,) = [p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "file"]
    assert part.get_filename() == "secmon.ndjson"
    return part.get_payload(decode=True).decode("utf-8")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as running:
        yield running


def test_document_level_security_selects_exactly_the_agency(es, prefix) -> None:  # type: ignore[no-untyped-def]
    indices = Indices(prefix)
    install_templates(es, indices)  # the mappings the filters are written for (keyword fields)
    docs = {indices.incidents: "organization", indices.alerts: "organization", indices.audit: "organization",
            indices.exceptions: "exception"}
    for index, kind in docs.items():
        for n, agency in enumerate(["so-tttt", "so-tttt", "portal", "so-tttt-hcm", "*"]):
            doc = ({"secmon": {"agency": agency, "kind": "exception"}} if kind == "exception"
                   else {"organization": {"id": agency}, "secmon": {"status": "open"}})
            es.index(index=index, id=f"{n}", document=doc)
    es.indices.refresh(index=f"{prefix}-*")
    for agency in ("so-tttt", "portal", "so-tttt-hcm"):
        role = roles.auditor(indices, agency)
        for grant in role.body["indices"]:
            if "query" not in grant:
                continue
            for index in grant["names"]:
                hits = es.search(index=index, query=grant["query"], size=100)["hits"]["hits"]
                seen = sorted({(h["_source"].get("organization") or {}).get("id") or h["_source"]["secmon"]["agency"]
                               for h in hits})
                expected = [agency, "*"] if index == indices.exceptions else [agency]
                assert seen == sorted(expected), f"{role.name} on {index} sees {seen}"
                wanted = 3 if agency == "so-tttt" and index == indices.exceptions else None
                if wanted:
                    assert len(hits) == wanted


def test_import_builds_the_spaces_and_their_objects(tmp_path: Path, es, es_url, prefix, recorder, monkeypatch
                                                    ) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TEST_ES_USER", "elastic")
    monkeypatch.setenv("TEST_ES_PASSWORD", "s3cret")
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, 25))
    assert run_cli("-c", config, "setup")[0] == 0
    code, out, err = run_cli("-c", config, "kibana", "import", "--every-agency", "--kibana-url", recorder.url)
    assert code == 0, err
    calls = [(r["method"], r["path"]) for r in recorder.requests]
    assert calls == [
        ("POST", "/api/saved_objects/_import?overwrite=true"),
        ("GET", "/api/spaces/space/so-tttt"), ("POST", "/api/spaces/space"),
        ("POST", "/s/so-tttt/api/saved_objects/_import?overwrite=true"),
        ("GET", "/api/spaces/space/portal"), ("POST", "/api/spaces/space"),
        ("POST", "/s/portal/api/saved_objects/_import?overwrite=true"),
    ]
    for request in recorder.requests:
        assert request["headers"]["kbn-xsrf"]
        assert "authorization" not in request["headers"]  # the config names no credentials
    created = json.loads(recorder.requests[2]["body"])
    assert created["id"] == "so-tttt" and created["name"] == "Sở Thông tin và Truyền thông"

    centre = ndjson_of(recorder.requests[0]["body"], recorder.requests[0]["headers"]["content-type"])
    assert run_cli("-c", config, "kibana", "export")[1] == centre
    assert f'"title": "{prefix}-incidents"' in centre  # the config's prefix, not the committed file's
    agency = [json.loads(line) for line in ndjson_of(recorder.requests[3]["body"],
                                                     recorder.requests[3]["headers"]["content-type"]).splitlines()]
    (board,) = [o for o in agency if o["type"] == "dashboard"]
    source = json.loads(board["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert source["query"]["query"] == 'organization.id : "so-tttt"'
    assert {o["attributes"]["title"] for o in agency if o["type"] == "index-pattern"} == {
        f"{prefix}-incidents", f"{prefix}-alerts", f"{prefix}-events-so-tttt-*", f"{prefix}-deadletter-so-tttt"}
    assert "space so-tttt (space created)" in out

    es.indices.refresh(index=f"{prefix}-audit")
    (entry,) = es.search(index=f"{prefix}-audit", query={"term": {"event.action": "kibana-import"}})["hits"]["hits"]
    assert entry["_source"]["event"]["outcome"] == "success"
    assert entry["_source"]["secmon"]["details"]["spaces"] == ["default", "so-tttt", "portal"]

    # Again: the spaces exist now, so only the imports; credentials of the config go along.
    recorder.requests.clear()
    recorder.refuse = {"secmon-agency--portal"}
    with_auth = tmp_path / "auth.yml"
    with_auth.write_text(Path(config).read_text().replace(
        f"index_prefix: {prefix}", f"index_prefix: {prefix}\n  username_env: TEST_ES_USER\n"
                                   "  password_env: TEST_ES_PASSWORD"))
    code, out, err = run_cli("-c", str(with_auth), "kibana", "import", "--space", "portal", "--kibana-url",
                             recorder.url)
    assert code == 5, "a refused object is an error, never silent"
    assert [(r["method"], r["path"]) for r in recorder.requests] == [
        ("GET", "/api/spaces/space/portal"), ("POST", "/s/portal/api/saved_objects/_import?overwrite=true")]
    expected = "Basic " + base64.b64encode(b"elastic:s3cret").decode()
    assert all(r["headers"]["authorization"] == expected for r in recorder.requests)
    assert "refused: dashboard secmon-agency--portal: refused by test" in err


def test_import_says_when_kibana_is_unreachable(tmp_path: Path, es_url, prefix) -> None:  # type: ignore[no-untyped-def]
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, 25))
    code, _, err = run_cli("-c", config, "kibana", "import", "--kibana-url", "http://127.0.0.1:9")
    assert code == 5
    assert "cannot reach Kibana at http://127.0.0.1:9" in err


def test_roles_apply_puts_each_role_through_the_security_api(tmp_path: Path, recorder) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path / "secmon.yml", recorder.url, "secmon", 25)
    code, out, err = run_cli("-c", str(config), "kibana", "roles", "--apply")
    assert code == 0, err
    puts = {r["path"]: json.loads(r["body"]) for r in recorder.requests if r["method"] == "PUT"
            and r["path"].startswith("/_security/role/")}
    expected = {f"/_security/role/{r.name}": r.body for r in roles.all_roles(Indices("secmon"), ["so-tttt", "portal"])}
    assert puts == expected
    assert "role secmon-auditor-portal: created or updated" in out
    code, out, _ = run_cli("-c", str(config), "kibana", "roles", "--out", str(tmp_path / "roles"))
    assert code == 0
    assert json.loads((tmp_path / "roles" / "secmon-service.json").read_text()) == roles.service(Indices("secmon")).body
