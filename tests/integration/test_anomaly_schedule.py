"""The scheduler and the anomaly models on the real node: `secmon run` trains the models at start (its
retrain job), then its scans score the windows of newly ingested events into an explained incident that
is emailed; the retrain job retrains when due (the time of the last training is on its job document, so
a restart does not retrain fresh models) and is fenced like the other jobs."""

from __future__ import annotations

import shutil
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from secmon.config import Settings, load_settings
from secmon.errors import LeaseLost
from secmon.lease import JobState
from secmon.service import run as jobs
from secmon.service.common import indices_of, setup
from tests.conftest import ROOT, run_cli
from tests.integration.unattended import AGENCY, RULE, config_text, wait_until

pytestmark = [pytest.mark.integration]

DETECTOR = ROOT / "rules" / "anomaly" / "ssh-auth-per-source.yml"
ATTACKER = "203.0.113.50"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
BASE = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=12)  # ten normal hours, then the attack


def normal_hour(hour: int) -> list[tuple[datetime, str]]:
    """Eight staff members log in from their own address, some after a mistyped password."""
    out = []
    for i in range(1, 9):
        at = BASE + timedelta(hours=hour, minutes=5 * i)
        if (hour + i) % 3 == 0:
            out.append((at, f"Failed password for user{i} from 10.0.0.{i} port {4000 + i} ssh2"))
        out.append((at + timedelta(seconds=20), f"Accepted password for user{i} from 10.0.0.{i} port {4100 + i} ssh2"))
    return out


def attack_hour(hour: int) -> list[tuple[datetime, str]]:
    """Forty user names tried from one address, one every 80 s (too slow for the brute-force rule)."""
    return [(BASE + timedelta(hours=hour, seconds=80 * n),
             f"Failed password for invalid user guess{n} from {ATTACKER} port {50000 + n} ssh2") for n in range(40)]


def collect(config: Path, name: str, events: list[tuple[datetime, str]]) -> None:
    log = config.parent / f"{name}.log"
    log.write_text("".join(f"{at.isoformat()} web1 sshd[{1000 + n}]: {text}\n"
                           for n, (at, text) in enumerate(sorted(events))), encoding="utf-8")
    code, out, err = run_cli("-c", str(config), "collect", str(log), "-a", AGENCY, "-s", "linux-auth")
    assert code == 0 and f"{len(events)} events shipped" in out, (out, err)


@pytest.fixture
def config(tmp_path: Path, es_url: str, prefix: str, smtp: Any) -> Path:
    _, port, _ = smtp
    rules = tmp_path / "rules"
    (rules / "anomaly").mkdir(parents=True)
    shutil.copy(RULE, rules / RULE.name)
    shutil.copy(DETECTOR, rules / "anomaly" / DETECTOR.name)
    text = config_text(es_url, prefix, port, rules=(rules,), lookback="4s", max_chunk="1h")
    path = tmp_path / "secmon.yml"
    path.write_text(text.replace("schedule:\n", "schedule:\n  retrain_interval: 1h\n"), encoding="utf-8")
    return path


# The polls below may run while the scheduler creates an index: absent (404) or its shard not yet
# started (503) both read as "not yet".
def model_doc(es: Any, settings: Settings, ident: str) -> dict[str, Any] | None:
    found = es.options(ignore_status=(404, 503)).get(index=indices_of(settings).models, id=ident)
    return found["_source"] if found.get("found") else None  # type: ignore[no-any-return]


def trained_at(es: Any, settings: Settings) -> datetime | None:
    """When the retrain job last trained (written after the training and its audit)."""
    found = es.options(ignore_status=(404, 503)).get(index=indices_of(settings).state, id=JobState.doc_id("retrain"))
    return JobState.from_doc(found["_source"]).value if found.get("found") else None


def trainings(es: Any, settings: Settings) -> list[dict[str, Any]]:
    index = indices_of(settings).audit
    es.indices.refresh(index=index)
    hits = es.search(index=index, query={"term": {"event.action": "model-train"}}, size=100)["hits"]["hits"]
    return [hit["_source"]["secmon"]["details"] for hit in hits]


def anomaly_incidents(es: Any, settings: Settings) -> list[dict[str, Any]]:
    index = indices_of(settings).incidents
    quiet = es.options(ignore_status=(404, 503))
    quiet.indices.refresh(index=index, ignore_unavailable=True)
    found = quiet.search(index=index, query={"term": {"secmon.detector": "anomaly"}}, size=100)
    return [hit["_source"] for hit in found.get("hits", {}).get("hits", [])]


def test_the_scheduler_trains_at_start_then_its_scans_score_new_events_into_an_emailed_incident(
        config: Path, es: Any, smtp: Any) -> None:
    from secmon.scheduler import run as run_scheduler

    _, _, mailbox = smtp
    settings = load_settings(config)
    setup(es, settings, NOW)
    collect(config, "baseline", [e for hour in range(10) for e in normal_hour(hour)])
    stop = threading.Event()
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(run_scheduler(es, settings, stop)), daemon=True)
    thread.start()
    try:
        wait_until(lambda: trained_at(es, settings) is not None, 120,
                   lambda: f"the scheduler trained no model; audit: {trainings(es, settings)}")
        assert model_doc(es, settings, "ssh-auth-per-source:so-tttt") is not None
        assert [t["trigger"] for t in trainings(es, settings)] == ["scheduler"]
        collect(config, "attack", attack_hour(10))  # ingested now, so the next scheduled scan covers it

        def emailed() -> list[str]:
            return [m.get_body(("plain",)).get_content() for m in mailbox.messages
                    if ATTACKER in m.get_body(("plain",)).get_content()]

        wait_until(lambda: bool(emailed()), 120,
                   lambda: f"no email about {ATTACKER}; anomaly incidents: "
                           f"{[i['secmon']['group'] for i in anomaly_incidents(es, settings)]}, "
                           f"{len(mailbox.messages)} emails")
    finally:
        stop.set()
        thread.join(60)
    assert done and not thread.is_alive()
    found = [i for i in anomaly_incidents(es, settings) if f"source.address={ATTACKER}" in i["secmon"]["group"]]
    assert len(found) == 1, found
    explanation = found[0]["secmon"]["explanation"]
    assert explanation["model"] == "ssh-auth-per-source:so-tttt" and explanation["score"] > explanation["threshold"]
    body = emailed()[0]
    assert "Vì sao bất thường" in body and "giá trị chưa từng thấy ở new_users: guess" in body, body
    # One training in the whole run: the retrain interval (1h) had not come round again.
    assert [t["trigger"] for t in trainings(es, settings)] == ["scheduler"]
    state = JobState.from_doc(es.get(index=indices_of(settings).state, id=JobState.doc_id("retrain"))["_source"])
    assert state.outcome == "success" and state.value is not None, state


def test_the_retrain_job_retrains_when_due_not_at_a_restart_and_only_with_the_lease(
        config: Path, es: Any) -> None:
    settings = load_settings(config)
    setup(es, settings, NOW)
    collect(config, "baseline", [e for hour in range(10) for e in normal_hour(hour)])
    ident = "ssh-auth-per-source:so-tttt"
    keeper = jobs.Keeper(es, settings, me="a")

    def token(at: datetime) -> int:
        assert keeper.keep(at).active
        held = keeper.holds(at)
        assert held is not None
        return held

    first = jobs.retrain_due(es, settings, keeper, token(NOW), lambda: NOW)
    assert first.outcome == "success" and "models trained" in first.note, first
    trained = model_doc(es, settings, ident)
    assert trained is not None

    soon = NOW + timedelta(minutes=5)  # a restart soon after: the models are fresh
    again = jobs.retrain_due(es, settings, keeper, token(soon), lambda: soon)
    assert "are fresh" in again.note, again
    assert model_doc(es, settings, ident) == trained

    later = NOW + timedelta(hours=1)  # the periodic run, an interval on
    ours = token(later)
    third = jobs.retrain_due(es, settings, keeper, ours, lambda: later)
    assert "models trained" in third.note, third
    retrained = model_doc(es, settings, ident)
    assert retrained is not None and retrained != trained
    assert [t["trigger"] for t in trainings(es, settings)] == ["scheduler", "scheduler"]

    # Another instance takes over: the one it replaced can no longer record a training.
    other = jobs.Keeper(es, settings, me="b")
    takeover = later + timedelta(minutes=1)
    assert other.keep(takeover).active
    with pytest.raises(LeaseLost):
        jobs.retrain_due(es, settings, keeper, ours, lambda: takeover + timedelta(hours=2))
    stored = JobState.from_doc(es.get(index=indices_of(settings).state, id=JobState.doc_id("retrain"))["_source"])
    assert stored.value == later and stored.token == other.holds(takeover)


def test_a_stop_during_a_retrain_is_said_as_a_stop_not_as_a_lapsed_lease(config: Path, es: Any) -> None:
    from secmon.service.train import TrainReport

    settings = load_settings(config)
    setup(es, settings, NOW)
    keeper = jobs.Keeper(es, settings, me="a")
    assert keeper.keep(NOW).active
    stop = threading.Event()

    def stopped_meanwhile(es: Any, settings: Settings, now: datetime) -> TrainReport:
        stop.set()  # SIGTERM while training: the scheduler stops renewing, then releases the lease
        keeper.release(now)
        return TrainReport((), ())

    result = jobs.run_job(es, settings, keeper, "retrain", lambda token: jobs.retrain_due(
        es, settings, keeper, token, lambda: NOW, stopped_meanwhile, stop=stop), lambda: NOW)
    assert result is not None and result.outcome == "partial", result
    assert "stopped (SIGTERM/SIGINT) while the models were trained" in result.note and "lapsed" not in result.note
    # without a stop, the same lapse is still another scheduler's business
    assert keeper.keep(NOW).active
    with pytest.raises(LeaseLost, match="lapsed"):
        jobs.retrain_due(es, settings, keeper, keeper.holds(NOW) or 0, lambda: NOW,
                         lambda es, s, now: (keeper.release(now), TrainReport((), ()))[1])
