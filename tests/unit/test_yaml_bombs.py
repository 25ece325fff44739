"""YAML from users is hostile: alias bombs, recursive aliases and absurd nesting are refused
quickly, with file:line, by every loader (config, pipelines, rules, a rule's examples)."""

from __future__ import annotations

from pathlib import Path

import pytest

from secmon.errors import InputError
from secmon.yamlio import MAX_ALIAS_NODES, load_all_text
from tests.conftest import ROOT, run_cli


def laughs(levels: int, width: int = 9, indent: str = "", key: str = "lol") -> str:
    """'Billion laughs': each level is `width` aliases of the level below (9 levels: 9**9 leaves)."""
    lines = [f"{indent}{key}0: &{key}0 [" + ", ".join(['"lol"'] * width) + "]"]
    for level in range(1, levels + 1):
        lines.append(f"{indent}{key}{level}: &{key}{level} [" + ", ".join([f"*{key}{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [7, 8, 9])
def test_billion_laughs_is_refused_with_its_line(levels: int) -> None:
    with pytest.raises(InputError) as caught:
        list(load_all_text(laughs(levels), "bomb.yml"))
    # Refused at the first alias that passes the cap, long before the bomb's last level.
    assert str(caught.value.location) == "bomb.yml:5:49"
    assert "alias bomb" in caught.value.message and f"{MAX_ALIAS_NODES:,}" in caught.value.message


def test_a_few_ordinary_aliases_and_merge_keys_still_load() -> None:
    text = "base: &base {port: 25, starttls: true}\nsmtp: {<<: *base, host: mail}\nmore: [*base, *base]\n"
    (doc,) = load_all_text(text, "ok.yml")
    assert doc.data["smtp"] == {"port": 25, "starttls": True, "host": "mail"}
    assert doc.data["more"] == [{"port": 25, "starttls": True}] * 2
    assert doc.data["more"][0] is not doc.data["more"][1]  # copies: nothing aliased leaks out


@pytest.mark.parametrize("text,where,message", [
    ("a: &a [1, *a]\n", "r.yml:1:11", "recursive"),
    ("a: &a {b: *a}\n", "r.yml:1:11", "recursive"),
    ("x: " + "[" * 150 + "]" * 150 + "\n", "r.yml:1:103", "nested more than 100 levels"),
    ("a: *nowhere\n", "r.yml:1:4", "undefined alias"),
])
def test_recursive_aliases_and_deep_nesting_are_refused(text: str, where: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        list(load_all_text(text, "r.yml"))
    assert str(caught.value.location) == where and message in caught.value.message


def test_a_bomb_in_the_config_is_a_config_error_at_once(tmp_path: Path) -> None:
    config = tmp_path / "secmon.yml"
    config.write_text("elasticsearch: {hosts: [http://127.0.0.1:1]}\n" + laughs(9), encoding="utf-8")
    code, _, err = run_cli("-c", str(config), "rules", "list")  # the rules folders come from the config
    assert code == 3, err
    # Line 6 is the fifth level: refused while composing, before the deeper levels are even read.
    assert f"{config}:6:49: aliases expand to more than" in err


def test_a_bomb_in_a_pipeline_names_its_file_and_line(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "bomb.yml").write_text("id: bomb\nformat: line\n" + laughs(9, key="x"), encoding="utf-8")
    code, out, err = run_cli("pipelines", "list", "--pipelines", str(pipelines))
    assert code == 4 and f"{pipelines / 'bomb.yml'}:7:35: aliases expand to more than" in err, (out, err)


def test_a_bomb_in_a_rule_file_is_a_problem_of_that_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "good.yml").write_text((ROOT / "rules" / "linux" / "ssh-password-brute-force.yml").read_text(
        encoding="utf-8"), encoding="utf-8")
    # The bomb sits in the `secmon:` section, which pySigma hands through untouched, and in `examples`,
    # which `rules test` runs.
    (rules / "bomb.yml").write_text(
        "title: bomb\nlogsource: {product: linux}\ndetection: {sel: {a: b}, condition: sel}\nsecmon:\n"
        + laughs(9, indent="  ") + "  examples: {match: [*lol9]}\n", encoding="utf-8")
    for command in ("validate", "list", "test"):
        code, out, err = run_cli("rules", command, str(rules))
        assert code == 4, (command, out, err)
        assert f"{rules / 'bomb.yml'}:9:51: aliases expand to more than" in out + err, (command, out, err)
    code, out, err = run_cli("rules", "list", str(rules))
    assert "SSH password brute force" in out
