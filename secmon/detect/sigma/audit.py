"""Sysmon field names on Windows Security-audit events: the translations that are more than a rename.

Sigma's `process_creation`, `registry_*`, `network_connection`, ... rules name Sysmon's
fields. Hosts that audit with Security events (4688, 4657, 5156, 4663, 4689) and no Sysmon
write the same facts under other names (windows.yml `audit:` renames those) and sometimes in
another shape, which a rename cannot fix and these translations do, exactly, as queries on
the event's own fields (so the node and the in-process matcher agree by construction):

- `Hex`: Sysmon writes process ids in decimal (`8612`), Security in hex (`0x21a4`).
- `ValueMap`: a closed set of values written differently (IntegrityLevel `High` is
  MandatoryLabel `S-1-16-12288`; Initiated `true` is Direction `%%14593`). The rule's
  pattern is evaluated at compile time against each Sysmon value.
- `Account`: Sysmon's `User` is `DOMAIN\\name` in one field; Security events split it into
  `...DomainName` and `...UserName`, name SYSTEM and NETWORK SERVICE by the machine account
  (`HOST$`), and, for 4688, write the new process's account as the Target account when it
  differs from the creator's (`TargetUserName` is `-` otherwise).
- `RegistryPath`: Sysmon's `TargetObject` (`HKLM\\System\\CurrentControlSet\\...\\Value`) is
  4657's `ObjectName` (`\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\...`) plus `ObjectValueName`.

A value no translation can express (a regex on a composed field, |fieldref, ...) raises
UnsupportedRule: the rule then does not run on that kind of event, and `rules validate`
says so (pipeline.py), instead of matching it wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sigma.types import (
    SigmaBool,
    SigmaCasedString,
    SigmaExists,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from secmon.detect.sigma.compile import (
    ANY,
    MATCH_NONE,
    Compiler,
    Query,
    Tokens,
    UnsupportedRule,
    and_,
    not_,
    or_,
    tokens,
    wildcard_text,
)
from secmon.detect.fields import alt_case, wildcard_source

EVENT_DATA = "winlog.event_data."
STAR = SpecialChars.WILDCARD_MULTI
ONE = SpecialChars.WILDCARD_SINGLE
# Accounts Security events name by the machine account (HOST$) or like Sysmon does; Sysmon's names
# are the English ones (a localized Windows writes e.g. `AUTORITE NT\\Système`).
WELL_KNOWN = {"S-1-5-18": "NT AUTHORITY\\SYSTEM", "S-1-5-19": "NT AUTHORITY\\LOCAL SERVICE",
              "S-1-5-20": "NT AUTHORITY\\NETWORK SERVICE"}


def _field(name: str) -> str:
    return EVENT_DATA + name


def _text(value: Any, what: str) -> tuple[Tokens, bool]:
    """(tokens, case-insensitive) of a string-like Sigma value; UnsupportedRule for anything else."""
    if isinstance(value, SigmaString):
        return tokens(value), not isinstance(value, SigmaCasedString)
    if isinstance(value, SigmaNumber):
        return tuple(str(value.number)), True
    if isinstance(value, SigmaBool):
        return tuple("true" if value.boolean else "false"), True
    raise UnsupportedRule(f"{what}: a {type(value).__name__} value cannot be translated for this event")


def constant_matches(pattern: Tokens, text: str, insensitive: bool) -> bool:
    """Would Elasticsearch's wildcard query for `pattern` match the value `text`?"""
    return re.fullmatch(wildcard_source(wildcard_text(pattern), insensitive), text, re.DOTALL) is not None


def split(pattern: Tokens, sep: str, left_may_hold_sep: bool) -> list[tuple[Tokens, Tokens]]:
    """Every (left, right) such that `pattern` matches `A + sep + B` exactly when `left` matches A
    and `right` matches B, for B (and A unless `left_may_hold_sep`) without `sep`: the token that
    consumes the separator is a literal `sep`, a `?`, or a `*` (which then ends `left` and starts
    `right`). Pairs that cannot match such values are left out."""
    found: list[tuple[Tokens, Tokens]] = []
    for k, token in enumerate(pattern):
        if token == sep or token is ONE:
            pair = (pattern[:k], pattern[k + 1:])
        elif token is STAR:
            pair = (pattern[:k] + ANY, ANY + pattern[k + 1:])
        else:
            continue
        if sep in pair[1] or (not left_may_hold_sep and sep in pair[0]):
            continue
        if pair not in found:
            found.append(pair)
    return found


def derive(pattern: Tokens, prefix: str, insensitive: bool) -> list[Tokens]:
    """Patterns Q such that `pattern` matches `prefix + X` exactly when some Q matches X."""
    current = [pattern]
    for ch in prefix:
        following: list[Tokens] = []
        for p in current:
            for q in _step(p, ch, insensitive):
                if q not in following:
                    following.append(q)
        current = following
    return current


def _step(pattern: Tokens, ch: str, insensitive: bool) -> list[Tokens]:
    if not pattern:
        return []
    head, rest = pattern[0], pattern[1:]
    if head is STAR:
        return [pattern, *_step(rest, ch, insensitive)]
    if head is ONE or head == ch or (insensitive and isinstance(head, str) and alt_case(head) == ch):
        return [rest]
    return []


@dataclass(frozen=True)
class Hex:
    """A process id: Sysmon's decimal number is this field's `0x...` text."""

    target: str

    def fields(self) -> set[str]:
        return {_field(self.target)}

    def query(self, compiler: Compiler, value: Any) -> Query:
        if isinstance(value, (SigmaNull, SigmaExists)):
            return compiler.value(_field(self.target), value, True, True)
        text = "".join(str(t) for t in _text(value, self.target)[0])
        if not text.isdigit():
            raise UnsupportedRule(f"process id {text!r}: only plain decimal ids translate to {self.target}")
        return compiler.pattern(_field(self.target), tuple(hex(int(text))), True)


@dataclass(frozen=True)
class ValueMap:
    """A closed set of Sysmon values and what this event writes for each."""

    target: str
    values: Mapping[str, tuple[str, ...]]

    def fields(self) -> set[str]:
        return {_field(self.target)}

    def query(self, compiler: Compiler, value: Any) -> Query:
        field = _field(self.target)
        if isinstance(value, (SigmaNull, SigmaExists)):
            return compiler.value(field, value, True, True)
        if isinstance(value, SigmaRegularExpression):
            flags = re.IGNORECASE if SigmaRegularExpressionFlag.IGNORECASE in value.flags else 0
            chosen = [k for k in self.values if re.search(str(value.regexp), k, flags)]
        else:
            pattern, insensitive = _text(value, self.target)
            if pattern == ANY:
                return {"exists": {"field": field}}
            chosen = [k for k in self.values if constant_matches(pattern, k, insensitive)]
        written = [v for k in chosen for v in self.values[k]]
        return or_([compiler.pattern(field, tuple(v), False) for v in written]) if written else MATCH_NONE


@dataclass(frozen=True)
class Account:
    """Sysmon's `DOMAIN\\name` of an account. `subject`: the event's Subject account (the creating
    process's, Sysmon's ParentUser); `new`: a 4688's new process (the Target account when one is
    named, else the Subject's). `part` set: that field of the same account (e.g. LogonId)."""

    which: str  # new | subject
    part: str | None = None

    def fields(self) -> set[str]:
        who = ("Subject",) if self.which == "subject" else ("Target", "Subject")
        parts = (self.part,) if self.part else ("UserSid", "DomainName", "UserName")
        return {_field(w + p) for w in who for p in parts} | (
            {_field("TargetUserName")} if self.which == "new" else set())

    def query(self, compiler: Compiler, value: Any) -> Query:
        if self.which == "subject":
            return self._of(compiler, "Subject", value)
        named = and_([{"exists": {"field": _field("TargetUserName")}},
                      not_({"term": {_field("TargetUserName"): {"value": "-"}}})])
        return or_([and_([named, self._of(compiler, "Target", value)]),
                    and_([not_(named), self._of(compiler, "Subject", value)])])

    def _of(self, compiler: Compiler, who: str, value: Any) -> Query:
        if self.part is not None:
            return compiler.value(_field(who + self.part), value, True, True)
        if isinstance(value, (SigmaNull, SigmaExists)):  # the account is there when its name is
            return compiler.value(_field(who + "UserName"), value, True, True)
        pattern, insensitive = _text(value, "User")
        if isinstance(value, (SigmaNumber, SigmaBool)):
            raise UnsupportedRule(f"User compared with a {type(value).__name__}")
        sid, domain, name = (_field(who + f) for f in ("UserSid", "DomainName", "UserName"))
        known = [compiler.pattern(sid, tuple(s), False) for s, text in WELL_KNOWN.items()
                 if constant_matches(pattern, text, insensitive)]
        pairs = [and_([compiler.pattern(domain, left, insensitive), compiler.pattern(name, right, insensitive)])
                 for left, right in split(pattern, "\\", left_may_hold_sep=False)]
        by_name = and_([not_({"terms": {sid: sorted(WELL_KNOWN)}}), or_(pairs)]) if pairs else MATCH_NONE
        return or_([*known, by_name])


@dataclass(frozen=True)
class RegistryPath:
    """Sysmon's TargetObject: the key (hive as Sysmon abbreviates it) and the value name."""

    key: str
    value_name: str
    hives: tuple[tuple[str, str], ...]  # (as Sysmon writes it, as this event writes it), longest first

    def fields(self) -> set[str]:
        return {_field(self.key), _field(self.value_name)}

    def query(self, compiler: Compiler, value: Any) -> Query:
        if not isinstance(value, SigmaString):
            raise UnsupportedRule(f"TargetObject: a {type(value).__name__} value cannot be translated for this event")
        pattern, insensitive = _text(value, "TargetObject")
        return or_([and_([self._key(compiler, left, insensitive),
                          compiler.pattern(_field(self.value_name), right, insensitive)])
                    for left, right in split(pattern, "\\", left_may_hold_sep=True)] or [MATCH_NONE])

    def _key(self, compiler: Compiler, pattern: Tokens, insensitive: bool) -> Query:
        field = _field(self.key)
        options: list[Query] = []
        for n, (short, long) in enumerate(self.hives):
            # A longer Security prefix that extends this one is abbreviated by its own entry.
            longer = [compiler.pattern(field, (*long2, STAR), True) for _, long2 in self.hives[:n]
                      if long2.lower().startswith(long.lower())]
            for rest in derive(pattern, short, insensitive):
                query = compiler.pattern(field, (*long, *rest), insensitive)
                options.append(and_([query, *[not_(q) for q in longer]]) if longer else query)
        unabbreviated = [not_(compiler.pattern(field, (*long, STAR), True)) for _, long in self.hives]
        options.append(and_([*unabbreviated, compiler.pattern(field, pattern, insensitive)]))
        return or_(options)


def translation(spec: Any) -> Hex | ValueMap | Account | RegistryPath:
    """A windows.yml `audit:` entry that is not a plain rename."""
    if not isinstance(spec, Mapping) or len(spec) == 0:
        raise ValueError(f"windows.yml audit entry {spec!r}: a field name or a mapping")
    if "hex" in spec:
        return Hex(str(spec["hex"]))
    if "values" in spec:
        return ValueMap(str(spec["field"]), {str(k): tuple(map(str, v if isinstance(v, list) else [v]))
                                            for k, v in spec["values"].items()})
    if "account" in spec:
        return Account(str(spec["account"]), spec.get("part"))
    if "registry" in spec:
        key, value_name = spec["registry"]
        return RegistryPath(str(key), str(value_name), tuple((str(s), str(long)) for s, long in spec["hives"]))
    raise ValueError(f"windows.yml audit entry {spec!r}: unknown kind")
