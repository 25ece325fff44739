"""Which rules can a document possibly match? One Aho-Corasick pass per field instead of every rule.

For each rule query, `needles(query)` finds a *necessary* condition: a set of
atoms (field, literal text, anchoring) such that the query cannot match a
document unless at least one atom occurs in it. `NeedleIndex` puts every
rule's atoms into one automaton per field; a document's field values are
case-folded and anchored (`\\x02value\\x03`), each is scanned once, and the
rules whose atoms occur are the only ones worth running the full predicate on.

The test is a superset by construction, so skipping a rule never changes an answer:
- atoms are only taken from clauses every match must satisfy (a filter/must clause,
  or every branch of an any-of), never from must_not;
- atoms and values are compared case-folded (str.casefold, per character, without
  context): a character matches itself, its other ASCII case (term, prefix, wildcard)
  or a character of its Unicode case class (regexp, lucene_regexp.case_class), and
  all of these fold alike, so folding both sides never un-matches;
- a regexp gives the literal runs every match of it contains (read from Python's
  own parse of the translated pattern);
- queries whose literal cannot be read (range, exists, typed fields, ...) give no
  atoms, and the rule is a candidate whenever its logsource admits the document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from re import _parser as sre  # type: ignore[attr-defined]  # Python's own regex parser: a pattern's literals

import ahocorasick

from secmon.detect.sigma.lucene_regexp import python_source
from secmon.detect.fields import FieldTypes, as_keyword, as_list, field_types
from secmon.detect.inprocess.literals import required_runs

START, END = "\x02", "\x03"
# Fields a rule's logsource becomes (the router indexes rules by them): atoms on them say
# nothing the route has not said already.
ROUTE_FIELDS = ("winlog.channel", "winlog.event_id", "event.dataset", "event.module", "event.category")
MIN_NEEDLE = 2
ANY_OF_GROUPS = 3  # conditions kept from an any-of (see _Extractor._bool)
Atom = tuple[str, str]  # (field, needle with anchors)


def _too_common(text: str) -> bool:
    """An unanchored short ASCII literal (" ", "-", "ex") occurs in almost every value: no help
    as a filter. One non-ASCII character (an emoji, U+202E, a Cyrillic letter) is rare enough."""
    return len(text) < MIN_NEEDLE and text.isascii()


def _literal(field: str, text: str, at_start: bool, at_end: bool) -> frozenset[Atom] | None:
    if not text and not (at_start and at_end) or _too_common(text) and not (at_start or at_end):
        return None
    needle = (START if at_start else "") + text.casefold() + (END if at_end else "")
    return frozenset({(field, needle)})


def _wildcard_segments(pattern: str) -> list[tuple[str, bool, bool]]:
    """The literal runs of an Elasticsearch wildcard pattern, with whether each is anchored at start/end."""
    segments, current, i, first = [], [], 0, True
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            current.append(pattern[i + 1])
            i += 2
            continue
        if ch in "*?":
            segments.append(("".join(current), first, False))
            current, first = [], False
        else:
            current.append(ch)
        i += 1
    segments.append(("".join(current), first, True))
    return [s for s in segments if s[0]]


Groups = list[frozenset[Atom]]  # conditions that must all hold; each holds when one of its atoms occurs


class _Extractor:
    def __init__(self, types: FieldTypes):
        self.types = types

    def groups(self, query: Mapping[str, Any]) -> Groups:
        """Conditions every match satisfies, each a set of atoms one of which occurs ([] = none known)."""
        if len(query) != 1:
            return []
        (kind, body), = query.items()
        if kind == "bool":
            return self._bool(body)
        if kind == "match_none":
            return [frozenset()]
        if kind not in ("term", "terms", "prefix", "wildcard", "regexp") or not isinstance(body, Mapping):
            return []
        fields = [f for f in body if f != "boost"]
        if len(fields) != 1:
            return []
        field, spec = fields[0], body[fields[0]]
        if self.types.type_of(field) is not None or field in self.types.not_indexed:
            return []
        if kind == "terms":
            found = _any(_literal(field, as_keyword(v), True, True) for v in spec)
            return [] if found is None else [found]
        value = spec.get("value", spec.get("wildcard")) if isinstance(spec, Mapping) else spec
        if kind == "term":
            options = [_literal(field, as_keyword(value), True, True)]
        elif kind == "prefix":
            options = [_literal(field, str(value), True, False)]
        elif kind == "regexp":
            options = [_regexp(field, str(value), bool(spec.get("case_insensitive")))]
        else:  # every literal run of a wildcard pattern occurs in a match
            options = [_literal(field, text, start, end) for text, start, end in _wildcard_segments(str(value))]
        return [o for o in options if o is not None]

    def _bool(self, body: Mapping[str, Any]) -> Groups:
        musts = as_list(body.get("filter")) + as_list(body.get("must"))
        shoulds = as_list(body.get("should"))
        minimum = int(body.get("minimum_should_match", 0 if musts else 1)) if shoulds else 0
        found = [group for query in musts for group in self.groups(query)]
        if minimum >= 1:
            # Every branch needs each of its groups, so one group per branch, united, is needed
            # by the any-of: the best of each, then the second best, ... (a branch with fewer
            # groups repeats its last), so that `sel_a or sel_b` of two kinds of event keeps as
            # many conditions as either branch alone.
            options = [sorted(self.groups(q), key=_cost) for q in shoulds]
            if all(options):
                for rank in range(min(max(len(o) for o in options), ANY_OF_GROUPS)):
                    found.append(frozenset().union(*(o[min(rank, len(o) - 1)] for o in options)))
        return found


def _any(alternatives: Iterable[frozenset[Atom] | None]) -> frozenset[Atom] | None:
    union: set[Atom] = set()
    for atoms in alternatives:
        if atoms is None:
            return None
        union |= atoms
    return frozenset(union)


def _regexp(field: str, pattern: str, insensitive: bool) -> frozenset[Atom] | None:
    try:
        parsed = sre.parse(python_source(pattern, insensitive))
    except Exception:  # noqa: BLE001 - a pattern we cannot read simply gives no atoms
        return None
    found = required_runs(parsed, _regex_char, keep=lambda text: not _too_common(text))
    return None if found is None else frozenset((field, run) for run in found)


def _regex_char(op: Any, arg: Any) -> str | None:
    """What a regex item stands for, case-folded, when that is one text ([sSſ] -> s), else None."""
    if op is sre.LITERAL:
        return chr(arg).casefold()
    if op is sre.IN and all(item_op is sre.LITERAL for item_op, _ in arg):
        folded = {chr(code).casefold() for _, code in arg}
        if len(folded) == 1:
            return folded.pop()
    return None


def _cost(atoms: frozenset[Atom]) -> tuple[int, int, int]:
    """How often a condition is likely to hold: on the routing fields (routing tested them
    already) worst, then the shorter its shortest needle, then the more needles."""
    if not atoms:
        return (0, 0, 0)
    routed = any(f in ROUTE_FIELDS for f, _ in atoms)
    return (int(routed), -min(len(n.strip(START + END)) for _, n in atoms), len(atoms))


def needles(query: Mapping[str, Any], types: FieldTypes | None = None, most: int = 2) -> Groups:
    """Up to `most` conditions every match of `query` satisfies, the most selective first, none
    on a routing field: a document can only match when each has an atom in it ([] = no filter)."""
    found = set(_Extractor(types or field_types()).groups(query))
    useful = sorted((g for g in found if not any(f in ROUTE_FIELDS for f, _ in g)), key=lambda g: (_cost(g), sorted(g)))
    return useful[:most]


def flatten(doc: Any) -> dict[str, list[Any]]:
    """Every leaf value under its dotted path: what `fields.field_values(doc, path)` returns, for all paths."""
    out: dict[str, list[Any]] = {}
    if isinstance(doc, Mapping):
        _flatten_into(doc, "", out)
    return out


# The dotted paths made so far, by prefix and key: an event's paths are the same few dozen as the
# event before's, and a remembered string also keeps its hash (a new one is hashed again by every
# dict it meets). Bounded: keys are input.
_PATHS: dict[str, dict[str, str]] = {}
PATHS_KEPT = 20_000
_paths_kept = 0


def _paths(prefix: str) -> dict[str, str]:
    global _paths_kept
    if _paths_kept >= PATHS_KEPT:
        _PATHS.clear()
        _paths_kept = 0
    _paths_kept += 1
    found = _PATHS[prefix] = {}
    return found


def _flatten_into(node: Mapping[str, Any], prefix: str, out: dict[str, list[Any]]) -> None:
    # Hot path (every document of an offline scan): exact type tests first, the general ones after;
    # a list of texts or numbers (event.category, ...) without a call per item.
    global _paths_kept
    paths = _PATHS.get(prefix)
    if paths is None:
        paths = _paths(prefix)
    for key, value in node.items():
        path = paths.get(key)
        if path is None:
            if _paths_kept >= PATHS_KEPT:  # new keys under a known prefix (keys are input): the bound holds too
                paths = _paths(prefix)
            path = paths[key] = prefix + key
            _paths_kept += 1
        kind = value.__class__
        if kind is str or kind is int:
            found = out.get(path)
            if found is None:
                out[path] = [value]
            else:
                found.append(value)
        elif kind is dict:
            _flatten_into(value, path + ".", out)
        elif kind is list:
            for item in value:
                if item.__class__ is str or item.__class__ is int:
                    found = out.get(path)
                    if found is None:
                        out[path] = [item]
                    else:
                        found.append(item)
                else:
                    _flatten_into({key: item}, prefix, out)
        elif isinstance(value, Mapping):
            _flatten_into(value, path + ".", out)
        elif value is not None:
            out.setdefault(path, []).append(value)


MEMO_VALUES = 20_000  # per field: the distinct short values whose scan is remembered
MEMO_LENGTH = 256  # longer values (command lines, script blocks) are scanned every time
MEMO_TOTAL = 100_000  # over every field (a corpus names hundreds): at most ~40 MB however hostile the logs


class Among(NamedTuple):
    """Some items of a NeedleIndex (`NeedleIndex.among`): the fields their needles name, and their
    (item, group) codes."""

    fields: frozenset[str]
    codes: frozenset[int]


class NeedleIndex:
    """Items (rule numbers) by their needle groups; `hits(flat)` = the items every group of which
    has an atom in the document. A field's automaton is built the first time a document has the
    field: a large corpus names hundreds of fields, one set of files a few dozen.

    What a short text value holds is remembered per field (a pure function of the value): event
    logs repeat their values (providers, channels, images, account names; 88% of the values the
    EVTX samples scan are repeats), so most values are looked up, not scanned. Only `str` values are
    remembered (1, 1.0 and True are equal keys but different texts), at most MEMO_VALUES a field
    (then the field's memo starts again), MEMO_TOTAL over all fields (then every memo starts again),
    none longer than MEMO_LENGTH."""

    def __init__(self, items: Iterable[tuple[int, Groups]]):
        self._words: dict[str, dict[str, set[int]]] = {}
        self._need: dict[int, int] = {}
        self._fields_of: dict[int, frozenset[str]] = {}
        for item, groups in items:
            self._need[item] = len(groups)
            self._fields_of[item] = frozenset(field for group in groups for field, _ in group)
            for number, group in enumerate(groups):
                for field, needle in group:  # (item, group) as one int: item * 8 + group number
                    self._words.setdefault(field, {}).setdefault(needle, set()).add(item * 8 + number)
        self._automata: dict[str, Any] = {}
        self._memos: dict[str, dict[str, tuple[int, ...]]] = {}
        self._memoized = 0  # values in all the memos

    def _make_room(self, memo: dict[str, tuple[int, ...]]) -> None:
        if len(memo) >= MEMO_VALUES:
            self._memoized -= len(memo)
            memo.clear()
        if self._memoized >= MEMO_TOTAL:
            for each in self._memos.values():
                each.clear()
            self._memoized = 0

    def _automaton(self, field: str) -> Any:
        found = self._automata.get(field)
        if found is None:
            found = self._automata[field] = ahocorasick.Automaton()
            for needle, items in self._words[field].items():
                found.add_word(needle, tuple(sorted(items)))
            found.make_automaton()
            self._memos[field] = {}
        return found

    def among(self, items: Iterable[int]) -> Among:
        """Some of the items (those a document's logsource admits: router.py), for `hits`."""
        chosen = [item for item in items if item in self._need]
        return Among(frozenset(field for item in chosen for field in self._fields_of[item]),
                     frozenset(item * 8 + number for item in chosen for number in range(self._need[item])))

    def hits(self, flat: Mapping[str, list[Any]], among: Among | None = None) -> list[int]:
        """The items every group of which has an atom in `flat`; with `among`, only those of its items
        (the same as filtering the answer without it: the values are scanned alike, and only the
        fields of its items are read)."""
        found: set[int] = set()
        automata, memos = self._automata, self._memos
        for field in flat.keys() & (self._words.keys() if among is None else among.fields):
            automaton = automata.get(field) or self._automaton(field)
            memo = memos[field]
            for value in flat[field]:
                if type(value) is str:
                    codes = memo.get(value)
                    if codes is None:
                        codes = tuple({c for _, items in automaton.iter(START + value.casefold() + END) for c in items})
                        if len(value) <= MEMO_LENGTH:
                            if len(memo) >= MEMO_VALUES or self._memoized >= MEMO_TOTAL:
                                self._make_room(memo)
                            memo[value] = codes
                            self._memoized += 1
                    if codes:
                        found.update(codes)
                else:
                    for _, items in automaton.iter(START + as_keyword(value).casefold() + END):
                        found.update(items)
        if among is not None and found:
            found.intersection_update(among.codes)  # in C: the codes of items of other logsources go
        if not found:
            return []
        held: dict[int, int] = {}
        for code in found:
            held[code >> 3] = held.get(code >> 3, 0) + 1
        need = self._need
        return [item for item, count in held.items() if count == need[item]]
