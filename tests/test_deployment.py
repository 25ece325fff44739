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
    assert services["elasticsearch"]["ports"] == ["${BIND_ADDRESS:-127.0.0.1}:${ES_PORT:-9200}:9200"]
    assert services["kibana"]["ports"] == ["${BIND_ADDRESS:-127.0.0.1}:${KIBANA_PORT:-5601}:5601"]
    environment = services["elasticsearch"]["environment"]
    assert "xpack.security.enabled=true" in environment
    assert "ELASTIC_PASSWORD=${ELASTIC_PASSWORD}" in environment


def test_every_published_port_is_on_loopback_unless_the_env_file_says_otherwise() -> None:
    assert ENV["BIND_ADDRESS"] == "127.0.0.1"
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            # HOST:HOST_PORT:CONTAINER_PORT with HOST defaulting to loopback; a bare "9200:9200" would
            # publish on every interface.
            assert isinstance(port, str) and port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), (name, port)
            assert re.sub(r"\$\{[^}]*\}", "V", port).count(":") == 2, (name, port)


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
        command = cli.load_all()[args[0]].commands[args[1]]  # type: ignore[attr-defined]
        assert command.make_context(args[1], args[2:]).params  # its options exist


# --- least privilege ----------------------------------------------------------------------------

ROLE = json.loads((ROOT / "docker" / "secmon-role.json").read_text())

# What each Elasticsearch client call of secmon needs: (cluster or index, privilege). A call missing
# here fails the test below: add it, with the privilege it needs, and grant that in the role.
CALL_PRIVILEGES: dict[str, tuple[str, str]] = {
    "info": ("cluster", "monitor"), "cluster.health": ("cluster", "monitor"),
    "indices.get_index_template": ("cluster", "manage_index_templates"),
    "indices.put_index_template": ("cluster", "manage_index_templates"),
    "search": ("index", "read"), "msearch": ("index", "read"), "count": ("index", "read"), "get": ("index", "read"), "mget": ("index", "read"),
    "open_point_in_time": ("index", "read"), "close_point_in_time": ("index", "read"),
    # document writes; the first write to a new index creates it (monthly event indices, ...)
    "bulk": ("index", "write"), "index": ("index", "write"), "create": ("index", "write"),
    "update": ("index", "write"), "delete": ("index", "write"),
    "indices.exists": ("index", "view_index_metadata"), "indices.get": ("index", "view_index_metadata"),
    "indices.refresh": ("index", "maintenance"),
    "indices.delete": ("index", "delete_index"),  # retention: event indices only
}
CALL = re.compile(r"\b(?:self\.)?_?es(?:\.options\([^()]*\))?\.((?:indices\.|cluster\.)?[a-z_]+)\(")


def test_the_secmon_role_grants_exactly_what_its_calls_need() -> None:
    assert ROLE["cluster"] == ["monitor", "manage_index_templates"]
    prefix = load_settings(ROOT / "docker" / "secmon.yml").elasticsearch.index_prefix
    indices = Indices(prefix)
    assert ROLE["indices"] == [
        {"names": [f"{prefix}-*"], "privileges": ["create_index", "write", "read", "view_index_metadata",
                                                  "maintenance"]},
        {"names": [indices.events_pattern("*").replace("-*-*", "-*")], "privileges": ["delete_index"]},
    ]
    assert ROLE["indices"][1]["names"] == ["secmon-events-*"]
    granted_cluster = set(ROLE["cluster"])
    granted_index = {p for entry in ROLE["indices"] for p in entry["privileges"]}
    calls = {match.group(1) for path in (ROOT / "secmon").rglob("*.py")
             for match in CALL.finditer(path.read_text(encoding="utf-8"))} - {"options"}
    assert {"search", "bulk", "info", "indices.put_index_template"} <= calls, calls  # the scan found them
    unknown = calls - set(CALL_PRIVILEGES)
    assert not unknown, f"Elasticsearch calls with no known privilege: {sorted(unknown)}; add them above"
    for call in calls:
        kind, privilege = CALL_PRIVILEGES[call]
        assert privilege in (granted_cluster if kind == "cluster" else granted_index), (call, privilege)


def test_the_scheduler_runs_as_the_secmon_user_created_at_setup() -> None:
    services = COMPOSE["services"]
    secmon = services["secmon"]
    assert ENV["SECMON_ES_USERNAME"] == "secmon" and ENV["SECMON_ES_PASSWORD"] != ENV["ELASTIC_PASSWORD"]
    assert "SECMON_ES_USERNAME=${SECMON_ES_USERNAME:-secmon}" in secmon["environment"]
    assert not any("ELASTIC_PASSWORD" in entry for entry in secmon["environment"])
    assert secmon["depends_on"] == {"setup": {"condition": "service_completed_successfully"}}
    setup = services["setup"]
    assert "./secmon-role.json:/setup/secmon-role.json:ro" in setup["volumes"]
    command = " ".join(setup["command"].split())
    assert "-X PUT https://elasticsearch:9200/_security/role/secmon -d @/setup/secmon-role.json" in command
    assert '_security/user/${SECMON_ES_USERNAME:-secmon}"' in command
    assert '\\"roles\\":[\\"secmon\\"]' in command and "${SECMON_ES_PASSWORD}" in command


def _mounts(service: dict) -> dict[str, str]:  # type: ignore[type-arg]
    """Named volume -> the path it is mounted at in this service."""
    out = {}
    for entry in service.get("volumes", []):
        if entry.startswith((".", "/", "${")):  # a bind mount of a file or folder of the host
            continue
        source, target = entry.split(":")[:2]
        out[source] = target
    return out


def test_no_key_in_any_volume_the_secmon_container_mounts() -> None:
    services = COMPOSE["services"]
    mounted = _mounts(services["secmon"])
    assert mounted == {"cacert": "/certs/ca"}
    assert [name for name, s in services.items() if "ca" in _mounts(s)] == ["certs"]  # the CA key's volume
    for volume in mounted:
        for name, service in services.items():
            at = _mounts(service).get(volume)
            if at is None:
                continue
            # Everything any service writes under that volume's path: only the CA certificate.
            command = service.get("command", "")
            command = " ".join(command) if isinstance(command, list) else command
            for path in {at, at.removeprefix("/usr/share/elasticsearch/")}:  # the image's working dir
                written = set(re.findall(rf"(?<![\w/]){re.escape(path)}/[^\s;'\"]*", command))
                assert written <= {f"{path}/ca.crt"}, (name, written)
                assert f"-d {path}" not in command, (name, "unzips into it")
    for source in (ROOT / "docker").iterdir():
        assert not source.name.endswith((".key", ".pem", ".p12")), source
    assert "COPY" not in "".join(line for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines()
                                 if ".key" in line)


def test_the_three_node_profile() -> None:
    services = COMPOSE["services"]
    nodes = {"elasticsearch": services["elasticsearch"], "es02": services["es02"], "es03": services["es03"]}
    assert services["es02"]["profiles"] == services["es03"]["profiles"] == ["cluster"]
    assert "profiles" not in services["elasticsearch"]  # the one node of the default deployment
    settings = {name: dict(e.split("=", 1) for e in s["environment"]) for name, s in nodes.items()}
    assert settings["elasticsearch"]["${ES_DISCOVERY_SETTING:-discovery.type}"] == "${ES_DISCOVERY_VALUE:-single-node}"
    for name in ("es02", "es03"):
        assert settings[name]["cluster.initial_master_nodes"] == "elasticsearch,es02,es03"
        assert set(settings[name]["discovery.seed_hosts"].split(",")) == set(nodes) - {name}
        assert settings[name]["xpack.security.transport.ssl.certificate"] == f"certs/{name}/{name}.crt"
        assert f"- name: {name}" in services["certs"]["command"]  # its certificate is made
        assert "ports" not in services[name]  # only the first node is published
    assert {s["cluster.name"] for s in settings.values()} == {"secmon"}
    assert all(s["xpack.security.transport.ssl.enabled"] == "true" for s in settings.values())
    commented = [line.lstrip("# ") for line in (ROOT / "docker" / ".env.example").read_text().splitlines()]
    assert "ES_DISCOVERY_VALUE=es02,es03" in commented and "SECMON_CONFIG=./secmon-cluster.yml" in commented
    one = yaml.safe_load((ROOT / "docker" / "secmon.yml").read_text())
    three = yaml.safe_load((ROOT / "docker" / "secmon-cluster.yml").read_text())
    assert three["elasticsearch"].pop("hosts") == [f"https://{n}:9200" for n in nodes]
    one["elasticsearch"].pop("hosts")
    assert one == three


def test_secmon_service_runs_unattended_with_status_as_its_health_check() -> None:
    service = COMPOSE["services"]["secmon"]
    assert service["command"][-1] == "run"
    assert service["healthcheck"]["test"][-1] == "status"
    assert service["healthcheck"]["test"][1:4] == ["secmon", "--config", "/etc/secmon/secmon.yml"]
    assert '"run"]' in (ROOT / "docker" / "Dockerfile").read_text()
