"""Fold findings into incidents, and decide who must be told: pure, no I/O.

One open incident stands for one (detector, rule, agency, group) = `Finding.group_key`
while the activity goes on. A finding joins the group's incident whose activity it
overlaps or follows (or precedes) within `quiet_period`, unless that one is closed;
otherwise it starts a new incident. Every decision is a function of the stored state and the
finding, so a scan that runs twice, or two scans that run at once, reach the
same documents and the same notification keys (the outbox dedupes on them).

Bursts are kept per incident (start, end): a finding that overlaps a stored
burst widens it, as does one that comes within its `joins` (a single rule's timespan: the
same burst, seen by another scan window); a disjoint one is a new occurrence. Counts add up what each
scan window contributed (a finding's `new_count`: its events inside the window,
the rest being context an earlier window counted), keyed by window and burst,
so merging the same finding from the same window twice changes nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from secmon.model import Change, Explanation, Finding, Incident, Notification, Severity, stable_id

MAX_BURSTS = 100  # kept per incident; older ones are folded into one
MAX_CONTRIBUTIONS = 500  # window contributions kept apart; older ones are folded into one
FOLDED = "folded"


@dataclass(frozen=True)
class Burst:
    start: datetime
    end: datetime
    count: int


@dataclass(frozen=True)
class State:
    """An incident as stored: the lifecycle view plus what merging needs."""

    incident: Incident
    bursts: tuple[Burst, ...]
    group_key: str
    contributions: tuple[tuple[str, int], ...] = ()  # (window and burst key, events it added), oldest first


@dataclass(frozen=True)
class Policy:
    quiet_period: timedelta
    renotify_interval: timedelta | None = None
    user: str = "secmon"
    window: str = ""  # the scan window's identity: what a finding contributes is keyed by it


@dataclass(frozen=True)
class Decision:
    state: State  # what to store
    previous: State | None  # what was stored (None: a new incident)
    notifications: tuple[Notification, ...]

    @property
    def is_new(self) -> bool:
        return self.previous is None or self.previous.incident.id != self.state.incident.id

    @property
    def changed(self) -> bool:
        return self.previous is None or self.previous != self.state


def decide(group: Sequence[State], finding: Finding, policy: Policy, now: datetime) -> Decision:
    """What `finding` does to its group, given the group's incidents near it in time (any order)."""
    near = sorted((s for s in group if _touches(s, finding, policy)), key=lambda s: s.incident.finding.last_seen)
    target = next((s for s in reversed(near) if s.incident.status != "closed"), None)
    if target is not None:
        return _merge(target, finding, policy, now)
    closed = near[-1] if near else None
    if closed is not None and closed.incident.finding.first_seen <= finding.first_seen \
            and finding.last_seen <= closed.incident.finding.last_seen:
        return Decision(closed, closed, ())  # events a closed incident already covered: nothing new
    return _open(group, finding, now, policy)


def decide_all(groups: dict[str, list[State]], findings: Iterable[Finding], policy: Policy, now: datetime
               ) -> list[Decision]:
    """Decisions for many findings, oldest first; findings of one group see each other's results."""
    current = {key: list(states) for key, states in groups.items()}
    decisions: dict[str, Decision] = {}  # by incident id: the last decision per incident wins
    for finding in sorted(findings, key=lambda f: (f.first_seen, f.rule_id, f.group)):
        states = current.setdefault(finding.group_key, [])
        decision = decide(states, finding, policy, now)
        earlier = decisions.get(decision.state.incident.id)
        if earlier is not None:  # fold notifications and keep the stored state we started from
            decision = Decision(decision.state, earlier.previous,
                                _unique(earlier.notifications + decision.notifications))
        decisions[decision.state.incident.id] = decision
        states[:] = [s for s in states if s.incident.id != decision.state.incident.id] + [decision.state]
    return list(decisions.values())  # unchanged ones too: the scan reports every incident its findings belong to


def _touches(state: State, finding: Finding, policy: Policy) -> bool:
    """The finding overlaps the incident's activity, or follows or precedes it within the quiet period
    (or within the finding's `joins`: the rest of its burst, which an earlier scan saw)."""
    span, reach = state.incident.finding, reach_of(finding, policy.quiet_period)
    return finding.first_seen <= span.last_seen + reach and finding.last_seen >= span.first_seen - reach


def reach_of(finding: Finding, quiet_period: timedelta) -> timedelta:
    """How far from a finding the incidents it may fold into lie."""
    return max(quiet_period, finding.joins)


def _open(group: Sequence[State], finding: Finding, now: datetime, policy: Policy) -> Decision:
    # The first event names a new incident; if a (closed) incident already has that name, the
    # successor's id also names it, so both stay deterministic and never collide.
    ident, taken = finding.incident_id, {s.incident.id for s in group}
    while ident in taken:
        ident = stable_id(ident, "after")
    incident = Incident(id=ident, finding=finding, status="open", created=now, occurrences=1, updated=now,
                        history=(Change(now, "opened", policy.user, "", "open"),))
    state = State(incident, (Burst(finding.first_seen, finding.last_seen, finding.count),), finding.group_key,
                  (_contribution(finding, policy),))
    state = replace(state, incident=replace(incident, finding=replace(finding, count=_total(state.contributions))))
    return Decision(state, None, (Notification(state.incident, "opened", "opened"),))


def _contribution(finding: Finding, policy: Policy) -> tuple[str, int]:
    key = stable_id(policy.window, finding.first_seen.isoformat())[:16]
    return key, finding.count if finding.new_count is None else finding.new_count


def _total(contributions: tuple[tuple[str, int], ...]) -> int:
    return sum(count for _, count in contributions)


def merge_contributions(old: tuple[tuple[str, int], ...], new: tuple[str, int]) -> tuple[tuple[str, int], ...]:
    """Add a window's contribution; the same window and burst again keeps the larger count (a re-run)."""
    kept = dict(old)
    kept[new[0]] = max(kept.get(new[0], 0), new[1])
    items = tuple(kept.items())
    if len(items) > MAX_CONTRIBUTIONS:
        oldest = items[: len(items) - MAX_CONTRIBUTIONS + 1]
        items = ((FOLDED, sum(c for _, c in oldest)), *items[len(items) - MAX_CONTRIBUTIONS + 1:])
    return items


def _merge(latest: State, finding: Finding, policy: Policy, now: datetime) -> Decision:
    old = latest.incident
    bursts = merge_bursts(latest.bursts, Burst(finding.first_seen, finding.last_seen, finding.count), finding.joins)
    contributions = merge_contributions(latest.contributions, _contribution(finding, policy))
    severity = max(old.finding.severity, finding.severity, key=lambda s: s.rank)
    merged_finding = dataclasses.replace(
        old.finding, severity=severity,
        first_seen=min(old.finding.first_seen, finding.first_seen),
        last_seen=max(old.finding.last_seen, finding.last_seen),
        count=_total(contributions), new_count=None,
        sample_event_ids=tuple(dict.fromkeys(old.finding.sample_event_ids + finding.sample_event_ids))[:20],
        explanation=_stronger(old.finding, finding))
    if bursts == latest.bursts and contributions == latest.contributions and merged_finding == old.finding:
        return Decision(latest, latest, ())  # seen before: nothing to write, nobody to tell
    history = old.history
    notifications: list[Notification] = []
    if severity.rank > old.finding.severity.rank:
        history += (Change(now, "escalated", policy.user, f"severity {old.finding.severity.value} -> "
                                                         f"{severity.value}", old.status),)
    incident = dataclasses.replace(old, finding=merged_finding, occurrences=len(bursts), updated=now,
                                   history=history)
    if severity.rank > old.finding.severity.rank:
        notifications.append(Notification(incident, "escalated", f"severity:{severity.value}"))
    reminder = _reminder_slot(old, merged_finding, policy)
    if reminder is not None:
        notifications.append(Notification(incident, "reminder", f"reminder:{reminder}"))
    return Decision(State(incident, bursts, latest.group_key, contributions), latest, tuple(notifications))


def _stronger(old: Finding, new: Finding) -> Explanation | None:
    """An anomaly incident shows the explanation of its most anomalous window."""
    if old.explanation is None or (new.explanation is not None and new.explanation.score > old.explanation.score):
        return new.explanation or old.explanation
    return old.explanation


def _reminder_slot(old: Incident, merged: Finding, policy: Policy) -> int | None:
    """A growing open incident is told again each `renotify_interval` of activity (data time, so
    deterministic); an acknowledged one is being worked and is not."""
    if policy.renotify_interval is None or old.status != "open":
        return None
    before = int((old.finding.last_seen - old.finding.first_seen) / policy.renotify_interval)
    after = int((merged.last_seen - merged.first_seen) / policy.renotify_interval)
    return after if after > before else None


def merge_bursts(bursts: tuple[Burst, ...], new: Burst, joins: timedelta = timedelta(0)) -> tuple[Burst, ...]:
    """Fold `new` into the bursts it overlaps (count: the largest: the same events seen again), and
    into those it comes within `joins` of (count: the sum: the rest of its burst, seen by another
    window); keep the others apart."""
    merged: list[Burst] = []
    holds_new: list[bool] = []
    for burst in sorted([*bursts, new], key=lambda b: (b.start, b.end)):
        is_new = burst is new
        # Stored bursts are disjoint and further apart than `joins`: only `new` chains them.
        if merged and burst.start <= merged[-1].end:
            last = merged[-1]
            merged[-1] = Burst(last.start, max(last.end, burst.end), max(last.count, burst.count))
            holds_new[-1] = holds_new[-1] or is_new
        elif merged and (is_new or holds_new[-1]) and burst.start - merged[-1].end <= joins:
            last = merged[-1]
            merged[-1] = Burst(last.start, burst.end, last.count + burst.count)
            holds_new[-1] = True
        else:
            merged.append(burst)
            holds_new.append(is_new)
    if len(merged) > MAX_BURSTS:  # fold the oldest: the total count stays right, occurrences saturate
        oldest = merged[: len(merged) - MAX_BURSTS + 1]
        merged = [Burst(oldest[0].start, oldest[-1].end, sum(b.count for b in oldest)),
                  *merged[len(merged) - MAX_BURSTS + 1:]]
    return tuple(merged)


def _unique(notifications: tuple[Notification, ...]) -> tuple[Notification, ...]:
    by_key: dict[str, Notification] = {}
    for notification in notifications:
        by_key[notification.key] = notification  # the latest snapshot of the incident wins
    return tuple(by_key.values())


def severity_at_least(severity: Severity, floor: str) -> bool:
    return severity.rank >= Severity(floor).rank
