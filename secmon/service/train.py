"""The anomaly flows: train detectors' models, score windows (for `scan` and `secmon model score`),
explain one window, and retrain on schedule. Wiring only: features are composed in
`detect/anomaly` (pure), executed by `store/` (composite aggregations, model documents).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secmon.config import Settings
from secmon.detect.anomaly import features, fit
from secmon.detect.anomaly.detector import Detector, DetectorSet, load_detectors
from secmon.detect.anomaly.explain import explain as explain_window
from secmon.detect.anomaly.templates import Templates
from secmon.detect.anomaly.trained import CENTRE, ModelRefused, TrainedModel, from_doc, model_id, to_doc
from secmon.errors import InputError, SecmonError, StoreUnavailable
from secmon.incidents import records
from secmon.model import Explanation, Finding, ScanWindow
from secmon.service.common import audit, actor, indices_of
from secmon.store import models as stored
from secmon.store.aggregate import composite_buckets
from secmon.store.client import reporting
from secmon.store.indices import Indices
from secmon.store.search import sorted_matches
from secmon.types import DEFAULT_TIMEZONE, iso

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

MAX_TRAIN_WINDOWS = 200_000  # more baseline windows than this are thinned (every k-th), and it is said
MAX_SAMPLED = 200  # anomalous windows per scan whose sample events are looked up
SAMPLE_EVENTS = 10
TEMPLATE_ROUNDS = 3


def detectors_of(settings: Settings, paths: Sequence[Path] = (), files: bool = True) -> DetectorSet:
    """The detectors of `paths` (default: the `anomaly/` folders of the config's rule folders)."""
    return load_detectors(list(paths) or [settings.resolve(p) for p in settings.rules], files)


def _timezone(settings: Settings, agency: str) -> str:
    return next((a.timezone for a in settings.agencies if a.id == agency), DEFAULT_TIMEZONE)


def _file_sha256(detector: Detector) -> str:
    try:
        return hashlib.sha256(Path(detector.path).read_bytes()).hexdigest()
    except OSError:
        return ""


# --- features from the cluster -------------------------------------------------------------

def window_stats(es: Elasticsearch, indices: Indices, detector: Detector, agency: str, tz: str, start: datetime,
                 end: datetime) -> list[features.WindowStats]:
    """The detector's entity-windows of one agency in [start, end), computed by Elasticsearch
    (template detectors: in-process over the events' text, the one thing an aggregation cannot do)."""
    if detector.templates:
        return _template_stats(es, indices, detector, agency, tz, features.events_query(detector, agency, start, end))
    rows = []
    for low, high in features.slices(detector, start, end):
        buckets = composite_buckets(es, indices.events_pattern(agency), features.events_query(detector, agency, low, high),
                                    lambda after, page: features.aggregation(detector, tz, after, page))
        rows += [features.parse_bucket(detector, agency, b, tz) for b in buckets]
    return rows


def _template_stats(es: Elasticsearch, indices: Indices, detector: Detector, agency: str, tz: str,
                    query: dict[str, Any]) -> list[features.WindowStats]:
    ident = f"templates:{detector.id}"
    for _ in range(TEMPLATE_ROUNDS):  # another process added templates meanwhile: again with its state
        found = stored.get(es, indices, ident)
        miner = Templates(found[0].get("state") if found else None)
        hits = sorted_matches(es, indices.events_pattern(agency), query, detector.fields)
        rows = list(features.in_process(detector, (_flat(h) for h in hits), tz, agency=agency,
                                        template_of=miner.of(detector.templates)))
        if not miner.changed:
            return rows
        doc = {"@timestamp": iso(datetime.now(timezone.utc)), "kind": "templates", "detector": detector.id,
               "state": miner.state()}
        if stored.put_if(es, indices, ident, doc, found[1] if found else None):
            return rows
    raise StoreUnavailable(f"detector {detector.id}: the log-template state kept changing under us "
                      f"({TEMPLATE_ROUNDS} rounds)", hint="run again")


def _flat(hit: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = dict(hit.get("fields") or {})
    doc["organization.id"] = doc.get("organization.id", [])
    return doc


# --- feedback: windows analysts closed -----------------------------------------------------

def closed_windows(es: Elasticsearch, indices: Indices, detector: Detector) -> list[tuple[str, str, datetime, datetime]]:
    """(agency, entity, start, end) of the detector's incidents closed as benign, false or true positive:
    none of them is what normal looks like, so they stay out of the next baseline."""
    query = {"bool": {"filter": [{"term": {"secmon.detector": "anomaly"}}, {"term": {"rule.id": detector.id}},
                                 {"term": {"secmon.status": "closed"}}]}}
    with reporting(es, "read closed anomaly incidents"):
        response = es.search(index=indices.incidents, query=query, size=10_000, ignore_unavailable=True,
                             allow_no_indices=True)
    out = []
    for hit in response["hits"]["hits"]:
        state = records.from_doc(hit["_id"], hit["_source"])
        finding = state.incident.finding
        for name, value in finding.group:
            if name == detector.entity:
                out += [(finding.agency, value, b.start, b.end) for b in state.bursts]
    return out


def _excluded(row: features.WindowStats, detector: Detector, closed: list[tuple[str, str, datetime, datetime]]
              ) -> bool:
    end = row.start + detector.window
    return any(agency == row.agency and entity == row.entity and start < end and row.start <= stop
               for agency, entity, start, stop in closed)


# --- training ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trained:
    detector: str
    agency: str  # an agency id or "*" (centre-wide)
    outcome: str  # trained | skipped | failed
    reason: str = ""
    windows: int = 0
    entities: int = 0
    excluded: int = 0
    threshold: float = 0.0


@dataclass(frozen=True)
class TrainReport:
    results: tuple[Trained, ...]
    problems: tuple[tuple[str, str], ...]  # (file:line, reason) of detectors that did not load
    start: datetime | None = None
    end: datetime | None = None

    @property
    def failed(self) -> bool:
        return bool(self.problems) or any(r.outcome == "failed" for r in self.results)


def train(es: Elasticsearch, settings: Settings, now: datetime, detector_ids: Sequence[str] = (),
          agency: str | None = None, start: datetime | None = None, end: datetime | None = None,
          paths: Sequence[Path] = (), trigger: str = "cli") -> TrainReport:
    """Train the detectors' models over their baseline (or [start, end)): one per agency with enough
    data, and a centre-wide one that agencies with too little fall back to. Audited with `trigger`
    (cli, scheduler)."""
    indices = indices_of(settings)
    loaded = detectors_of(settings, paths)
    chosen = [loaded.get(i) for i in detector_ids] if detector_ids else list(loaded.detectors)
    agencies = [settings.agency(agency).id] if agency else [a.id for a in settings.agencies]
    results: list[Trained] = []
    for detector in chosen:
        to = end or now
        since = start or to - detector.baseline
        try:
            results += _train_detector(es, settings, indices, detector, agencies, since, to, now)
        except SecmonError as exc:  # one failing detector never stops the others
            results.append(Trained(detector.id, agency or CENTRE, "failed", str(exc)))
    report = TrainReport(tuple(results), tuple((p.where, p.reason) for p in loaded.problems), start, end)
    audit(es, indices, "model-train", "failure" if report.failed else "success", now,
          {"models": [f"{r.detector}:{r.agency}:{r.outcome}" for r in results], "trigger": trigger},
          user=actor(settings))
    return report


def _train_detector(es: Elasticsearch, settings: Settings, indices: Indices, detector: Detector,
                    agencies: list[str], start: datetime, end: datetime, now: datetime) -> list[Trained]:
    closed = closed_windows(es, indices, detector)
    pooled: list[features.WindowStats] = []
    results: list[Trained] = []
    excluded_total = 0
    for agency in agencies:
        rows = window_stats(es, indices, detector, agency, _timezone(settings, agency), start, end)
        kept = [r for r in rows if not _excluded(r, detector, closed)]
        excluded_total += len(rows) - len(kept)
        pooled += kept
        if detector.scope != "agency":
            continue
        missing = fit.shortfall(detector, kept)
        if missing:
            results.append(Trained(detector.id, agency, "skipped", f"{missing}: the centre-wide model is used",
                                   len(kept), len({r.entity for r in kept}), len(rows) - len(kept)))
            continue
        results.append(_fit_and_store(es, indices, detector, agency, kept, start, end, now, len(rows) - len(kept)))
    try:
        results.append(_fit_and_store(es, indices, detector, CENTRE, pooled, start, end, now, excluded_total))
    except fit.NotEnoughData as exc:
        results.append(Trained(detector.id, CENTRE, "skipped", exc.message, len(pooled),
                               len({(r.agency, r.entity) for r in pooled}), excluded_total))
    return results


def _fit_and_store(es: Elasticsearch, indices: Indices, detector: Detector, agency: str,
                   rows: list[features.WindowStats], start: datetime, end: datetime, now: datetime,
                   excluded: int) -> Trained:
    thinned = rows if len(rows) <= MAX_TRAIN_WINDOWS else rows[:: len(rows) // MAX_TRAIN_WINDOWS + 1]
    model = fit.build(detector, agency, thinned, start, end, now, excluded=excluded,
                      detector_sha256=_file_sha256(detector))
    stored.put(es, indices, model.id, to_doc(model))
    reason = f"baseline thinned from {len(rows)} to {len(thinned)} windows" if thinned is not rows else ""
    return Trained(detector.id, agency, "trained", reason, model.windows, model.entities, excluded, model.threshold)


def retrain(es: Elasticsearch, settings: Settings, now: datetime) -> TrainReport:
    """The scheduler's job (every `schedule.retrain_interval`): every detector over its baseline up to now."""
    return train(es, settings, now, trigger="scheduler")


# --- scoring -------------------------------------------------------------------------------

def load_models(es: Elasticsearch, indices: Indices, detectors: Sequence[Detector], agencies: Sequence[str]
                ) -> tuple[dict[str, TrainedModel], list[tuple[str, str]]]:
    """The stored models of these detectors; refused ones are (model id, reason) problems."""
    ids = [model_id(d.id, a) for d in detectors for a in (*agencies, CENTRE)]
    docs = stored.get_many(es, indices, ids)
    loaded: dict[str, TrainedModel] = {}
    refused: list[tuple[str, str]] = []
    for ident, doc in docs.items():
        try:
            loaded[ident] = from_doc(doc, ident)
        except ModelRefused as exc:
            refused.append((ident, str(exc)))
    return loaded, refused


def pick(models: dict[str, TrainedModel], detector: Detector, agency: str) -> TrainedModel | None:
    own = models.get(model_id(detector.id, agency)) if detector.scope == "agency" else None
    return own or models.get(model_id(detector.id, CENTRE))


def complete_windows(detector: Detector, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """[first, last) covering the detector's windows that end in (start, end]: each window is scored
    once, when complete, by the scan whose range contains its end."""
    size = detector.window
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)

    def down(moment: datetime) -> datetime:
        return epoch + ((moment - epoch) // size) * size

    first = down(start - size) + size
    last = down(end - size)
    return (first, last + size) if first <= last else None


@dataclass(frozen=True)
class AnomalyRun:
    findings: tuple[Finding, ...] = ()
    failures: tuple[tuple[str, str], ...] = ()  # (detector or file:line, reason)
    notes: tuple[str, ...] = ()
    scored: int = 0  # entity-windows scored


def score_scan(es: Elasticsearch, settings: Settings, paths: Sequence[Path], window: ScanWindow) -> AnomalyRun:
    """Score the complete windows a scan covers with every detector that has a model; anomalous
    windows become findings (detector "anomaly") with their explanation."""
    indices = indices_of(settings)
    loaded = detectors_of(settings, paths, files=False)
    failures = [(p.where, p.reason) for p in loaded.problems]
    if not loaded.detectors:
        return AnomalyRun(failures=tuple(failures))
    agencies = [a.id for a in settings.agencies]
    models, refused = load_models(es, indices, loaded.detectors, agencies)
    failures += refused
    start, end = window.start, window.end
    if window.field == "event.ingested" and models:  # no model, nothing to score: spare the search
        # The windows holding events ingested in the chunk (late ones too), and the windows that ended
        # while it was ingested: one whose activity stopped before its end is complete only now.
        span = _event_span(es, indices, window)
        if span is not None:
            start = min(span[0], window.start)
    findings: list[Finding] = []
    untrained: list[str] = []
    scored = 0
    for detector in loaded.detectors:
        for agency in agencies:
            model = pick(models, detector, agency)
            if model is None:
                untrained.append(f"{detector.id}:{agency}")
                continue
            bounds = complete_windows(detector, start, end)
            if bounds is None:
                continue
            try:
                rows = window_stats(es, indices, detector, agency, _timezone(settings, agency), *bounds)
                results = fit.score(model, detector, rows)
            except SecmonError as exc:  # one failing detector never stops the rules or the other detectors
                failures.append((detector.id, str(exc)))
                break
            scored += len(results)
            findings += [_finding(detector, model, r) for r in results if r.anomalous(model.threshold)]
    findings = _with_samples(es, indices, loaded, findings)
    notes = []
    if untrained:
        notes.append(f"{len(untrained)} detector/agency pairs have no model yet (secmon model train): "
                     + ", ".join(untrained[:8]) + (" ..." if len(untrained) > 8 else ""))
    return AnomalyRun(tuple(findings), tuple(failures), tuple(notes), scored)


def _finding(detector: Detector, model: TrainedModel, scored: fit.ScoredWindow) -> Finding:
    row = scored.row
    return Finding(rule_id=detector.id, rule_title=detector.title, severity=detector.severity, agency=row.agency,
                   group=((detector.entity, row.entity),), first_seen=row.first, last_seen=row.last,
                   count=row.count, tags=detector.tags, description=detector.description,
                   translations=detector.translations, detector="anomaly",
                   explanation=explain_window(model, detector, scored))


def _with_samples(es: Elasticsearch, indices: Indices, loaded: DetectorSet, findings: list[Finding]
                  ) -> list[Finding]:
    """A few of each anomalous window's events, for `incidents show` (at most MAX_SAMPLED windows)."""
    out = []
    for i, finding in enumerate(findings):
        if i >= MAX_SAMPLED:
            out.append(finding)
            continue
        detector = loaded.get(finding.rule_id)
        query = features.events_query(detector, finding.agency, finding.first_seen,
                                      finding.last_seen + timedelta(milliseconds=1))
        query["bool"]["filter"].append({"term": {detector.entity: finding.group[0][1]}})
        with reporting(es, "read an anomalous window's events"):
            response = es.search(index=indices.events_pattern(finding.agency), query=query, size=SAMPLE_EVENTS,
                                 sort=[{"@timestamp": "asc"}], source=False, ignore_unavailable=True,
                                 allow_no_indices=True)
        out.append(replace(finding, sample_event_ids=tuple(h["_id"] for h in response["hits"]["hits"])))
    return out


def _event_span(es: Elasticsearch, indices: Indices, window: ScanWindow) -> tuple[datetime, datetime] | None:
    query = {"range": {window.field: {"gte": iso(window.start), "lt": iso(window.end)}}}
    with reporting(es, "find the events ingested in the window"):
        response = es.search(index=indices.events_pattern(), size=0, query=query, ignore_unavailable=True,
                             allow_no_indices=True, aggs={"first": {"min": {"field": "@timestamp"}},
                                                          "last": {"max": {"field": "@timestamp"}}})
    aggs = response.get("aggregations") or {}
    if not aggs or aggs["first"].get("value") is None:
        return None
    return (datetime.fromtimestamp(aggs["first"]["value"] / 1000, timezone.utc),
            datetime.fromtimestamp(aggs["last"]["value"] / 1000, timezone.utc))


# --- analysts: score a period, explain a window, look at models ------------------------------

@dataclass(frozen=True)
class Ranked:
    model: TrainedModel
    detector: Detector
    windows: tuple[fit.ScoredWindow, ...]  # most anomalous first


def score_period(es: Elasticsearch, settings: Settings, detector_id: str, agency: str, start: datetime,
                 end: datetime, paths: Sequence[Path] = ()) -> Ranked:
    """Every entity-window of [start, end), scored (nothing is raised): what `secmon model score` prints."""
    indices = indices_of(settings)
    detector = detectors_of(settings, paths).get(detector_id)
    settings.agency(agency)
    models, refused = load_models(es, indices, [detector], [agency])
    if refused:
        raise ModelRefused(refused[0][1])
    model = pick(models, detector, agency)
    if model is None:
        raise InputError(f"detector {detector_id} has no model for agency {agency}",
                          hint=f"train it first: secmon model train {detector_id}")
    rows = window_stats(es, indices, detector, agency, _timezone(settings, agency), start, end)
    ranked = sorted(fit.score(model, detector, rows), key=lambda s: -s.score)
    return Ranked(model, detector, tuple(ranked))


def explain(es: Elasticsearch, settings: Settings, detector_id: str, agency: str, entity: str, at: datetime,
            paths: Sequence[Path] = ()) -> tuple[Ranked, Explanation]:
    """The window of `entity` containing `at`, scored and explained whatever its score."""
    detector = detectors_of(settings, paths).get(detector_id)
    size = detector.window
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    start = epoch + ((at - epoch) // size) * size
    ranked = score_period(es, settings, detector_id, agency, start, start + size, paths)
    match = [w for w in ranked.windows if w.row.entity == entity]
    if not match:
        raise InputError(f"no events of {detector.entity}={entity!r} for detector {detector_id} in the window "
                          f"{iso(start)} .. {iso(start + size)}")
    return ranked, explain_window(ranked.model, detector, match[0])


def model_list(es: Elasticsearch, settings: Settings) -> list[dict[str, Any]]:
    return stored.search(es, indices_of(settings))


def model_show(es: Elasticsearch, settings: Settings, ident: str) -> TrainedModel:
    found = stored.get(es, indices_of(settings), ident)
    if found is None:
        raise InputError(f"no model {ident!r}", hint="secmon model list shows the stored ones (detector:agency)")
    return from_doc(found[0], ident)



def model_export(es: Elasticsearch, settings: Settings, ident: str) -> dict[str, Any]:
    """The stored document, after the same checks a scan makes (a refused model is not exported)."""
    found = stored.get(es, indices_of(settings), ident)
    if found is None:
        raise InputError(f"no model {ident!r}", hint="secmon model list shows the stored ones (detector:agency)")
    from_doc(found[0], ident)
    return found[0]
