"""Our detection library in rules/: policy checks over every file, and every rule's own examples.

Each rule file carries `secmon: examples: {match: [...], nomatch: [...]}` in its first
document (docs with dotted ECS keys; for correlations, lists of events). The examples run
in-process through the same matcher and windowing the scanner uses, so a rule that stops
matching what it was written for fails here, named by its file.

A rule the compiler cannot compile yet is reported as xfail with load_rules' reason, never
skipped silently.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sigma.rule import SigmaLogSource

from secmon.detect.inprocess.examples import fires
from secmon.detect.sigma.load import load_rule_file, load_rules, rule_files
from secmon.detect.sigma.pipeline import logsources
from secmon.model import Event
from secmon.normalize.engine import Normalizer, put
from secmon.normalize.pipeline import load_pipelines

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules"
FILES = rule_files(RULES)  # Sigma rules only: rules/anomaly/ holds detectors (tests/unit/test_anomaly_detectors.py)

LEVELS = {"informational", "low", "medium", "high", "critical"}
STATUSES = {"stable", "test", "experimental", "deprecated", "unsupported"}
TACTICS = {
    "reconnaissance", "resource-development", "initial-access", "execution", "persistence",
    "privilege-escalation", "defense-evasion", "credential-access", "discovery", "lateral-movement",
    "collection", "command-and-control", "exfiltration", "impact",
}
TECHNIQUE = re.compile(r"^attack\.t\d{4}(\.\d{3})?$")
OTHER_TAG = re.compile(r"^(attack\.(g|s)\d{4}|cve\.\d{4}-\d{4,}|detection\.[a-z-]+|car\.\d{4}-\d{2}-\d{3})$")
ALERTING_KEYS = ("title", "id", "status", "description", "author", "date", "level", "tags", "falsepositives")
BASE_KEYS = ("title", "id", "status", "description", "author", "date", "level")


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


class StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (the second would silently win).

    Overriding a key merged in with `<<: *anchor` is fine: that is what merges are for.
    """


def _no_duplicates(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.load_all(handle, Loader=StrictLoader) if doc is not None]


def alerting(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents that raise incidents: those no correlation in the file builds on."""
    used = {name for doc in docs for name in (doc.get("correlation") or {}).get("rules", [])}
    return [doc for doc in docs if doc.get("name") not in used or doc.get("generate") is True]


def nested(example: Mapping[str, Any]) -> dict[str, Any]:
    """An example with dotted keys (`process.name: sshd`) as the nested document the store holds."""
    doc: dict[str, Any] = {}
    for key, value in example.items():
        put(doc, key, value)
    return doc


def file_problems(path: Path, docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    main = alerting(docs)
    if len(main) != 1:
        return [f"{len(main)} alerting rules in one file; want exactly one (plus its building blocks)"]
    rule = main[0]
    problems += [f"{rule.get('title')!r} lacks {key!r}" for key in ALERTING_KEYS if not rule.get(key)]
    for doc in docs:
        problems += [f"{doc.get('title')!r} lacks {key!r}" for key in BASE_KEYS if not doc.get(key)]
        if str(doc.get("level")) not in LEVELS:
            problems.append(f"{doc.get('title')!r}: level {doc.get('level')!r} is not one of {sorted(LEVELS)}")
        if str(doc.get("status")) not in STATUSES:
            problems.append(f"{doc.get('title')!r}: status {doc.get('status')!r} is not one of {sorted(STATUSES)}")
        if doc.get("author") != "secmon":
            problems.append(f"{doc.get('title')!r}: author must be 'secmon'")
        if not ("correlation" in doc or ("logsource" in doc and "detection" in doc)):
            problems.append(f"{doc.get('title')!r}: needs logsource+detection or correlation")
        source = doc.get("logsource") or {}
        if source and not logsources().known(SigmaLogSource(source.get("category"), source.get("product"),
                                                            source.get("service"))):
            problems.append(f"{doc.get('title')!r}: logsource {source} selects no events "
                            "(add it to secmon/detect/sigma/logsources.yml)")
    tags = [str(t) for t in rule.get("tags") or []]
    if not any(TECHNIQUE.match(t) for t in tags):
        problems.append("no ATT&CK technique tag (attack.tNNNN[.NNN])")
    if not any(t.startswith("attack.") and t[7:] in TACTICS for t in tags):
        problems.append(f"no ATT&CK tactic tag (attack.<one of {sorted(TACTICS)}>)")
    problems += [f"malformed tag {t!r}" for t in tags
                 if not (TECHNIQUE.match(t) or OTHER_TAG.match(t) or (t.startswith("attack.") and t[7:] in TACTICS))]
    if path.name != slug(str(rule.get("title"))) + ".yml":
        problems.append(f"file name should be {slug(str(rule.get('title')))}.yml (slug of the title)")
    examples = ((docs[0].get("secmon") or {}).get("examples")) or {}
    for kind in ("match", "nomatch"):
        items = examples.get(kind)
        if not items:
            problems.append(f"first document lacks secmon.examples.{kind}")
            continue
        want_lists = "correlation" in rule
        if any(isinstance(item, list) != want_lists for item in items):
            shape = "lists of events" if want_lists else "single event documents"
            problems.append(f"secmon.examples.{kind} must hold {shape}")
    return problems


def test_library_size() -> None:
    assert len(FILES) >= 200, f"only {len(FILES)} rule files"


def test_library_policy() -> None:
    problems: list[str] = []
    ids: dict[str, str] = {}
    titles: dict[str, str] = {}
    for path in FILES:
        where = str(path.relative_to(ROOT))
        try:
            docs = documents(path)
        except yaml.YAMLError as exc:
            problems.append(f"{where}: not YAML: {exc}")
            continue
        problems += [f"{where}: {p}" for p in file_problems(path, docs)]
        for doc in docs:
            rule_id, title = str(doc.get("id")), str(doc.get("title"))
            try:
                uuid.UUID(rule_id)
            except ValueError:
                problems.append(f"{where}: id {rule_id!r} is not a UUID")
            if rule_id in ids:
                problems.append(f"{where}: id {rule_id} also in {ids[rule_id]}")
            if title in titles:
                problems.append(f"{where}: title {title!r} also in {titles[title]}")
            ids.setdefault(rule_id, where)
            titles.setdefault(title, where)
    assert not problems, "\n".join(problems)


def as_stored(example: Any) -> Any:
    """An example event (or list of events) as the nested documents the store holds."""
    return [nested(e) for e in example] if isinstance(example, list) else nested(example)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(RULES)) for p in FILES])
def test_rule_examples(path: Path) -> None:
    ruleset = load_rule_file(path)
    if ruleset.problems:
        pytest.xfail("does not compile yet: " + "; ".join(f"{p.where}: {p.reason}" for p in ruleset.problems))
    assert len(ruleset.rules) == 1, [r.title for r in ruleset.rules]
    rule = ruleset.rules[0]
    examples = documents(path)[0]["secmon"]["examples"]
    if rule.kind == "single":  # the scanner drops an event missing a group-by field: examples must have them
        wrong = [f"match example {n} lacks group-by field {field!r}" for n, ex in enumerate(examples["match"])
                 for field in rule.group_by if field not in ex]
        assert not wrong, f"{path.relative_to(ROOT)}: {wrong}"
    wrong = [f"match example {n} does not fire" for n, ex in enumerate(examples["match"]) if not fires(rule, as_stored(ex))]
    wrong += [f"nomatch example {n} fires" for n, ex in enumerate(examples["nomatch"]) if fires(rule, as_stored(ex))]
    assert not wrong, f"{path.relative_to(ROOT)}: {wrong}\nquery: {rule.query}"


SCANNER_LOGS = {  # file in web_scanner_accesslogs -> rules that must fire on some of its lines
    "acunetix.txt": {"Web vulnerability scanner payload marker", "SQL injection attempt in a web request",
                     "Cross-site scripting attempt in a web request", "Path traversal attempt in a web request",
                     "File inclusion attempt in a web request"},
    "netsparker.txt": {"Web vulnerability scanner payload marker", "SQL injection attempt in a web request",
                       "Cross-site scripting attempt in a web request", "Sensitive file probed on a web server"},
    "w3af.txt": {"Web vulnerability scanner user agent"},
    "evtx_attack_samples_web_attack_and_isp_webshell_access_log.txt": {"Web shell accessed"},
}


@pytest.mark.parametrize("name", sorted(SCANNER_LOGS))
def test_web_rules_fire_on_real_scanner_traffic(datasets: Path, name: str) -> None:
    """Real Acunetix / Netsparker / w3af scans and a web-shell log, through the real apache-access pipeline."""
    pipeline = load_pipelines([ROOT / "pipelines"])["apache-access"]
    rules = [r for r in load_rules([RULES / "web"]).rules if r.title in SCANNER_LOGS[name]]
    normalizer = Normalizer(pipeline, agency="portal", timezone="Asia/Ho_Chi_Minh", source=name,
                            now=datetime(2026, 11, 24, tzinfo=UTC))
    fired: set[str] = set()
    with (datasets / "web_scanner_accesslogs" / name).open(encoding="utf-8", errors="replace") as lines:
        for offset, line in enumerate(lines):
            if offset >= 5000 or SCANNER_LOGS[name] <= fired:  # enough of each scan; keeps the test fast
                break
            result = normalizer.normalize(line, offset, f"{name}:{offset}")
            if isinstance(result, Event):
                fired.update(r.title for r in rules if r.title not in fired and fires(r, result.doc))
    assert SCANNER_LOGS[name] <= fired, f"never fired on {name}: {sorted(SCANNER_LOGS[name] - fired)}"
