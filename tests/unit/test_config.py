"""A wrong key, type or value in secmon.yml is one message naming file:line and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from secmon.config import load_settings
from secmon.errors import ConfigError

GOOD = """\
elasticsearch:
  hosts: [http://127.0.0.1:9200]
agencies:
  - id: so-tttt
    name: So TTTT
    recipients: [soc@example.vn]
"""


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "secmon.yml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def test_good_config(tmp_path: Path) -> None:
    settings = load(tmp_path, GOOD)
    assert settings.agency("so-tttt").timezone == "Asia/Ho_Chi_Minh"
    assert settings.agency("so-tttt").language == "vi"
    assert settings.elasticsearch.hosts == ("http://127.0.0.1:9200",)


@pytest.mark.parametrize("text,where,message", [
    (GOOD + "smtp:\n  prot: 25\n", "8:3", "unknown key 'prot' in smtp (did you mean 'port'?)"),
    (GOOD + "smtp:\n  port: twenty\n", "8:3", "smtp.port: expected an integer"),
    (GOOD.replace("recipients: [soc@example.vn]", "recipients: [soc]"), "6:18", "is not an email address"),
    (GOOD.replace("name: So TTTT", "name: So TTTT\n    language: fr"), "6:5", "agencies[0].language: expected 'vi' or 'en'"),
    (GOOD.replace("name: So TTTT", "name: So TTTT\n    timezone: Mars/Base"), "6:5", "not an IANA time zone"),
    (GOOD.replace("id: so-tttt", "id: So TTTT"), "4:5", "not a valid agency id"),
    (GOOD + "schedule:\n  lookback: soon\n", "8:3", "not a duration"),
    (GOOD + "agencies: [\n", "8:1", "invalid YAML"),
    (GOOD.replace("  - id: so-tttt\n", "  - idd: so-tttt\n"), "4:5", "unknown key 'idd'"),
])
def test_bad_config(tmp_path: Path, text: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    text_of = str(caught.value)
    assert f"{tmp_path / 'secmon.yml'}:{where}: " in text_of, text_of
    assert message in text_of


def test_every_problem_of_the_file_at_once(tmp_path: Path) -> None:
    """An admin fixes the whole file in one pass: shape errors and value errors, each with file:line:column."""
    text = GOOD.replace("name: So TTTT", "name: So TTTT\n    timezone: Mars/Base\n    language: fr") + (
        "smtp:\n  prot: 25\n  port: twenty\nschedule:\n  lookback: soon\nalerts:\n  hourly_cap: 0\n")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    lines = str(caught.value).splitlines()
    path = tmp_path / "secmon.yml"
    assert lines[0] == f"{path}: 3 problems", lines
    # Shape problems stop the value checks (a value cannot be checked in a wrong shape), but every
    # shape problem is there, in file order, each with file:line:column.
    assert [line.strip().split(": ", 1)[0] for line in lines[1:]] == [f"{path}:7:5", f"{path}:10:3", f"{path}:11:3"]
    assert "language: expected 'vi' or 'en'" in lines[1] and "did you mean 'port'?" in lines[2]
    assert "smtp.port: expected an integer" in lines[3]


def test_value_problems_are_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace("name: So TTTT", "name: So TTTT\n    timezone: Mars/Base") + (
        "schedule:\n  lookback: soon\nalerts:\n  hourly_cap: 0\n")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'secmon.yml'}: 3 problems"), message
    for part in ("not an IANA time zone", "schedule.lookback", "alerts.hourly_cap must be at least 1"):
        assert part in message, message


def test_secrets_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(tmp_path, GOOD.replace("  hosts:", "  api_key_env: SECMON_TEST_KEY\n  hosts:"))
    with pytest.raises(ConfigError, match="SECMON_TEST_KEY"):
        settings.elasticsearch.credentials()
    monkeypatch.setenv("SECMON_TEST_KEY", "abc")
    assert settings.elasticsearch.credentials() == {"api_key": "abc"}


# The config's shape is checked by pydantic-core from a schema secmon writes out (validation._schema), not by
# pydantic's TypeAdapter (issue 12: building that was a fifth of every command's start-up). These keep the two
# the same: the schema pydantic would generate with the config secmon used to give it, and its errors.
PYDANTIC_SHAPE = {"extra": "forbid", "coerce_numbers_to_str": True}
SECTIONS = ("ElasticsearchSettings", "Agency", "SmtpSettings", "Route", "AlertSettings", "IncidentSettings",
            "ScheduleSettings", "Settings")


def _pydantic(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import secmon.config
    from pydantic import TypeAdapter

    for name in SECTIONS:
        monkeypatch.setattr(getattr(secmon.config, name), "__pydantic_config__", PYDANTIC_SHAPE, raising=False)
    return TypeAdapter(secmon.config.Settings)


def _plain(schema):  # type: ignore[no-untyped-def]
    """The schema without pydantic's bookkeeping (refs for recursion, metadata for JSON schema) and without
    defaults spelled out (a default factory does not take the data unless it says so)."""
    if isinstance(schema, dict):
        return {key: _plain(value) for key, value in schema.items() if key not in ("ref", "metadata")
                and (key, value) != ("default_factory_takes_data", False)}
    if isinstance(schema, list):
        return [_plain(item) for item in schema]
    return schema


def test_the_config_schema_is_the_one_pydantic_generates(monkeypatch: pytest.MonkeyPatch) -> None:
    from secmon.config import Settings
    from secmon.validation import _schema

    assert _plain(_schema(Settings)) == _plain(_pydantic(monkeypatch).core_schema)


@pytest.mark.parametrize("data", [
    {},
    {"smtp": {"prot": 25, "port": "twenty", "starttls": "maybe", "timeout": 10.5}},
    {"smtp": {"port": "25", "starttls": "yes", "ssl": 0}, "operator": 7, "rules": "rules"},
    {"agencies": [{"id": 2024, "name": "x", "language": "fr", "recipients": ["a@b", 3, None]}, {"name": "no id"}]},
    {"agencies": {"id": "x"}, "alerts": {"routes": [{"name": "r"}, {"name": "s", "recipients": [], "agencies": "*"}]}},
    {"elasticsearch": {"hosts": "http://x:9200", "request_timeout": True, "api_key_env": 1.5}, "schedule": []},
    {"elasticsearch": None, "incidents": {"quiet_period": 60, "renotify_interval": [1]}, "pipelines": [["a"]]},
    {"alerts": {"daily_digest": 800, "hourly_cap": "20", "templates": {"a": 1}}, "base_dirr": "."},
])
def test_the_shape_errors_are_the_ones_pydantic_reports(monkeypatch: pytest.MonkeyPatch, data: object) -> None:
    from pydantic import ValidationError

    from secmon.config import Settings
    from secmon.validation import _tuples, _validator

    adapter = _pydantic(monkeypatch)

    def outcome(validate):  # type: ignore[no-untyped-def]
        try:
            return validate(_tuples(data))
        except ValidationError as exc:
            return exc.errors(include_url=False)

    assert outcome(_validator(Settings).validate_python) == outcome(adapter.validate_python)


def test_a_shape_problem_is_still_reported_at_its_place_in_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, GOOD + "alerts:\n  routes:\n    - name: r\n      recipients: [x@y.vn]\n      min_severity: huge\n")
    problem = str(caught.value)
    assert f"{tmp_path / 'secmon.yml'}:11:7: alerts.routes[0].min_severity: expected 'informational' or" in problem, \
        problem
