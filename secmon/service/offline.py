"""The offline flow (`secmon scan --input PATH`): the rules over files, in-process, without Elasticsearch.

EVTX files, EVTX-style JSON ({"Event": ...}), flat NXLog/Winlogbeat JSON, ECS JSON
documents (one per line), or, with --source, any log the pipelines parse. Windows records
go through the same pipelines as `collect` (windows-evtx, windows-json), so an event is the
same document offline and on the cluster. The same incident output as a cluster scan;
nothing is stored and nobody is alerted. Every record that does not become an event is a
dead letter of its file, counted with its reason (`ScanSummary.inputs`).
"""

from __future__ import annotations

import gc
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from secmon.collect.evtxfiles import is_evtx, read_evtx
from secmon.detect.compiled import CompiledRule, RuleSet, unmapped_note
from secmon.detect.inprocess.router import Matches, RuleIndex, RuleRouter, findings_of, match_documents
from secmon.errors import InputError, Location
from secmon.model import DeadLetter, Event, Finding, Incident, InputReport, ScanSummary, stable_id
from secmon.normalize.engine import Normalizer, Result, put
from secmon.normalize.pipeline import Pipeline, pipeline_named
from secmon.normalize.urls import URL_PROBLEM_TAG

EVTX_PIPELINE = "windows-evtx"  # {"Event": {"System": ..., "EventData": ...}}: EVTX files and their JSON
WINLOG_PIPELINE = "windows-json"  # flat NXLog / Winlogbeat-style JSON
REASONS_KEPT = 20  # distinct dead-letter reasons counted per file; the rest are "other reasons"


@dataclass(frozen=True)
class OfflineJob:
    """Everything one offline scan needs, decided at the edge (the CLI)."""

    inputs: tuple[Path, ...]  # files (collect.inputs.expand resolved folders and globs)
    rule_paths: tuple[Path, ...]
    agency: str
    timezone: str  # of the agency: local times without an offset are read in it
    pipelines: tuple[Path, ...]  # folders with the pipelines (windows-evtx, windows-json, --source)
    source: str | None = None  # a pipeline for every input, instead of EVTX/JSON by shape
    unmapped: str = "skip"  # rules with an unmapped logsource: "skip" or "run"
    cache: Path | None = None  # the rule cache folder (detect.cache); None: compile every time
    passed_over: tuple[tuple[str, str], ...] = ()  # files of folders and globs not read, and why
    workers: int = 1  # processes reading and matching the inputs
    models: tuple[Path, ...] = ()  # anomaly models from `secmon model export`, scored on the same documents


@dataclass
class _FileTally:
    path: str
    readers: set[str] = field(default_factory=set)
    events: int = 0
    dead_letters: int = 0
    skipped: int = 0
    lost: int = 0
    url_undecodable: int = 0
    first: str = ""
    reasons: Counter[str] = field(default_factory=Counter)

    def dead(self, where: str, reason: str) -> None:
        self.dead_letters += 1
        self.first = self.first or where
        key = reason[:200]
        if key not in self.reasons and len(self.reasons) >= REASONS_KEPT:
            key = "other reasons"
        self.reasons[key] += 1

    def report(self) -> InputReport:
        return InputReport(self.path, ", ".join(sorted(self.readers)) or "-", self.events, self.dead_letters,
                           self.skipped, tuple(self.reasons.most_common()), self.first, self.lost,
                           self.url_undecodable)


class _Reader:
    """Turns the records of the input files into (id, ECS document), counting per file."""

    def __init__(self, job: OfflineJob, now: datetime, pipelines: dict[str, Pipeline] | None = None):
        """`pipelines`: the ones already read by id, shared by the readers of one process."""
        self.job = job
        self.now = now
        self.tallies: list[_FileTally] = []
        self.retagged: Counter[str] = Counter()  # organization.id of ECS inputs, replaced by --agency
        self._pipelines: dict[str, Pipeline] = {} if pipelines is None else pipelines
        self._shared: dict[str, Normalizer] = {}

    def pipeline(self, pipeline_id: str) -> Pipeline:
        found = self._pipelines.get(pipeline_id)
        if found is None:
            found = pipeline_named(list(self.job.pipelines), pipeline_id)
            if found is None:
                folders = ", ".join(map(str, self.job.pipelines)) or "none"
                raise InputError(f"pipeline {pipeline_id!r} not found (pipeline folders: {folders})",
                                 hint="the config's `pipelines`, or run from secmon's folder")
            self._pipelines[pipeline_id] = found
        return found

    def normalizer(self, pipeline_id: str, path: Path) -> Normalizer:
        pipeline = self.pipeline(pipeline_id)
        if pipeline.format in ("evtx", "winlog"):
            # Windows records carry their own time and ids: the normalizer keeps no state of the file
            # (no yearless clock, no header), so one serves every file; only the name it reports moves.
            shared = self._shared.get(pipeline_id)
            if shared is None:
                shared = self._shared[pipeline_id] = Normalizer(pipeline, agency=self.job.agency,
                                                                timezone=self.job.timezone, source="", now=self.now)
            shared.source = str(path)
            return shared
        return Normalizer(pipeline, agency=self.job.agency, timezone=self.job.timezone, source=str(path),
                          now=self.now)

    def documents(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for path in self.job.inputs:
            tally = _FileTally(str(path))
            self.tallies.append(tally)
            if is_evtx(path):
                yield from self._evtx(path, tally)
            elif self.job.source is not None:
                yield from self._parsed(path, tally)
            else:
                yield from self._json(path, tally)

    @staticmethod
    def _counted(result: Result, tally: _FileTally, where: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        if isinstance(result, Event):
            tally.events += 1
            tags = result.doc.get("tags")
            if tags and URL_PROBLEM_TAG in tags:  # matched as decoded as it could be; never silent: counted
                tally.url_undecodable += 1
            yield result.id, result.doc
        elif isinstance(result, DeadLetter):
            tally.dead(where, result.reason)
        else:
            tally.skipped += 1

    def _evtx(self, path: Path, tally: _FileTally) -> Iterator[tuple[str, Mapping[str, Any]]]:
        tally.readers.add(f"evtx, {EVTX_PIPELINE}")
        normalizer = self.normalizer(EVTX_PIPELINE, path)
        for record in read_evtx(path):  # the records `collect` reads, under the same ids
            where = f"{path}: record {record.offset}"
            if record.problem:
                tally.dead(where, record.problem)
                tally.lost += record.lost
                continue
            yield from self._counted(normalizer.normalize(record.text, record.offset, record.record_id), tally, where)

    def _parsed(self, path: Path, tally: _FileTally) -> Iterator[tuple[str, Mapping[str, Any]]]:
        from secmon.collect.files import read_records

        assert self.job.source is not None
        tally.readers.add(self.job.source)
        normalizer = self.normalizer(self.job.source, path)
        for record in read_records(path):
            where = f"{path}: byte {record.offset}"
            if record.problem:
                tally.dead(where, record.problem)
                continue
            yield from self._counted(normalizer.normalize(record.text, record.offset, record.record_id), tally, where)

    def _json(self, path: Path, tally: _FileTally) -> Iterator[tuple[str, Mapping[str, Any]]]:
        normalizers: dict[str, Normalizer] = {}
        if _evtx_lines(path):
            # One EVTX record per line (evtx_dump -o jsonl, secmon's own exports): each line goes to
            # the pipeline as it is, read once; a line of another shape is read by its shape.
            yield from self._evtx_lines(path, tally, normalizers)
            return
        for line, raw, obj in _json_records(path):
            yield from self._record(path, line, raw, obj, tally, normalizers)

    def _evtx_lines(self, path: Path, tally: _FileTally, normalizers: dict[str, Normalizer]
                    ) -> Iterator[tuple[str, Mapping[str, Any]]]:
        normalize = None  # the EVTX pipeline's, once a line needs it
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if line.startswith('{"Event"') or line.lstrip().startswith('{"Event"'):
                    if normalize is None:
                        if EVTX_PIPELINE not in normalizers:
                            normalizers[EVTX_PIPELINE] = self.normalizer(EVTX_PIPELINE, path)
                            tally.readers.add(f"json, {EVTX_PIPELINE}")
                        normalize = normalizers[EVTX_PIPELINE].normalize
                    where = f"{path}:{number}"
                    result = normalize(line, None, where)
                    if type(result) is Event and URL_PROBLEM_TAG not in (result.doc.get("tags") or ()):
                        tally.events += 1  # the common case of _counted, without a generator a line
                        yield result.id, result.doc
                    else:
                        yield from self._counted(result, tally, where)
                elif line.strip():
                    try:
                        obj = json.loads(line)
                    except (ValueError, RecursionError) as exc:
                        tally.dead(f"{path}:{number}", f"not a JSON record: {str(exc)[:200]}")
                        continue
                    yield from self._record(path, number, line, obj, tally, normalizers)

    def _piped(self, pipeline_id: str, path: Path, line: int, raw: str, tally: _FileTally,
               normalizers: dict[str, Normalizer]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        normalizer = normalizers.get(pipeline_id)
        if normalizer is None:
            normalizer = normalizers[pipeline_id] = self.normalizer(pipeline_id, path)
            tally.readers.add(f"json, {pipeline_id}")
        yield from self._counted(normalizer.normalize(raw, None, f"{path}:{line}"), tally, f"{path}:{line}")

    def _record(self, path: Path, line: int, raw: str, obj: Any, tally: _FileTally,
                normalizers: dict[str, Normalizer]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """One JSON record by its shape: Windows records through their pipeline, ECS documents as they are."""
        where = f"{path}:{line}"
        if not isinstance(obj, Mapping):
            tally.dead(where, f"a JSON record must be an object, not {type(obj).__name__}")
        elif "Event" in obj or "System" in obj:
            yield from self._piped(EVTX_PIPELINE, path, line, raw, tally, normalizers)
        elif "EventID" in obj and ("Channel" in obj or "Hostname" in obj):
            yield from self._piped(WINLOG_PIPELINE, path, line, raw, tally, normalizers)
        else:
            tally.readers.add("json, ECS")
            tally.events += 1
            ident, doc = self._ecs(where, obj, raw)
            tags = doc.get("tags")
            if isinstance(tags, list) and URL_PROBLEM_TAG in tags:
                tally.url_undecodable += 1
            yield ident, doc

    def _ecs(self, ident: str, record: Mapping[str, Any], raw: str) -> tuple[str, dict[str, Any]]:
        """An ECS document (nested or with dotted keys) as agency `agency`'s: its own organization.id is
        replaced (and counted)."""
        doc: dict[str, Any] = {}
        for key, value in record.items():
            put(doc, key, value) if "." in key else doc.__setitem__(key, value)
        organization = doc.get("organization")
        if not isinstance(organization, dict):
            organization = doc["organization"] = {}
        own = organization.get("id")
        if own is not None and own != self.job.agency:
            self.retagged[str(own)[:100]] += 1
        organization["id"] = self.job.agency
        event = doc.get("event")
        if not isinstance(event, dict):
            event = doc["event"] = {}
        event.setdefault("original", raw)
        return stable_id("event", self.job.agency, ident), doc

def _evtx_lines(path: Path) -> bool:
    """Whether the file's first record is an EVTX record ({"Event": ...}) on one line of its own."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                if not line.lstrip().startswith('{"Event"'):
                    return False
                try:
                    return isinstance(json.loads(line), dict)
                except (ValueError, RecursionError):
                    return False
    return False


def _json_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(line, text, value) of every JSON value of the file, one per line or spread over lines."""
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


def _notes(tallies: list[_FileTally], retagged: Counter[str], agency: str) -> list[str]:
    out = []
    if retagged:
        found = ", ".join(f"{k!r} ({n})" for k, n in retagged.most_common(5))
        out.append(f"{sum(retagged.values())} events named another agency ({found}): tagged with --agency {agency}")
    dead = [t for t in tallies if t.dead_letters]
    if dead:
        total = sum(t.dead_letters for t in dead)
        lost = sum(t.lost for t in dead)
        out.append(f"{total} record{'s' if total != 1 else ''} of {len(dead)} file{'s' if len(dead) != 1 else ''}"
                   " could not be read or parsed and were not matched" + (f" ({lost} EVTX events lost)" if lost else "")
                   + f"; first: {dead[0].first}: {dead[0].reasons.most_common(1)[0][0]}")
    return out


def summary(incidents: list[Incident], rules_run: int, failures: list[tuple[str, str]], now: datetime,
            notes: tuple[str, ...] = (), inputs: tuple[InputReport, ...] = ()) -> ScanSummary:
    first = min((i.finding.first_seen for i in incidents), default=now)
    last = max((i.finding.last_seen for i in incidents), default=now)
    return ScanSummary(id=stable_id("offline-scan", now.isoformat()), started=now, window_from=first,
                       window_to=last, rules_run=rules_run, rules_failed=tuple(failures),
                       incidents=tuple(incidents), new_incident_ids=tuple(i.id for i in incidents),
                       deliveries_sent=0, deliveries_pending=0,
                       notes=("offline scan: nothing stored, nobody alerted", *notes), inputs=inputs)


def _rules(job: OfflineJob) -> tuple[RuleSet, dict[int, RuleIndex], list[str]]:
    """The rules, from the cache when it has them (then also what the router reads from each)."""
    if job.cache is None:
        from secmon.detect.sigma.load import load_rules

        return load_rules(list(job.rule_paths), job.unmapped), {}, []  # type: ignore[arg-type]
    from secmon.detect.cache import RuleCache

    cache = RuleCache(job.cache)
    ruleset = cache.load_rules(list(job.rule_paths), job.unmapped)  # type: ignore[arg-type]
    indexes = {n: i for n, rule in enumerate(ruleset.rules) if (i := cache.index_of(rule)) is not None}
    return ruleset, indexes, [f"rule cache: {w}" for w in cache.warnings]


Part = tuple[list[int], list[_FileTally], Matches, Counter[str]]
# What a worker process inherits: the router, the job, the time, and the pipelines its readers share.
_FORKED: tuple[RuleRouter, OfflineJob, datetime, dict[str, Pipeline]] | None = None


def _match_part(numbers: list[int]) -> Part:
    """Read and match the inputs at these positions (in this process, or in a forked worker)."""
    assert _FORKED is not None
    router, job, now, pipelines = _FORKED
    reader = _Reader(replace(job, inputs=tuple(job.inputs[n] for n in numbers)), now, pipelines)
    return numbers, reader.tallies, match_documents(router, reader.documents()), reader.retagged


def _parts(job: OfflineJob) -> list[list[int]]:
    """The inputs in groups of about equal size for `job.workers` processes (eight groups each, so
    that the last large file does not leave the others idle long)."""
    sizes = sorted(((p.stat().st_size, n) for n, p in enumerate(job.inputs)), reverse=True)
    groups: list[list[int]] = [[] for _ in range(min(len(sizes), job.workers * 8))]
    loads = [0] * len(groups)
    for size, number in sizes:
        smallest = loads.index(min(loads))
        groups[smallest].append(number)
        loads[smallest] += size
    return [sorted(g) for g in groups if g]


# Below this many hits, the windowing runs in this process (a fork costs more than it saves).
PARALLEL_FINDINGS = 20_000
# What a windowing worker inherits: the rules and the merged matches.
_WINDOWED: tuple[list[CompiledRule], Matches] | None = None


def _window_part(numbers: list[int]) -> list[tuple[int, list[Finding]]]:
    """The findings of the rules at these positions, each rule's on its own (in a forked worker)."""
    assert _WINDOWED is not None
    rules, matches = _WINDOWED
    return [(n, findings_of(rules, Matches(hits={n: matches.hits[n]}))) for n in numbers]


def _findings(rules: list[CompiledRule], matches: Matches, failures: list[tuple[str, str]], workers: int
              ) -> list[Finding]:
    """`findings_of`, with the windowing of the rules shared out to `workers` forked processes when
    the hits are many (a million events make hundreds of thousands): the same findings in the same
    order (each rule's are computed alike; they are put back in rule order, then sorted as
    findings_of sorts them)."""
    global _WINDOWED
    total = sum(len(h) for h in matches.hits.values())
    if workers <= 1 or total < PARALLEL_FINDINGS or len(matches.hits) <= 1:
        return findings_of(rules, matches, failures)
    findings_of(rules, replace(matches, hits={}), failures)  # the rules that timed out or did not compile
    groups: list[list[int]] = [[] for _ in range(workers * 4)]
    loads = [0] * len(groups)
    for number, hits in sorted(matches.hits.items(), key=lambda item: -len(item[1])):
        smallest = loads.index(min(loads))
        groups[smallest].append(number)
        loads[smallest] += len(hits)
    import multiprocessing

    _WINDOWED = (rules, matches)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = [one for part in pool.imap_unordered(_window_part, [g for g in groups if g]) for one in part]
    finally:
        _WINDOWED = None
    result = [f for _, found in sorted(parts, key=lambda part: part[0]) for f in found]
    return sorted(result, key=lambda f: (f.first_seen, f.rule_id, f.group))


def scan_files(job: OfflineJob, now: datetime) -> ScanSummary:
    """Load the rules, read every input and match in-process; with `job.workers` > 1 the inputs are
    read and matched by forked processes sharing the loaded rules, and their matches merged."""
    global _FORKED
    thresholds = gc.get_threshold()
    # Loading thousands of rules allocates hundreds of thousands of objects, none of them garbage:
    # at the default thresholds the collector would walk the growing heap again and again (a third
    # of the start-up). Once loaded, the rules are frozen: later collections (matching makes no
    # cycles, but allocates) never visit them, in this process or in a forked worker (where a visit
    # would touch, hence copy, every page of the parent's heap).
    gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
    try:
        ruleset, indexes, cache_notes = _rules(job)
        router = RuleRouter(ruleset.rules, indexes)
        gc.freeze()
        _FORKED = (router, job, now, {})
        everything = list(range(len(job.inputs)))
        if job.workers <= 1 or len(job.inputs) <= 1:
            parts = [_match_part(everything)]
        else:
            import multiprocessing  # --jobs over 1 only

            with multiprocessing.get_context("fork").Pool(job.workers) as pool:
                parts = list(pool.imap_unordered(_match_part, _parts(job)))
    finally:
        _FORKED = None
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    matches, retagged = Matches(), Counter[str]()
    tallies: dict[int, _FileTally] = {}
    for numbers, part_tallies, part_matches, part_retagged in parts:
        matches.add(part_matches)
        retagged.update(part_retagged)
        tallies.update(zip(numbers, part_tallies))
    ordered = [tallies[n] for n in sorted(tallies)]
    failures: list[tuple[str, str]] = [(p.where, p.reason) for p in ruleset.problems]
    found = _findings(router.rules, matches, failures, job.workers)
    if job.models:  # the detectors read the documents again (a second pass: matching keeps none)
        docs = [dict(doc) for _, doc in _Reader(replace(job, workers=1), now).documents()]
        scored, problems = anomaly_findings(list(job.models), list(job.rule_paths), docs, job.agency, job.timezone)
        found = [*found, *scored]
        failures += problems
    incidents = [Incident(id=f.incident_id, finding=f, created=now) for f in found]
    passed = [f"{len(job.passed_over)} files of the folders and patterns given were not read; first: "
              f"{job.passed_over[0][0]}: {job.passed_over[0][1]}"] if job.passed_over else []
    return summary(incidents, len(ruleset.rules), failures, now,
                   (*_notes(ordered, retagged, job.agency), *passed, *unmapped_note(ruleset), *cache_notes),
                   tuple(t.report() for t in ordered))


def anomaly_findings(model_files: list[Path], rule_paths: list[Path], docs: list[dict[str, Any]], agency: str,
                     timezone: str) -> tuple[list[Finding], list[tuple[str, str]]]:
    """Score the documents' windows with exported models (checked as when read from Elasticsearch)."""
    from secmon.detect.anomaly import fit
    from secmon.detect.anomaly.detector import load_detectors
    from secmon.detect.anomaly.explain import explain
    from secmon.detect.anomaly.features import in_process
    from secmon.detect.anomaly.trained import from_doc

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
        rows = list(in_process(detector, docs, timezone, agency=agency))
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
