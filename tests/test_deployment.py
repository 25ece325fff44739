"""The production files agree with the code: versions, ports, environment variables, index names.

They cannot run here (no Docker engine), so this is what can be checked without running them.
"""

from __future__ import annotations

import re
from pathlib import Path

import elasticsearch
import yaml

from secmon.config import load_settings

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


def test_first_start_applies_roles_and_imports_every_agency_space() -> None:
    """The one-shot kibana-setup service runs the same commands the README documents, as `elastic`."""
    import shlex

    from secmon.cli.main import cli

    setup = COMPOSE["services"]["kibana-setup"]
    assert setup["build"] == COMPOSE["services"]["secmon"]["build"], "the secmon image, with this checkout's code"
    assert setup["restart"] == "no"
    script = setup["command"][0]
    settings = load_settings(ROOT / "docker" / "secmon.yml")
    environment = dict(entry.split("=", 1) for entry in setup["environment"])
    assert environment[settings.elasticsearch.username_env] == "elastic"
    assert environment[settings.elasticsearch.password_env] == "${ELASTIC_PASSWORD}"
    assert environment["SECMON_KIBANA_URL"] == "http://kibana:5601"
    commands = [part.strip() for part in re.split(r"&&|;|\bdo\b", script) if "secmon --config" in part]
    assert [c.split("--config /etc/secmon/secmon.yml ")[1] for c in commands] == [
        "kibana roles --apply", "kibana import --every-agency"]
    for command in commands:  # each parses as a real secmon command line
        args = shlex.split(command)[3:]
        command = cli.commands[args[0]].commands[args[1]]  # type: ignore[attr-defined]
        assert command.make_context(args[1], args[2:]).params  # its options exist
