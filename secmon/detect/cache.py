"""Compiled rules kept between runs, so an offline scan over thousands of rules starts at once.

Reading and compiling the community corpus (3,750 Sigma files: YAML, pySigma, our compiler,
the router's literals) takes about ten seconds; the result depends only on the files' bytes
and on the code and tables that compile them. `RuleCache` stores, per rule file, its compiled
rules, its problems and what the router reads from each query (inprocess/router.py, RuleIndex), under a
key made of:

- the file's path and the SHA-256 of its content (a rule edited in place is compiled again); a file
  whose size, mtime, ctime and inode are those recorded with its entry is not read again (as git's
  index decides), one whose signature moved is hashed once and compiled only if its bytes changed;
- `fingerprint()`: secmon's version, pySigma's, Python's, and the SHA-256 of every source and
  data file that compiles a rule (secmon/detect/**/*.py and *.yml: the compiler, the field and
  logsource mappings, the field types; yamlio, types and model). Any change to them is a new
  fingerprint, hence a new cache file: nothing compiled by other code is ever reused.

The format is JSON, read with `json.loads` into plain data and rebuilt field by field into the
frozen dataclasses: loading a cache file runs no code from it (unlike pickle), so a file planted
in the cache folder can at worst make rules wrong, not run a program; a file that does not
decode as this format is ignored with a warning and rewritten. The folder is the user's own
(`~/.cache/secmon`, `$XDG_CACHE_HOME/secmon` or `$SECMON_CACHE_DIR`), created 0700; a file
there that another user could have written (not ours, or group/world-writable) is not read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

import secmon
from secmon.detect.compiled import CompiledRule, RuleProblem, RuleSet, UnmappedPolicy, gather
from secmon.detect.windowing.correlate import Correlation, Leaf
from secmon.detect.sigma.lucene_regexp import TRANSLATED
from secmon.detect.inprocess.router import RouteKey, RuleIndex, rule_index
from secmon.model import Severity

log = logging.getLogger(__name__)

FORMAT = 3  # of the cache file; part of the fingerprint


def default_folder() -> Path:
    """$SECMON_CACHE_DIR, else $XDG_CACHE_HOME/secmon, else ~/.cache/secmon."""
    given = os.environ.get("SECMON_CACHE_DIR")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "secmon"


def fingerprint() -> str:
    """What compiled rules depend on besides the rule files (see the module's docstring)."""
    digest = hashlib.sha256(f"format {FORMAT}\0secmon {secmon.__version__}\0python {sys.version_info[:2]}\0"
                            .encode())
    try:
        digest.update(f"pysigma {metadata.version('pysigma')}\0".encode())
    except metadata.PackageNotFoundError:
        digest.update(b"pysigma ?\0")
    package = Path(secmon.__file__).parent
    sources = sorted([*(package / "detect").rglob("*.py"), *(package / "detect").rglob("*.yml"),
                      package / "yamlio.py", package / "types.py", package / "model.py"])
    for path in sources:
        digest.update(str(path.relative_to(package)).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class RuleCache:
    """One cache file per (fingerprint, rule paths): `load_rules` answers what load.load_rules would,
    compiling only files that are new or changed since the file was written."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder if folder is not None else default_folder()
        self.hits = 0  # rule files taken from the cache
        self.misses = 0  # rule files compiled
        self.warnings: list[str] = []  # why a cache file was not used or not written
        self.indexes: dict[tuple[str, str], RuleIndex] = {}  # (path, rule id) -> what the router reads

    def load_rules(self, paths: list[Path], unmapped: UnmappedPolicy = "skip") -> RuleSet:
        key = hashlib.sha256((fingerprint() + "\0" + "\0".join(str(p.resolve()) for p in paths)).encode())
        target = self.folder / f"rules-{key.hexdigest()[:32]}.json"
        stored = self._read(target)
        fresh: dict[str, Any] = {}
        sources: list[Any] = []  # load.logsources(), read once, only when a file must be compiled

        def load_file(path: Path) -> RuleSet:
            from secmon.detect.filestamp import digest_of, signature

            seen = signature(path)
            found = stored.get(str(path))
            entry: list[Any] = found if isinstance(found, list) and len(found) == 3 and seen is not None else []
            digest = ""
            if entry and entry[2] != list(seen or ()):  # moved: read and hash it once
                digest = digest_of(path) or ""  # unreadable: load_rule_file says why
            if entry and (entry[2] == list(seen or ()) or (digest and entry[0] == digest)):
                try:
                    loaded = self._decode(entry[1])
                    fresh[str(path)] = [entry[0], entry[1], list(seen or ())]
                    self.hits += 1
                    return loaded
                except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                    self._warn(f"{target}: the entry of {path} is damaged ({type(exc).__name__}: {exc}); "
                               "compiled again")
            from secmon.detect.sigma.load import load_rule_file_once  # pySigma: only on a miss
            from secmon.detect.sigma.pipeline import logsources

            if not sources:
                sources.append(logsources())
            digest = digest or digest_of(path) or ""
            # a miss of the file; this process may know it
            loaded = load_rule_file_once(path, sources[0], digest or None)
            self.misses += 1
            entry = [digest, self._encode(loaded), list(seen) if seen is not None else []]
            try:  # a value JSON cannot hold (a YAML date in a `secmon:` section): that file is not kept
                json.dumps(entry, allow_nan=False)
            except (TypeError, ValueError):
                entry = []
            if digest and seen is not None and entry and signature(path) == seen:  # unchanged while compiled
                fresh[str(path)] = entry
            return loaded

        ruleset = gather(paths, unmapped, load_file)
        if fresh != stored:
            self._write(target, fresh)
        return ruleset

    def index_of(self, rule: CompiledRule) -> RuleIndex | None:
        return self.indexes.get((rule.path, rule.id))

    # --- the file ----------------------------------------------------------------------------

    def _warn(self, text: str) -> None:
        log.warning("rule cache: %s", text)
        self.warnings.append(text)

    def _read(self, target: Path) -> dict[str, Any]:
        try:
            with target.open("rb") as handle:
                info = os.fstat(handle.fileno())
                if info.st_uid != os.getuid() or info.st_mode & 0o022:
                    self._warn(f"{target} is not the user's own file (owner or mode): not read, compiled again")
                    return {}
                data = _loads(handle.read())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:  # unreadable, not JSON, not UTF-8
            self._warn(f"{target} cannot be read ({type(exc).__name__}: {str(exc)[:200]}): ignored, compiled again")
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
            self._warn(f"{target} is not a rule cache of this version: ignored, compiled again")
            return {}
        return data["files"]  # type: ignore[no-any-return]

    def _write(self, target: Path, files: dict[str, Any]) -> None:
        """Atomically (a reader sees the old file or the new one), in the user's own folder."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".rules-", suffix=".tmp")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump({"format": FORMAT, "files": files}, out, separators=(",", ":"), allow_nan=False)
                os.replace(temporary, target)
            except BaseException:
                os.unlink(temporary)
                raise
        except (OSError, TypeError, ValueError) as exc:  # a read-only home, a full disk, a value JSON lacks
            self._warn(f"cannot write {target} ({type(exc).__name__}: {str(exc)[:200]}): the next run compiles again")

    # --- compiled rules <-> plain data -------------------------------------------------------

    def _encode(self, ruleset: RuleSet) -> dict[str, Any]:
        rules = []
        for rule in ruleset.rules:
            index = rule_index(rule)
            self.indexes[(rule.path, rule.id)] = index
            rules.append({**_rule_data(rule), "route": None if index.route is None else sorted(index.route),
                          "needles": [sorted(group) for group in index.needles]})
        regexps = [[pattern, insensitive, TRANSLATED[(pattern, insensitive)]]
                   for rule in ruleset.rules for pattern, insensitive in _regexps(rule)
                   if (pattern, insensitive) in TRANSLATED]
        return {"rules": rules, "problems": [[p.where, p.reason] for p in ruleset.problems], "regexps": regexps}

    def _decode(self, data: Mapping[str, Any]) -> RuleSet:
        rules = []
        for item in data["rules"]:
            rule = _rule(item)
            route = item["route"]
            self.indexes[(rule.path, rule.id)] = RuleIndex(
                None if route is None else frozenset(_route_key(k) for k in route),
                [frozenset(map(tuple, group)) for group in item["needles"]])
            rules.append(rule)
        for pattern, insensitive, source in data["regexps"]:  # their translation, made when they compiled
            TRANSLATED[(str(pattern), bool(insensitive))] = str(source)
        return RuleSet(tuple(rules), tuple(RuleProblem(str(w), str(r)) for w, r in data["problems"]))


def _loads(data: bytes | str) -> Any:
    """JSON with orjson (the cache file is most of the start-up's reading: 3x faster than json),
    json for what orjson refuses (an integer beyond 64 bits)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _regexps(rule: CompiledRule) -> Iterator[tuple[str, bool]]:
    """(pattern, case_insensitive) of every `regexp` query of the rule."""
    queries: list[Any] = [rule.query, rule.refine]
    queries += [q for leaf in (rule.correlation.leaves() if rule.correlation else []) for q in (leaf.query, leaf.refine)]
    while queries:
        node = queries.pop()
        if isinstance(node, list):
            queries.extend(node)
        elif isinstance(node, dict):
            body = node.get("regexp")
            if len(node) == 1 and isinstance(body, dict) and len(body) == 1:
                spec = next(iter(body.values()))
                if isinstance(spec, dict) and "value" in spec:
                    yield str(spec["value"]), bool(spec.get("case_insensitive"))
                continue
            queries.extend(node.values())


def _route_key(key: list[str]) -> RouteKey:
    first, second, third = key
    return (str(first), str(second), str(third))


def _rule_data(rule: CompiledRule) -> dict[str, Any]:
    return {"id": rule.id, "title": rule.title, "description": rule.description, "severity": rule.severity.value,
            "tags": list(rule.tags), "path": rule.path,
            "query": json.dumps(rule.query, separators=(",", ":"), allow_nan=False), "group_by": list(rule.group_by),
            "threshold": rule.threshold, "timespan": rule.timespan.total_seconds(), "kind": rule.kind,
            "refine": rule.refine, "refine_fields": list(rule.refine_fields), "long_query": rule.long_query,
            "condition": list(rule.condition),
            "value_field": rule.value_field,
            "correlation": None if rule.correlation is None else _correlation_data(rule.correlation),
            "options": rule.options, "translations": [list(t) for t in rule.translations],
            "notes": list(rule.notes), "unmapped": rule.unmapped}


class _CachedRule(CompiledRule):
    """A rule from the cache whose query (most of the file's bytes) is decoded from its JSON text
    the first time it is read: most rules of a large corpus are never a candidate for the events
    of one scan, and decoding every query would cost as much as all the rest of the start-up."""

    def __init__(self, *args: Any, query_text: str = "", **fields: Any):
        super().__init__(*args, **fields)
        if query_text:
            del self.__dict__["query"]  # read through __getattr__ until then
            self.__dict__["_query_text"] = query_text

    def __getattr__(self, name: str) -> Any:  # only called for what the instance lacks: the query, once
        if name != "query" or "_query_text" not in self.__dict__:
            raise AttributeError(name)
        query = self.__dict__["query"] = _loads(self.__dict__.pop("_query_text"))
        return query


def _rule(data: Mapping[str, Any]) -> CompiledRule:
    op, number = data["condition"]
    return _CachedRule(query_text=str(data["query"]),
        id=str(data["id"]), title=str(data["title"]), description=str(data["description"]),
        severity=Severity(data["severity"]), tags=tuple(map(str, data["tags"])), path=str(data["path"]),
        query={}, group_by=tuple(map(str, data["group_by"])), threshold=int(data["threshold"]),
        timespan=timedelta(seconds=float(data["timespan"])), kind=str(data["kind"]),
        refine=None if data["refine"] is None else dict(data["refine"]),
        refine_fields=tuple(map(str, data["refine_fields"])),
        long_query=None if data["long_query"] is None else dict(data["long_query"]), condition=(str(op), float(number)),
        value_field=None if data["value_field"] is None else str(data["value_field"]),
        correlation=None if data["correlation"] is None else _correlation(data["correlation"]),
        options=dict(data["options"]), translations=tuple((str(a), str(b), str(c)) for a, b, c in data["translations"]),
        notes=tuple(map(str, data["notes"])), unmapped=str(data["unmapped"]))


def _correlation_data(correlation: Correlation) -> dict[str, Any]:
    return {"name": correlation.name, "kind": correlation.kind, "op": correlation.op, "count": correlation.count,
            "timespan": correlation.timespan.total_seconds(), "value_field": correlation.value_field,
            "inputs": [_correlation_data(i) if isinstance(i, Correlation)
                       else {"leaf": i.name, "query": i.query, "refine": i.refine, "long_query": i.long_query}
                       for i in correlation.inputs]}


def _correlation(data: Mapping[str, Any]) -> Correlation:
    inputs: list[Leaf | Correlation] = [
        Leaf(str(i["leaf"]), dict(i["query"]), None if i["refine"] is None else dict(i["refine"]),
             None if i["long_query"] is None else dict(i["long_query"])) if "leaf" in i
        else _correlation(i) for i in data["inputs"]]
    return Correlation(str(data["name"]), str(data["kind"]), str(data["op"]), float(data["count"]),
                       timedelta(seconds=float(data["timespan"])),
                       None if data["value_field"] is None else str(data["value_field"]), tuple(inputs))
