"""The production files agree with the code: versions, ports, environment variables, index names.

They cannot run here (no Docker engine), so this is what can be checked without running them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import elasticsearch
import yaml

from secmon.config import load_settings
from secmon.store.indices import Indices
from secmon.store.templates import TEMPLATE_NAMES, load_template

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yml").read_text())
ENV = dict(line.split("=", 1) for line in (ROOT / "docker" / ".env.example").read_text().splitlines()
           if line and not line.startswith("#"))


def local_node_version() -> str:
    match = re.search(r"<es.version>([^<]+)</es.version>", (ROOT / "localnode" / "pom.xml").read_text())
    assert match, "localnode/pom.xml must pin es.version"
    return match.group(1)


def test_images_match_the_local_node_and_the_client() -> None:
    version = local_node_version()
    assert ENV["ELASTIC_VERSION"] == version
    for name in ("elasticsearch", "kibana", "certs"):
        image = COMPOSE["services"][name]["image"]
        assert image.endswith(f":${{ELASTIC_VERSION:-{version}}}"), image
        assert image.startswith("docker.elastic.co/"), "official images only"
    assert elasticsearch.__versionstr__.split(".")[:2] == version.split(".")[:2]


def test_ports_and_security() -> None:
    services = COMPOSE["services"]
    assert services["elasticsearch"]["ports"] == ["${ES_PORT:-9200}:9200"]
    assert services["kibana"]["ports"] == ["${KIBANA_PORT:-5601}:5601"]
    environment = services["elasticsearch"]["environment"]
    assert "xpack.security.enabled=true" in environment
    assert "ELASTIC_PASSWORD=${ELASTIC_PASSWORD}" in environment


def test_secmon_service_gets_every_secret_its_config_names() -> None:
    settings = load_settings(ROOT / "docker" / "secmon.yml")
    named = {settings.elasticsearch.username_env, settings.elasticsearch.password_env,
             settings.smtp.username_env, settings.smtp.password_env} - {""}
    given = {entry.split("=", 1)[0] for entry in COMPOSE["services"]["secmon"]["environment"]}
    assert named <= given, f"compose does not pass {named - given}"
    assert named <= set(ENV), f".env.example does not document {named - set(ENV)}"
    raw = yaml.safe_load((ROOT / "docker" / "secmon.yml").read_text())
    secret_keys = [k for section in raw.values() if isinstance(section, dict) for k in section
                   if ("password" in k or "api_key" in k) and not k.endswith("_env")]
    assert secret_keys == [], "secrets belong in environment variables, not the file"
    assert settings.elasticsearch.hosts == ("https://elasticsearch:9200",)


def test_secmon_service_runs_unattended_with_status_as_its_health_check() -> None:
    service = COMPOSE["services"]["secmon"]
    assert service["command"][-1] == "run"
    assert service["healthcheck"]["test"][-1] == "status"
    assert service["healthcheck"]["test"][1:4] == ["secmon", "--config", "/etc/secmon/secmon.yml"]
    assert '"run"]' in (ROOT / "docker" / "Dockerfile").read_text()


def test_kibana_saved_objects_point_at_our_indices() -> None:
    objects = [json.loads(line) for line in (ROOT / "kibana" / "secmon-saved-objects.ndjson").read_text().splitlines()]
    indices = Indices("secmon")
    titles = {o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"}
    assert titles == {indices.incidents, indices.alerts, indices.scans, indices.audit,
                      indices.events_pattern("*").replace("-*-*", "-*"), "secmon-deadletter-*"}
    views = {o["id"] for o in objects if o["type"] == "index-pattern"}
    for search in (o for o in objects if o["type"] == "search"):
        assert {r["id"] for r in search["references"]} <= views
        json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    mapped = {name: load_template(name, "secmon")["template"]["mappings"]["properties"] for name in TEMPLATE_NAMES}
    for search in (o for o in objects if o["type"] == "search"):
        template = search["references"][0]["id"].removeprefix("secmon-")
        for column in search["attributes"]["columns"]:
            node = mapped[template]
            for part in column.split("."):
                node = node[part].get("properties", node[part]) if part in node else {}
            assert node, f"{search['id']}: column {column} is not mapped in the {template} template"
