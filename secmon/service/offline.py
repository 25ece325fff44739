"""The offline flow (`secmon scan --input PATH`): the rules over files, in-process, without Elasticsearch.

EVTX files, EVTX-style JSON ({"Event": ...}), flat NXLog/Winlogbeat JSON, ECS JSON
documents (one per line), or, with --source, any log the pipelines parse. The same
incident output as a cluster scan; nothing is stored and nobody is alerted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from secmon.config import Settings
from secmon.errors import InputError, Location
from secmon.model import DeadLetter, Event, Finding, Incident, ScanSummary, stable_id
from secmon.normalize.engine import put
from secmon.normalize.winlog import flatten_evtx, flatten_winlogbeat_like
from secmon.service.collect import find_pipeline


@dataclass
class Tally:
    """What reading the inputs passed over, for the summary's notes (nothing is dropped unsaid)."""

    retagged: Counter[str] = field(default_factory=Counter)  # organization.id of the inputs, replaced by --agency
    unreadable: list[str] = field(default_factory=list)  # file:line: why a record could not be read
    lost: int = 0  # events known lost in damaged EVTX files

    def notes(self, agency: str) -> tuple[str, ...]:
        out = []
        if self.retagged:
            found = ", ".join(f"{k!r} ({n})" for k, n in self.retagged.most_common(5))
            out.append(f"{sum(self.retagged.values())} events named another agency ({found}): "
                       f"tagged with --agency {agency}")
        if self.unreadable:
            out.append(f"{len(self.unreadable)} record{'s' if len(self.unreadable) != 1 else ''} could not be read"
                       + (f" ({self.lost} EVTX events lost)" if self.lost else "") + f"; first: {self.unreadable[0]}")
        return tuple(out)


def _from_json(record: Mapping[str, Any]) -> dict[str, Any]:
    if "Event" in record or "System" in record:
        return flatten_evtx(record)
    if "EventID" in record and ("Channel" in record or "Hostname" in record):
        return flatten_winlogbeat_like(record)
    doc: dict[str, Any] = {}
    for key, value in record.items():  # ECS JSON, nested or with dotted keys
        put(doc, key, value) if "." in key else doc.__setitem__(key, value)
    return doc


def _json_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    decoder, i, line = json.JSONDecoder(), 0, 1
    while True:
        while i < len(text) and text[i].isspace():
            line += text[i] == "\n"
            i += 1
        if i >= len(text):
            return
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise InputError(f"not JSON: {exc.msg}", location=Location(str(path), exc.lineno, exc.colno)) from None
        except RecursionError:
            raise InputError("a JSON record nested too deeply to read", location=Location(str(path), line)) from None
        yield line, text[i:end], obj
        line += text.count("\n", i, end)
        i = end


def documents(paths: list[Path], agency: str, settings: Settings | None, source: str | None,
              now: datetime, tally: Tally | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, ECS doc) for every record of the input files; what could not be read goes to `tally`."""
    from secmon.collect.evtxfiles import is_evtx, read_evtx

    tally = tally if tally is not None else Tally()
    for path in paths:
        if is_evtx(path):
            for record in read_evtx(path):
                if record.problem:
                    tally.unreadable.append(f"{path}: {record.problem}")
                    tally.lost += record.lost
                    continue
                yield _tagged(record.record_id, flatten_evtx(json.loads(record.text)), record.text, agency, tally)
        elif source is not None:
            yield from _parsed(path, agency, settings, source, now, tally)
        else:
            for line, raw, obj in _json_records(path):
                if not isinstance(obj, Mapping):
                    raise InputError("a JSON record must be an object", location=Location(str(path), line))
                try:
                    doc = _from_json(obj)
                # a record of the wrong shape (hostile or broken) is said, not a crash of the whole scan
                except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
                    tally.unreadable.append(f"{path}:{line}: {type(exc).__name__}: {str(exc)[:200]}")
                    continue
                yield _tagged(f"{path}:{line}", doc, raw, agency, tally)


def _tagged(ident: str, doc: dict[str, Any], raw: str, agency: str, tally: Tally) -> tuple[str, dict[str, Any]]:
    """The document as agency `agency`'s: an input's own organization.id is replaced (and counted)."""
    organization = doc.get("organization")
    if not isinstance(organization, dict):
        organization = doc["organization"] = {}
    own = organization.get("id")
    if own is not None and own != agency:
        tally.retagged[str(own)[:100]] += 1
    organization["id"] = agency
    event = doc.get("event")
    if not isinstance(event, dict):
        event = doc["event"] = {}
    event.setdefault("original", raw)
    return stable_id("event", agency, ident), doc


def _parsed(path: Path, agency: str, settings: Settings | None, source: str, now: datetime, tally: Tally
            ) -> Iterator[tuple[str, dict[str, Any]]]:
    from secmon.collect.files import read_records
    from secmon.normalize.engine import Normalizer

    if settings is None:
        raise InputError("--source needs the configuration (its pipelines)")
    normalizer = Normalizer(find_pipeline(settings, source), agency=agency, timezone="Asia/Ho_Chi_Minh",
                            source=str(path), now=now)
    for record in read_records(path):
        if record.problem:
            tally.unreadable.append(f"{path}:{record.offset}: {record.problem}")
            continue
        result = normalizer.normalize(record.text, record.offset, record.record_id)
        if isinstance(result, Event):
            yield result.id, dict(result.doc)
        elif isinstance(result, DeadLetter):
            tally.unreadable.append(f"{path}:{record.offset}: {result.reason}")


def summary(incidents: list[Incident], rules_run: int, failures: list[tuple[str, str]], now: datetime,
            notes: tuple[str, ...] = ()) -> ScanSummary:
    first = min((i.finding.first_seen for i in incidents), default=now)
    last = max((i.finding.last_seen for i in incidents), default=now)
    return ScanSummary(id=stable_id("offline-scan", now.isoformat()), started=now, window_from=first,
                       window_to=last, rules_run=rules_run, rules_failed=tuple(failures),
                       incidents=tuple(incidents), new_incident_ids=tuple(i.id for i in incidents),
                       deliveries_sent=0, deliveries_pending=0,
                       notes=("offline scan: nothing stored, nobody alerted", *notes))


def scan_files(inputs: list[Path], rule_paths: list[Path], agency: str, settings: Settings | None,
               source: str | None, now: datetime, unmapped: Literal["skip", "run"] = "skip",
               model_files: list[Path] | None = None) -> ScanSummary:
    """Load the rules, read every input and match in-process; nothing is stored and nobody is alerted.
    With `model_files` (from `secmon model export`), their detectors score the same documents."""
    from secmon.detect.rules.load import load_rules, unmapped_note
    from secmon.detect.rules.offline import scan_documents

    ruleset = load_rules(rule_paths, unmapped)
    tally = Tally()
    failures: list[tuple[str, str]] = [(p.where, p.reason) for p in ruleset.problems]
    docs: list[tuple[str, dict[str, Any]]] | None = None
    if model_files:  # the detectors need the documents again: keep them
        docs = list(documents(inputs, agency, settings, source, now, tally))
    found = scan_documents(ruleset.rules, iter(docs) if docs is not None else
                           documents(inputs, agency, settings, source, now, tally), failures)
    if model_files and docs is not None:
        findings, problems = anomaly_findings(model_files, rule_paths, [d for _, d in docs], agency)
        found = [*found, *findings]
        failures += problems
    incidents = [Incident(id=f.incident_id, finding=f, created=now) for f in found]
    return summary(incidents, len(ruleset.rules), failures, now, tally.notes(agency) + tuple(unmapped_note(ruleset)))


def anomaly_findings(model_files: list[Path], rule_paths: list[Path], docs: list[dict[str, Any]], agency: str
                     ) -> tuple[list[Finding], list[tuple[str, str]]]:
    """Score the documents' windows with exported models (checked as when read from Elasticsearch)."""
    from secmon.detect.anomaly import fit
    from secmon.detect.anomaly.detector import load_detectors
    from secmon.detect.anomaly.explain import explain
    from secmon.detect.anomaly.features import in_process
    from secmon.detect.anomaly.trained import from_doc
    from secmon.types import DEFAULT_TIMEZONE

    loaded = load_detectors(rule_paths, files=False)
    problems = [(p.where, p.reason) for p in loaded.problems]
    findings: list[Finding] = []
    for path in model_files:
        try:
            model = from_doc(json.loads(path.read_text(encoding="utf-8")), str(path))
            detector = loaded.get(model.detector)
        except (OSError, ValueError, InputError) as exc:
            problems.append((str(path), str(exc)))
            continue
        if detector.templates:
            problems.append((str(path), f"detector {detector.id} mines log templates, whose state lives in "
                                        "Elasticsearch: not scored offline"))
            continue
        rows = list(in_process(detector, docs, DEFAULT_TIMEZONE, agency=agency))
        for scored in fit.score(model, detector, rows):
            if scored.anomalous(model.threshold):
                row = scored.row
                findings.append(Finding(
                    rule_id=detector.id, rule_title=detector.title, severity=detector.severity, agency=row.agency,
                    group=((detector.entity, row.entity),), first_seen=row.first, last_seen=row.last,
                    count=row.count, tags=detector.tags, description=detector.description,
                    translations=detector.translations, detector="anomaly",
                    explanation=explain(model, detector, scored, note=f"offline, model from {path.name}")))
    return findings, problems
