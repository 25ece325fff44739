"""Detector files: the shipped ones load clean; broken ones say file:line:column, every problem at once;
the Sigma loader leaves them alone."""

from __future__ import annotations

from pathlib import Path

from secmon.detect.anomaly.detector import load_detector_file, load_detectors
from secmon.detect.sigma.load import rule_files
from tests.conftest import ROOT

SHIPPED = ROOT / "rules" / "anomaly"


def test_the_shipped_detectors_load_without_a_problem() -> None:
    loaded = load_detectors([ROOT / "rules"])
    assert not loaded.problems, loaded.problems
    assert len(loaded.detectors) >= 8
    for detector in loaded.detectors:
        assert Path(detector.path).stem == detector.id
        assert detector.translations and detector.translations[0][0] == "vi", detector.id
        assert any(t.startswith("attack.") for t in detector.tags), detector.id


def test_the_sigma_loader_skips_the_detectors_folder() -> None:
    assert not [p for p in rule_files(ROOT / "rules") if "anomaly" in p.parts]
    assert rule_files(ROOT / "rules")


def test_every_problem_of_a_broken_file_is_reported_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "web-clients.yml"
    path.write_text("""\
id: web-clients
title: Web clients
severity: urgent
events: {event.category: web}
entity: source.ip
window: 90x
colour: blue
features:
  - {name: hits, kind: count}
  - {name: hits, kind: count}
  - {name: Bad-Name, kind: count}
  - {name: paths, kind: distinct}
  - {name: odd, kind: median, field: url.path}
  - {name: shape, kind: shape, field: url.original, measure: colour}
""")
    detector, problems = load_detector_file(path)
    assert detector is None
    text = "\n".join(f"{p.where}: {p.reason}" for p in problems)
    assert f"{path}:3:1: severity 'urgent' is not one of" in text, text
    assert f"{path}:6:1: window: '90x' is not a duration" in text, text
    assert f"{path}:7:1: unknown key 'colour'" in text, text
    assert f"{path}:10:6" in text and "feature name 'hits' appears twice" in text, text
    assert f"{path}:11:5: feature name 'Bad-Name'" in text, text
    assert f"{path}:12:5: feature paths: kind distinct needs a `field`" in text, text
    assert f"{path}:13:" in text and "kind 'median' is not one of" in text, text
    assert f"{path}:14:" in text and "measure 'colour' is not one of" in text, text
    assert len(problems) == 8, text
    lines = [int(p.where.split(":")[-2]) for p in problems]
    assert lines == sorted(lines)  # in file order


def test_yaml_errors_missing_keys_and_a_wrong_file_name(tmp_path: Path) -> None:
    (tmp_path / "anomaly").mkdir()
    (tmp_path / "anomaly" / "bad-yaml.yml").write_text("id: bad-yaml\nfeatures: [\n")
    (tmp_path / "anomaly" / "empty.yml").write_text("id: empty\ntitle: Empty\n")
    (tmp_path / "anomaly" / "other-name.yml").write_text(
        "id: not-the-file\ntitle: T\nevents: {a: b}\nentity: host.name\nfeatures: [{name: n, kind: count}]\n")
    loaded = load_detectors([tmp_path])
    text = "\n".join(f"{p.where}: {p.reason}" for p in loaded.problems)
    assert "bad-yaml.yml:3:1: invalid YAML" in text, text
    assert "empty.yml:1:1: missing required key 'events'" in text and "missing required key 'entity'" in text
    assert "empty.yml:1:1: features must be a non-empty list" in text, text
    assert "other-name.yml:1:1: id 'not-the-file' differs from the file name" in text, text
    assert not loaded.detectors
