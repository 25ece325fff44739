"""The unattended run: which instance is active (the lease), and the bodies of the scheduler's jobs.

`secmon/scheduler.py` says when; this module says what, with the decisions in
`secmon/lease.py` and the documents in `store/state.py`. Only the holder of a
live lease runs a job, and every job document is written fenced: a writer whose
token is below the stored one (a newer holder took over) commits nothing.
Incidents and alerts are written with deterministic ids, so the fenced
watermark is the one write a stale instance must be kept from.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from secmon import lease as decide
from secmon.config import Settings
from secmon.errors import LeaseLost, SecmonError, StoreUnavailable
from secmon.lease import LEASE_ID, JobState, Lease, Outcome
from secmon.model import ScanSummary
from secmon.service.common import audit, indices_of
from secmon.service.deliver import daily_digests, deliver
from secmon.service.retention import retention
from secmon.service.scan import ScanOptions, scan
from secmon.service.train import TrainReport, retrain
from secmon.store import state
from secmon.store.event_indices import refresh_events
from secmon.store.indices import Indices
from secmon.types import iso, parse_duration

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

log = logging.getLogger(__name__)

JOBS = ("scan", "deliver", "digests", "retention", "retrain")
# A periodic retraining comes a retrain_interval after the last one, give or take the trigger's jitter;
# one asked for sooner (at start, at a takeover) finds the models fresh and leaves them.
DUE_SHARE = 0.9
Clock = Callable[[], datetime]
ScanFlow = Callable[["Elasticsearch", Settings, ScanOptions, datetime], ScanSummary]
TrainFlow = Callable[["Elasticsearch", Settings, datetime], TrainReport]


def holder_name() -> str:
    """host:pid:random: two processes, even on one host with a reused pid, never share a name."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class LeaseChange:
    active: bool
    became_active: bool = False
    lost: bool = False
    lease: Lease | None = None  # ours when active; the holder's (or None) on standby


class Keeper:
    """This process's side of the lease: acquire or renew it (`keep`), release it, and say whether it holds it.

    Called from the scheduler's lease job (one at a time); the job threads only
    read `holds`. What decides correctness is in Elasticsearch: a renewal or a
    takeover is a write conditional on the version read, so two instances never
    both believe they won.
    """

    def __init__(self, es: Elasticsearch, settings: Settings, me: str | None = None):
        self.me = me or holder_name()
        self._es = es
        self._indices = indices_of(settings)
        self._ttl = parse_duration(settings.schedule.lease)
        self._held: tuple[Lease, state.Stored] | None = None
        # The job documents as this process last read or wrote them: the next write is tried on that
        # version without reading it first (one request instead of two). Only scheduler instances write
        # them, each write is conditional on the version, so a stale copy (another holder wrote since)
        # costs a refused write and a read, never a lost update; the fencing check is made on what was read.
        # `scan_due` also starts from this copy: the watermark only moves forward and nothing but the holder
        # writes it, so a stale copy can only make a scan do again what was done (deterministic ids), never
        # skip events. A command that ever rewinds it must take the lease (a new token) to do so.
        self._seen: dict[str, state.Stored] = {}

    def seen(self, job: str) -> state.Stored | None:
        return self._seen.get(job)

    def saw(self, job: str, stored: state.Stored | None) -> None:
        if stored is None:
            self._seen.pop(job, None)
        else:
            self._seen[job] = stored

    def holds(self, now: datetime) -> int | None:
        """Our fencing token while our lease is live; None otherwise (commit nothing)."""
        held = self._held
        return held[0].token if held is not None and held[0].alive(now) else None

    def keep(self, now: datetime) -> LeaseChange:
        was_active = self._held is not None
        renewed = self._renew(now)
        if renewed is not None:
            return renewed
        found = state.read(self._es, self._indices, LEASE_ID)
        stored = Lease.from_doc(found.doc) if found else None
        step = decide.lease_step(stored, self.me, now)
        if step == "standby":
            self._held = None
            return LeaseChange(False, lost=was_active, lease=stored)
        mine = decide.next_lease(stored, step, self.me, now, self._ttl)
        if found is None:
            written = state.create(self._es, self._indices, LEASE_ID, mine.to_doc(now))
        else:
            written = state.replace(self._es, self._indices, LEASE_ID, mine.to_doc(now), found)
        if written is None:  # another instance wrote it between our read and our write: it won
            self._held = None
            return LeaseChange(False, lost=was_active, lease=stored)
        self._held = (mine, written)
        if step != "renew":
            self._claim(mine.token, now)
        return LeaseChange(True, became_active=not was_active or step != "renew", lease=mine)

    def _renew(self, now: datetime) -> LeaseChange | None:
        """Renew the lease we hold without reading it first: the write is conditional on the version we
        wrote last, so it succeeds only if nobody wrote the lease since, which is exactly when `lease_step`
        would say "renew" (the stored lease is ours). A conflict (None) sends `keep` to read and decide."""
        held = self._held
        if held is None:
            return None
        mine = decide.next_lease(held[0], "renew", self.me, now, self._ttl)
        written = state.replace(self._es, self._indices, LEASE_ID, mine.to_doc(now), held[1])
        if written is None:
            return None
        self._held = (mine, written)
        return LeaseChange(True, lease=mine)

    def _claim(self, token: int, now: datetime) -> None:
        """Stamp our token on every job document, so that the instance we replaced can no longer commit."""
        for job in JOBS:
            try:
                self.commit(job, token, now, lambda current: current, create=False)
            except LeaseLost:
                self._held = None
                raise

    def commit(self, job: str, token: int, now: datetime, change: Callable[[JobState], JobState],
               create: bool = True) -> JobState | None:
        """`write_job` on the version of the job document this process saw last (no read when it is current)."""
        try:
            written = write_job(self._es, self._indices, job, token, self.me, now, change, create,
                                known=self._seen.get(job))
        except LeaseLost:
            self._seen.pop(job, None)  # read it again next time
            raise
        if written is None:
            return None
        self._seen[job] = written[1]
        return written[0]

    def drop(self) -> None:
        """A job found a newer holder's token: stop committing now, not when our lease runs out."""
        self._held = None

    def release(self, now: datetime) -> None:
        """On shutdown: expire our lease now, so that a standby takes over at its next look."""
        held, self._held = self._held, None
        if held is None:
            return
        state.replace(self._es, self._indices, LEASE_ID, decide.released(held[0], now).to_doc(now), held[1])


def write_job(es: Elasticsearch, indices: Indices, job: str, token: int, holder: str, now: datetime,
              change: Callable[[JobState], JobState], create: bool = True, known: state.Stored | None = None
              ) -> tuple[JobState, state.Stored] | None:
    """Fenced read-modify-write of a job document: refused (LeaseLost) if a newer holder wrote it.

    `known`: the document as the caller last read or wrote it. The write is tried on that version
    first, without a read; if someone wrote since, that write is refused and the document is read.
    """
    if known is not None:
        done = _write_job_on(es, indices, job, token, holder, now, change, known)
        if done is not None:
            return done
    for _ in range(3):
        found = state.read(es, indices, JobState.doc_id(job))
        if found is None and not create:
            return None
        done = _write_job_on(es, indices, job, token, holder, now, change, found)
        if done is not None:
            return done
    raise LeaseLost(f"the {job} job document kept changing under us: another scheduler is writing it")


def _write_job_on(es: Elasticsearch, indices: Indices, job: str, token: int, holder: str, now: datetime,
                  change: Callable[[JobState], JobState], found: state.Stored | None
                  ) -> tuple[JobState, state.Stored] | None:
    """Write `change` applied to `found` (None: create it), conditional on its version; None on a conflict."""
    current = JobState.from_doc(found.doc) if found else JobState(job, token, holder)
    if not decide.may_commit(current.token, token):
        raise LeaseLost(f"the {job} job document carries token {current.token}, ours is {token}: "
                        "another scheduler took over")
    new = replace(change(current), token=token, holder=holder)
    doc = new.to_doc(now)
    if found is None:
        written = state.create(es, indices, JobState.doc_id(job), doc)
    else:
        written = state.replace(es, indices, JobState.doc_id(job), doc, found)
    return (new, written) if written is not None else None


@dataclass(frozen=True)
class JobResult:
    outcome: Outcome
    note: str = ""  # what happened, for the job document and the log (the error when not a success)
    # What the job still moves on its document (the scan's last watermark), written in the same fenced
    # write as the outcome: one request, and nothing happens between the work and that write.
    change: Callable[[JobState], JobState] | None = None


def run_job(es: Elasticsearch, settings: Settings, keeper: Keeper, job: str, body: Callable[[int], JobResult],
            clock: Clock, stop: threading.Event | None = None) -> JobResult | None:
    """Run one job if we hold the lease, and record how it went on its job document (fenced).

    An expected failure (SecmonError: Elasticsearch away, SMTP down) is logged,
    recorded and audited here, and the job runs again at its next time; a bug
    propagates to the scheduler's error listener. `stop`: the scheduler's stop
    request, which ends the lease's renewals (said so when a write is not made).
    """
    token = keeper.holds(clock())
    if token is None:
        return None  # standby: the holder runs it
    indices = indices_of(settings)
    log.info("job %s: started", job)
    try:
        result = body(token)
    except LeaseLost as exc:
        log.warning("job %s: stopped, this scheduler is no longer the active one: %s", job, exc)
        keeper.drop()
        return None
    except SecmonError as exc:
        log.error("job %s failed: %s", job, exc)
        result = JobResult("failure", str(exc))
        try:
            audit(es, indices, "schedule.job_failed", "failure", clock(), {"job": job, "error": str(exc)})
        except StoreUnavailable as again:
            log.error("job %s: could not write the audit trail: %s", job, again)
    log.info("job %s: %s%s", job, result.outcome, f" ({result.note})" if result.note else "")
    record(keeper, job, token, result, clock, stop)
    return result


def record(keeper: Keeper, job: str, token: int, result: JobResult, clock: Clock,
           stop: threading.Event | None = None) -> None:
    """The job's last run on its document; logged, not raised, when Elasticsearch is away."""
    now = clock()
    moves = result.change or (lambda current: current)
    try:
        if keeper.holds(now) != token:
            if result.change is not None:
                log.warning("job %s: %s; the next run does that work again", job,
                            _not_held("its document could be written", stop))
            return
        keeper.commit(job, token, now,
                      lambda current: replace(moves(current), outcome=result.outcome, ran_at=now, error=result.note))
    except LeaseLost as exc:
        log.warning("job %s: outcome not recorded: %s", job, exc)
        keeper.drop()
    except StoreUnavailable as exc:
        log.error("job %s: outcome not recorded: %s", job, exc)


# --- job bodies: each takes our fencing token and returns how it went -----------------------------

def scan_due(es: Elasticsearch, settings: Settings, keeper: Keeper, token: int, clock: Clock,
             stop: threading.Event, scan_flow: ScanFlow = scan) -> JobResult:
    """Scan what was ingested since the watermark, in chunks, oldest first; move the watermark after each.

    A chunk that raises leaves the watermark where it was (the next run does it
    again: its incidents and alerts have deterministic ids). A chunk in which no
    rule ran proves nothing about its events and does not move it either. The
    last chunk's move is returned in the result (`change`), so that `run_job`
    writes it with the run's outcome in one request; an earlier chunk's is written
    before the next chunk starts, so that a chunk that raises keeps the chunks before it.
    """
    indices = indices_of(settings)
    schedule = settings.schedule
    found = keeper.seen("scan") or state.read(es, indices, JobState.doc_id("scan"))
    keeper.saw("scan", found)
    mark = JobState.from_doc(found.doc) if found else None
    if mark is not None and not decide.may_commit(mark.token, token):
        raise LeaseLost(f"the scan watermark carries token {mark.token}, ours is {token}")
    if mark is None or mark.value is None:
        # The first run starts a look-back ago. Write that down before scanning: a crash in the
        # first chunk must not let the next run start its own look-back later, past unscanned events.
        first = clock() - parse_duration(schedule.lookback)
        mark = keeper.commit("scan", token, clock(), lambda current: replace(current, value=first))
    assert mark is not None
    windows = decide.chunks(mark.value, clock(), parse_duration(schedule.lookback),
                            parse_duration(schedule.ingest_delay), parse_duration(schedule.max_chunk))
    done, failed_rules = 0, 0
    scanned: Callable[[JobState], JobState] | None = None  # the move of the last chunk, not written yet
    stopped = False
    for start, end in windows:
        if stop.is_set() or keeper.holds(clock()) != token:
            stopped = stop.is_set()
            break
        if scanned is not None:
            _commit(keeper, token, scanned, clock, stop)
            scanned = None
        log.info("scan: events ingested in [%s, %s)", iso(start), iso(end))
        # What reached the node before the chunk's end is searchable now: the refresh interval
        # (1 s) does not eat into ingest_delay, which is left for bulks still in flight.
        refresh_events(es, indices)
        options = ScanOptions(start, end, field="event.ingested", deliver=False, trigger="scheduler")
        summary = scan_flow(es, settings, options, clock())
        if summary.rules_run == 0:
            problems = "; ".join(f"{where}: {why}" for where, why in summary.rules_failed[:3])
            return JobResult("failure", f"no rule ran, the watermark stays at {iso(start)}"
                                        + (f" ({problems})" if problems else ""))
        failed_rules += len(summary.rules_failed)
        scanned = _moved_to(end, clock())
        done += 1
    note = f"{done} chunks scanned" if done else "nothing new to scan"
    if stopped:
        note += "; secmon was stopped (SIGTERM/SIGINT) before the rest"
    if failed_rules:
        return JobResult("partial", f"{note}; {failed_rules} rule failures (secmon status lists them)", scanned)
    return JobResult("success", note, scanned)


def _moved_to(end: datetime, now: datetime) -> Callable[[JobState], JobState]:
    return lambda current: replace(current, value=end, lag_seconds=round((now - end).total_seconds(), 3))


def _commit(keeper: Keeper, token: int, change: Callable[[JobState], JobState], clock: Clock,
            stop: threading.Event) -> None:
    now = clock()
    if keeper.holds(now) != token:
        raise LeaseLost(f"{_not_held('the watermark could move', stop)}; the next active scheduler scans "
                        "that chunk again")
    keeper.commit("scan", token, now, change)


def _not_held(what: str, stop: threading.Event | None) -> str:
    """Why this instance no longer holds its lease when a job comes to write: it was stopped (a stop
    ends the renewals, then releases the lease), or the lease lapsed (not renewed in time)."""
    if stop is not None and stop.is_set():
        return f"secmon was stopped (SIGTERM/SIGINT) before {what}: its lease is no longer renewed"
    return f"the lease lapsed before {what}"


def deliver_due(es: Elasticsearch, settings: Settings, clock: Clock) -> JobResult:
    report = deliver(es, settings, clock())
    return _outcome(f"sent {report.sent}, still queued {report.pending}, given up {report.failed}", report.errors)


def digests_due(es: Elasticsearch, settings: Settings, clock: Clock) -> JobResult:
    report = daily_digests(es, settings, clock())
    return _outcome(f"{report.queued} daily digests queued ({report.already} already) for "
                    f"{', '.join(report.agencies) or '-'}", report.errors)


def _outcome(note: str, errors: tuple[str, ...]) -> JobResult:
    """success, or partial with the first errors said: a job that half worked never looks clean."""
    return JobResult("partial", f"{note}; {'; '.join(errors[:3])}") if errors else JobResult("success", note)


def retention_due(es: Elasticsearch, settings: Settings, clock: Clock) -> JobResult:
    deleted = retention(es, settings, clock())
    return JobResult("success", f"deleted {len(deleted)} event indices" + (f": {', '.join(deleted)}" if deleted else ""))


def retrain_due(es: Elasticsearch, settings: Settings, keeper: Keeper, token: int, clock: Clock,
                train_flow: TrainFlow = retrain, stop: threading.Event | None = None) -> JobResult:
    """Retrain every detector's models over its baseline, when the last training is a
    `schedule.retrain_interval` old.

    When the models were last trained is on the job document (`value`), not in memory: a restart or
    a takeover does not retrain models that are still fresh. Models have deterministic ids (detector
    and agency), so a training that a stale instance finishes only rewrites equivalent documents; the
    fenced write of `value` is what it is kept from.
    """
    indices = indices_of(settings)
    interval = parse_duration(settings.schedule.retrain_interval)
    found = keeper.seen("retrain") or state.read(es, indices, JobState.doc_id("retrain"))
    keeper.saw("retrain", found)
    last = JobState.from_doc(found.doc) if found else None
    if last is not None and not decide.may_commit(last.token, token):
        raise LeaseLost(f"the retrain job document carries token {last.token}, ours is {token}")
    now = clock()
    if last is not None and last.value is not None and now - last.value < interval * DUE_SHARE:
        return JobResult("success", f"models trained at {iso(last.value)} are fresh; next training after "
                                    f"{iso(last.value + interval)}")
    report = train_flow(es, settings, now)
    if keeper.holds(clock()) != token:
        if stop is not None and stop.is_set():  # a stop ends the lease's renewals, then releases it
            return JobResult("partial", "secmon was stopped (SIGTERM/SIGINT) while the models were trained: "
                                        "they are stored, the time of the training is not; the next active "
                                        "scheduler trains them again")
        raise LeaseLost("the lease lapsed while the models were trained")
    keeper.commit("retrain", token, clock(), lambda current: replace(current, value=now))
    outcomes = Counter(r.outcome for r in report.results)
    note = (f"{outcomes['trained']} models trained, {outcomes['skipped']} skipped, {outcomes['failed']} failed"
            + (f", {len(report.problems)} detector files did not load" if report.problems else ""))
    if report.failed:
        why = [f"{r.detector}:{r.agency}: {r.reason}" for r in report.results if r.outcome == "failed"]
        why += [f"{where}: {reason}" for where, reason in report.problems]
        return JobResult("partial", f"{note}; {'; '.join(why[:3])}")
    return JobResult("success", note)
