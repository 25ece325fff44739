"""Detector files (`rules/anomaly/*.yml`) -> frozen `Detector`s, validated with file:line:column errors.

A detector says which events it looks at (a filter over ECS fields), whose behaviour (the entity:
`source.ip`, `user.name`, a session key...), over which window (1h), and which numbers describe one
entity-window (its features). Loading collects every problem of every file instead of stopping at the
first: one broken detector never stops the others, nor the rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from secmon.errors import InputError
from secmon.model import Severity
from secmon.types import parse_duration
from secmon.validation import Problems
from secmon.yamlio import Located, load_file

KINDS = ("count", "ratio", "distinct", "sum", "avg", "max", "off_hours", "by", "new", "rare", "shape")
MEASURES = ("length", "entropy", "nonalnum")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TEMPLATE_FIELD = "template"  # the derived field a `templates:` detector gives each event (a Drain3 template id)
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_TOP = {"id", "title", "description", "vi", "severity", "tags", "events", "entity", "window", "baseline",
        "min_windows", "min_entities", "scope", "threshold", "templates", "working_hours", "features"}
_FEATURE_KEYS = {"name", "kind", "where", "of", "field", "top", "per", "limit", "below", "measure", "stat",
                 "direction"}
DIRECTIONS = ("high", "low", "both")
TWO_SIDED = ("ratio", "avg", "off_hours", "by")  # kinds whose unusual values may be low as well as high
_NEEDS_FIELD = ("distinct", "sum", "avg", "max", "by", "new", "rare", "shape")

Condition = tuple[tuple[str, tuple[str, ...]], ...]  # (field, allowed values): every field must hold one
RANGE = re.compile(r"^(-?\d+(?:\.\d+)?)\.\.(-?\d+(?:\.\d+)?)$")  # an allowed value "400..499": a number range
PAIR = " > "  # how the values of a two-field feature (parent > child) are joined


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # one of KINDS
    where: Condition = ()  # count: the events counted; ratio: the numerator
    of: Condition = ()  # ratio: the denominator (empty: every event of the window)
    field: str = ""
    also: str = ""  # by/new/rare given two fields: the second (values are "first > second")
    top: int = 20  # by: vocabulary size learned at training
    per: str = "population"  # new: values never seen for this entity, or never seen at all
    limit: int = 100  # by/new/rare/shape: distinct values read per window (the most frequent)
    below: float = 0.01  # rare: values seen in fewer than this share of the baseline windows
    measure: str = "length"  # shape: of each value
    stat: str = "mean"  # shape: mean over the window's events, or max
    # which unusual values count: high (more failures than usual; fewer is not suspicious), low, or both
    direction: str = "high"


@dataclass(frozen=True)
class WorkingHours:
    start: int = 8  # local hour the working day starts
    end: int = 18  # local hour it ends (exclusive)
    days: tuple[int, ...] = (0, 1, 2, 3, 4)  # Monday = 0


@dataclass(frozen=True)
class Detector:
    id: str
    title: str
    description: str
    severity: Severity
    tags: tuple[str, ...]
    events: Condition  # which events the detector looks at
    entity: str
    window: timedelta
    features: tuple[Feature, ...]
    path: str
    line: int = 1
    baseline: timedelta = timedelta(days=30)  # how far back `secmon model train` looks by default
    min_windows: int = 30
    min_entities: int = 3
    scope: str = "agency"  # agency: a model per agency (centre-wide fallback); centre: one model for all
    threshold: float = 0.995  # the quantile of the baseline windows' scores above which a window is anomalous
    templates: str = ""  # field whose free text Drain3 turns into template ids (the derived field `template`)
    working_hours: WorkingHours = WorkingHours()
    translations: tuple[tuple[str, str, str], ...] = ()  # (language, title, description)

    @property
    def fields(self) -> tuple[str, ...]:
        """Every event field the features and the filter read (the derived `template` excluded)."""
        names = [self.entity, *(f for f, _ in self.events)]
        for feature in self.features:
            names += [f for f, _ in feature.where] + [f for f, _ in feature.of]
            if feature.field and feature.field != TEMPLATE_FIELD:
                names.append(feature.field)
            if feature.also:
                names.append(feature.also)
        if self.templates:
            names.append(self.templates)
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class DetectorProblem:
    where: str  # file:line:column
    reason: str


@dataclass(frozen=True)
class DetectorSet:
    detectors: tuple[Detector, ...]
    problems: tuple[DetectorProblem, ...]

    def get(self, ident: str) -> Detector:
        for detector in self.detectors:
            if detector.id == ident:
                return detector
        broken = [p for p in self.problems if ident in p.where]
        known = ", ".join(d.id for d in self.detectors) or "none loaded"
        raise InputError(f"no detector {ident!r}" + (f" ({broken[0].where}: {broken[0].reason})" if broken else ""),
                         hint=f"detectors: {known}")


def detector_files(root: Path, files: bool = True) -> list[Path]:
    """A rules folder's `anomaly/` detectors, a detectors folder, or one file (`files`: any file; else
    only one in an `anomaly/` folder, so that a scan given one Sigma rule file loads no detector)."""
    if root.is_file():
        return [root] if files or root.parent.name == "anomaly" else []
    folder = root / "anomaly" if (root / "anomaly").is_dir() else root
    if folder == root and root.name != "anomaly":
        return []  # a rules folder without detectors
    return sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])


def load_detectors(paths: list[Path], files: bool = True) -> DetectorSet:
    detectors: list[Detector] = []
    problems: list[DetectorProblem] = []
    seen: dict[str, str] = {}
    for root in paths:
        if not root.exists():
            problems.append(DetectorProblem(str(root), "no such file or folder"))
            continue
        for path in detector_files(root, files):
            detector, found = load_detector_file(path)
            problems += found
            if detector is None:
                continue
            if detector.id in seen:
                problems.append(DetectorProblem(f"{path}:{detector.line}", f"detector id {detector.id!r} is also "
                                                                          f"used by {seen[detector.id]}"))
                continue
            seen[detector.id] = str(path)
            detectors.append(detector)
    return DetectorSet(tuple(detectors), tuple(problems))


def load_detector_file(path: Path) -> tuple[Detector | None, list[DetectorProblem]]:
    """One detector, or None and every problem found in it."""
    try:
        doc = load_file(path)
    except InputError as exc:
        return None, [DetectorProblem(str(exc.location or path), exc.message)]
    check = _Checker(doc)
    detector = check.detector(path)
    problems = sorted(check.problems, key=lambda p: [int(n) if n.isdigit() else 0 for n in p.where.split(":")[-2:]])
    return (detector if not problems else None), problems


class _Checker:
    """Reads one detector document, noting every problem with its position (secmon.validation, as
    for secmon.yml and pipelines); a broken detector is reported and the others load."""

    def __init__(self, doc: Located):
        self.doc = doc
        self.found = Problems(doc)

    @property
    def problems(self) -> list[DetectorProblem]:
        return [DetectorProblem(str(p.location), p.message) for p in self.found.found]

    def fail(self, at: tuple[str | int, ...], reason: str) -> None:
        self.found.add(reason, *at)

    def detector(self, path: Path) -> Detector | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self.fail((), "a detector file is a mapping with id, title, events, entity, window and features")
            return None
        for key in data:
            if key not in _TOP:
                self.fail((key,), f"unknown key {key!r} (allowed: {', '.join(sorted(_TOP))})")
        ident = self.text(data, "id", required=True)
        if ident and not _ID.match(ident):
            self.fail(("id",), f"id {ident!r} must be lower-case letters, digits and '-' (it names models)")
        elif ident and path.stem != ident:
            self.fail(("id",), f"id {ident!r} differs from the file name {path.name!r} (file name = id)")
        severity = self.text(data, "severity") or "medium"
        if severity not in {s.value for s in Severity}:
            self.fail(("severity",), f"severity {severity!r} is not one of {', '.join(s.value for s in Severity)}")
            severity = "medium"
        features = self.features(data.get("features"))
        templates = self.text(data, "templates")
        if any(f.field == TEMPLATE_FIELD for f in features) and not templates:
            self.fail(("features",), f"a feature reads the field {TEMPLATE_FIELD!r}, but the detector names no "
                                     "`templates:` field to mine templates from")
        scope = self.text(data, "scope") or "agency"
        if scope not in ("agency", "centre"):
            self.fail(("scope",), f"scope {scope!r} is not 'agency' or 'centre'")
        threshold = data.get("threshold", 0.995)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.5 <= threshold < 1:
            self.fail(("threshold",), f"threshold {threshold!r} must be a quantile in [0.5, 1), e.g. 0.995")
            threshold = 0.995
        return Detector(
            id=ident, title=self.text(data, "title", required=True), description=self.text(data, "description"),
            severity=Severity(severity), tags=self.strings(data, "tags"), events=self.condition(data, ("events",)),
            entity=self.text(data, "entity", required=True), window=self.duration(data, "window", "1h"),
            features=features, path=str(path), line=self.doc.loc().line or 1,
            baseline=self.duration(data, "baseline", "30d"), min_windows=self.count(data, "min_windows", 30),
            min_entities=self.count(data, "min_entities", 3), scope=scope, threshold=float(threshold),
            templates=templates, working_hours=self.hours(data.get("working_hours")),
            translations=self.translations(data))

    # --- pieces ----------------------------------------------------------------------------

    def text(self, data: Mapping[str, Any], key: str, required: bool = False) -> str:
        value = data.get(key)
        if value is None:
            if required:
                self.fail((), f"missing required key {key!r}")
            return ""
        if not isinstance(value, str) or not value.strip():
            self.fail((key,), f"{key} must be a non-empty string, found {value!r}")
            return ""
        return value.strip()

    def strings(self, data: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail((key,), f"{key} must be a list of strings")
            return ()
        return tuple(value)

    def duration(self, data: Mapping[str, Any], key: str, default: str) -> timedelta:
        try:
            value = parse_duration(str(data.get(key, default)))
        except ValueError as exc:
            self.fail((key,), f"{key}: {exc}")
            return parse_duration(default)
        if value < timedelta(minutes=1):
            self.fail((key,), f"{key} must be at least 1m")
        return value

    def count(self, data: Mapping[str, Any], key: str, default: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail((key,), f"{key} must be a positive integer, found {value!r}")
            return default
        return value

    def condition(self, data: Mapping[str, Any], at: tuple[str | int, ...], required: bool = True) -> Condition:
        """`data[at[-1]]` as a condition; `at` is its full key path (for positions)."""
        value = data.get(str(at[-1])) if isinstance(data, Mapping) else None
        if value is None:
            if required:
                self.fail(at[:-1], f"missing required key {at[-1]!r} (a mapping of ECS field: value or [values])")
            return ()
        if not isinstance(value, dict) or not value:
            self.fail(at, "expected a mapping of ECS field: value or [values], e.g. {event.outcome: failure}")
            return ()
        out = []
        for field, allowed in value.items():
            values = allowed if isinstance(allowed, list) else [allowed]
            if not values or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
                self.fail(at + (field,), f"{field}: expected a value or a list of values, found {allowed!r}")
                continue
            out.append((str(field), tuple(str(v) for v in values)))
        return tuple(out)

    def features(self, value: Any) -> tuple[Feature, ...]:
        if not isinstance(value, list) or not value:
            self.fail(("features",) if value is not None else (), "features must be a non-empty list")
            return ()
        out: list[Feature] = []
        names: set[str] = set()
        for i, item in enumerate(value):
            at: tuple[str | int, ...] = ("features", i)
            if not isinstance(item, dict):
                self.fail(at, "a feature is a mapping with name and kind")
                continue
            for key in item:
                if key not in _FEATURE_KEYS:
                    self.fail(at + (key,), f"unknown feature key {key!r} (allowed: {', '.join(sorted(_FEATURE_KEYS))})")
            name, kind = item.get("name"), item.get("kind")
            if not isinstance(name, str) or not _NAME.match(name):
                self.fail(at, f"feature name {name!r} must be lower_case_with_underscores")
                continue
            if name in names:
                self.fail(at + ("name",), f"feature name {name!r} appears twice")
            names.add(name)
            if kind not in KINDS:
                self.fail(at + ("kind",), f"feature {name}: kind {kind!r} is not one of {', '.join(KINDS)}")
                continue
            feature = self.feature(item, at, name, kind)
            if feature is not None:
                out.append(feature)
        return tuple(out)

    def feature(self, item: dict[str, Any], at: tuple[str | int, ...], name: str, kind: str) -> Feature | None:
        before = len(self.problems)
        field, also = item.get("field", ""), ""
        if isinstance(field, list) and kind in ("by", "new", "rare"):
            if len(field) != 2 or not all(isinstance(f, str) and f for f in field):
                self.fail(at + ("field",), f"feature {name}: a field pair is a list of two fields")
                field = ""
            else:
                field, also = field
        if kind in _NEEDS_FIELD and (not isinstance(field, str) or not field):
            self.fail(at, f"feature {name}: kind {kind} needs a `field`")
        where = self.condition(item, at + ("where",), required=kind == "ratio") if "where" in item or \
            kind == "ratio" else ()
        of = self.condition(item, at + ("of",), required=False) if "of" in item else ()
        per = item.get("per", "population")
        if per not in ("population", "entity"):
            self.fail(at + ("per",), f"feature {name}: per {per!r} is not 'population' or 'entity'")
        measure, stat = item.get("measure", "length"), item.get("stat", "mean")
        if kind == "shape" and measure not in MEASURES:
            self.fail(at + ("measure",), f"feature {name}: measure {measure!r} is not one of {', '.join(MEASURES)}")
        if kind == "shape" and stat not in ("mean", "max"):
            self.fail(at + ("stat",), f"feature {name}: stat {stat!r} is not 'mean' or 'max'")
        top, limit, below = item.get("top", 20), item.get("limit", 100), item.get("below", 0.01)
        for key, number, low, high in (("top", top, 1, 200), ("limit", limit, 1, 1000)):
            if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
                self.fail(at + (key,), f"feature {name}: {key} must be an integer from {low} to {high}")
        if isinstance(below, bool) or not isinstance(below, (int, float)) or not 0 < below <= 0.2:
            self.fail(at + ("below",), f"feature {name}: below must be a share in (0, 0.2]")
        direction = item.get("direction", "both" if kind in TWO_SIDED else "high")
        if direction not in DIRECTIONS:
            self.fail(at + ("direction",), f"feature {name}: direction {direction!r} is not one of "
                                           f"{', '.join(DIRECTIONS)}")
        if len(self.problems) > before:
            return None
        return Feature(name=name, kind=kind, where=where, of=of, field=field, also=also, top=top, per=per, limit=limit,
                       below=float(below), measure=measure, stat=stat, direction=direction)

    def hours(self, value: Any) -> WorkingHours:
        if value is None:
            return WorkingHours()
        if not isinstance(value, dict):
            self.fail(("working_hours",), "working_hours is a mapping {start: 8, end: 18, days: [mon, ...]}")
            return WorkingHours()
        start, end = value.get("start", 8), value.get("end", 18)
        days = value.get("days", list(DAYS[:5]))
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= 24):
            self.fail(("working_hours",), "working_hours start and end are hours with 0 <= start < end <= 24")
            return WorkingHours()
        if not isinstance(days, list) or any(d not in DAYS for d in days):
            self.fail(("working_hours", "days"), f"days are among {', '.join(DAYS)}")
            return WorkingHours()
        return WorkingHours(start, end, tuple(DAYS.index(d) for d in days))

    def translations(self, data: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
        vi = data.get("vi")
        if vi is None:
            return ()
        if not isinstance(vi, dict) or not isinstance(vi.get("title"), str):
            self.fail(("vi",), "vi is a mapping with a title and a description in Vietnamese")
            return ()
        return (("vi", vi["title"].strip(), str(vi.get("description", "")).strip()),)
