"""`kill -9` during the delivery of 250 alerts: the real `secmon deliver` process, a real node, a real
(slow-ish) SMTP server. Every alert arrives; at most the one message in flight per kill arrives twice,
and then with the same Message-ID."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import timedelta

import pytest

from secmon.alert.dispatch import deliver_pending
from secmon.alert.outbox import enqueue
from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from secmon.types import utcnow
from tests.conftest import ROOT
from tests.integration.alerting import Switchboard, notification, smtp_server, write_settings

pytestmark = pytest.mark.integration

ALERTS = 250
KILLS = 3


def test_kill_9_during_delivery_resends_at_most_the_message_in_flight(tmp_path, es, es_url, prefix) -> None:  # type: ignore[no-untyped-def]
    indices = Indices(prefix)
    install_templates(es, indices)
    board = Switchboard(delay=0.01)  # a few ms per message, so each kill lands mid-run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with smtp_server(board) as port:
        settings = write_settings(tmp_path / "secmon.yml", es_url, prefix, port)
        now = utcnow()
        assert enqueue(es, indices, settings, [notification("agency-a", host=f"h{i}") for i in range(ALERTS)],
                       now).queued == ALERTS
        for kill in range(KILLS):
            target = board.count() + 30
            process = subprocess.Popen([sys.executable, "-m", "secmon", "-c", str(tmp_path / "secmon.yml"), "deliver"],
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 120
            while board.count() < target:
                if process.poll() is not None:
                    out, err = process.communicate()
                    pytest.fail(f"kill {kill}: deliver ended (exit {process.returncode}) after {board.count()} "
                                f"messages, before the kill:\n{out}\n{err}")
                if time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"kill {kill}: only {board.count()} of {target} messages after 120 s: "
                                f"{process.communicate()[1]}")
                time.sleep(0.005)
            process.kill()  # SIGKILL: no cleanup, no last outcome written
            process.communicate()
        assert board.count() < ALERTS, "the kills did not land mid-run"
        # The next run, once the killed claims' deadlines have passed (the clock is injected: no waiting).
        report = deliver_pending(es, indices, settings, utcnow() + timedelta(minutes=10))
        assert report.pending == report.failed == 0, report
    by_id = board.by_message_id()
    assert len(by_id) == ALERTS, f"{ALERTS - len(by_id)} alerts never arrived"
    duplicates = {m: n for m, n in by_id.items() if n > 1}
    assert len(duplicates) <= KILLS and set(duplicates.values()) <= {2}, duplicates
    # A duplicate is the same email again: every (recipient, incident) has exactly one Message-ID.
    ids = defaultdict(set)
    for received in board.received:
        ids[(received.rcpt, received.message["X-Secmon-Incident"])].add(str(received.message["Message-ID"]))
    assert len(ids) == ALERTS and all(len(v) == 1 for v in ids.values())
    es.indices.refresh(index=indices.alerts)
    statuses = Counter(h["_source"]["secmon"]["status"] for h in es.search(index=indices.alerts, size=1000)["hits"]["hits"])
    assert statuses == {"sent": ALERTS}
