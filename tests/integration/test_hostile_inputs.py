"""Inputs that cannot break the collector (issue 9, items 1, 2, 3, 4, 6, 7, 8, 9, 13, 15), on the real node.

Each test shows the input, what is indexed, what is in the dead-letter index, what the
CLI says, and that the collector went on past the bad record.
"""

from __future__ import annotations

import json
import random
import string
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port, run_cli, write_config
from tests.integration.test_collect_crash import AGENCY, checkpoint, make_log, secmon, wait_for_count

pytestmark = [pytest.mark.integration]

MIB = 1 << 20


def config_with(tmp_path: Path, es_url: str, prefix: str, agency: str = "") -> str:
    """The test config, with the agency's time window as in production (retention 365d, future skew 1d)."""
    extra = agency or "  - {id: recent, name: Recent only, language: en, recipients: [r@recent.example]}\n"
    path = write_config(tmp_path / "secmon.yml", es_url, prefix, free_port())
    text = path.read_text().replace("smtp:\n", extra + "smtp:\n", 1)
    path.write_text(text)
    return str(path)


def dead_letters(es, prefix: str, agency: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    index = f"{prefix}-deadletter-{agency}"
    es.indices.refresh(index=index, ignore_unavailable=True)
    hits = es.search(index=index, size=1000, sort=[{"secmon.offset": "asc"}], ignore_unavailable=True)
    return [h["_source"] for h in hits["hits"]["hits"]]


def originals(es, prefix: str, agency: str) -> list[str]:  # type: ignore[no-untyped-def]
    index = f"{prefix}-events-{agency}-*"
    es.indices.refresh(index=index, ignore_unavailable=True)
    hits = es.search(index=index, size=10_000, source=["event.original"], ignore_unavailable=True)
    return sorted(h["_source"]["event"]["original"] for h in hits["hits"]["hits"])


def real_auth(datasets: Path, count: int, first: int = 0) -> list[str]:
    lines = (datasets / "loghub_linux_full" / "Linux" / "Linux.log").read_text(errors="replace").splitlines()
    return [line for line in lines if "sshd" in line][first:first + count]


# --- item 1: oversized lines -------------------------------------------------------------------------------

@pytest.mark.dataset
def test_a_line_over_the_cap_is_a_dead_letter_with_its_head_and_length(tmp_path, es, es_url, prefix,  # type: ignore[no-untyped-def]
                                                                      datasets) -> None:
    before, after = real_auth(datasets, 3), real_auth(datasets, 3, first=3)
    long = before[0] + " " + "A" * (3 * MIB)  # 3 MiB: over the default cap of 1 MiB
    log = tmp_path / "auth.log"
    log.write_text("\n".join(before + [long] + after) + "\n")
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    code, out, err = run_cli("-c", config, "collect", str(log), "-a", AGENCY, "-s", "linux-auth", "--year", "2005",
                             "--state", str(tmp_path / "state"))
    assert code == 0, err
    assert out.strip() == f"{log}: 6 events shipped, 1 dead-lettered, 0 skipped"
    assert originals(es, prefix, AGENCY) == sorted(before + after)  # the collector went on past it
    [letter] = dead_letters(es, prefix, AGENCY)
    offset = sum(len(line) + 1 for line in before)
    assert letter["secmon"] == {"pipeline": "linux-auth", "source": str(log), "offset": offset,
                                "length": len(long) + 1}
    assert letter["event"]["original"] == (long + "\n")[:64 << 10]  # the head: the first 64 KiB
    assert "longer than the limit of 1048576 bytes" in letter["error"]["message"]
    assert checkpoint(tmp_path / "state") == log.stat().st_size  # the checkpoint moved past it


@pytest.mark.dataset
def test_follow_reads_on_past_a_line_longer_than_its_read_window(tmp_path, es, es_url, prefix, datasets  # type: ignore[no-untyped-def]
                                                                 ) -> None:
    log = tmp_path / "auth.log"
    config = write_config(tmp_path / "secmon.yml", es_url, prefix, free_port())
    first = make_log(datasets, log, 50)
    follower = secmon(config, "collect", "--follow", str(log), "-a", AGENCY, "-s", "linux-auth", "--year", "2005",
                      "--state", str(tmp_path / "state"), "--batch-wait", "0.1")
    index = f"{prefix}-events-*,{prefix}-deadletter-*"
    try:
        assert wait_for_count(es, index, 50, 60, follower) == 50
        with log.open("a") as handle:  # 5 MiB without a newline, written in pieces: the old follower
            for _ in range(5):          # stopped here for good (its window was 4 MiB)
                handle.write("B" * MIB)
                handle.flush()
                time.sleep(0.2)
            handle.write("\n")
        rest = make_log(datasets, log, 50, first=50)
        assert wait_for_count(es, index, 101, 60, follower) == 101
    finally:
        follower.terminate()
        out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err.decode()
    assert originals(es, prefix, AGENCY) == sorted(line.rstrip("\n") for line in first + rest)
    [letter] = dead_letters(es, prefix, AGENCY)
    assert letter["secmon"]["length"] == 5 * MIB + 1 and letter["event"]["original"] == "B" * (64 << 10)
    assert b"1 dead-lettered" in out
    assert checkpoint(tmp_path / "state") == log.stat().st_size


# --- item 2 and 4: impossible timestamps, and the time window that bounds the indices ----------------------

def winjson(stamp: Any, event_id: int = 4624, host: str = "WS1", **data: Any) -> str:
    return json.dumps({"EventID": event_id, "Channel": "Security", "Hostname": host, "SourceName":
                       "Microsoft-Windows-Security-Auditing", "TimeCreated": stamp, **data})


def test_impossible_and_out_of_window_times_are_dead_letters_and_make_no_index(tmp_path, es, es_url, prefix  # type: ignore[no-untyped-def]
                                                                               ) -> None:
    now = datetime.now(timezone.utc)
    good = [winjson((now - timedelta(hours=i)).strftime("%Y-%m-%d %H:%M:%S"), host=f"ok{i}") for i in range(3)]
    bad = {
        winjson("0001-01-01T00:00:00+01:00"): "not a time Python can represent",
        winjson("9999-12-31T23:59:59-01:00"): "not a time Python can represent",
        winjson("1603-01-01 00:00:00"): "older than the agency's retention (365d",
        winjson((now - timedelta(days=400)).strftime("%Y-%m-%d %H:%M:%S")): "older than the agency's retention",
        winjson((now + timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")): "more than 1d ahead of now",
        winjson("2999-06-01 00:00:00"): "more than 1d ahead of now",
    }
    log = tmp_path / "events.json"
    log.write_text("\n".join([good[0], *bad, *good[1:]]) + "\n")
    config = config_with(tmp_path, es_url, prefix)
    code, out, err = run_cli("-c", config, "collect", str(log), "-a", "recent", "-s", "windows-json")
    assert code == 0 and "Traceback" not in err, err
    assert out.strip() == f"{log}: 3 events shipped, 6 dead-lettered, 0 skipped"
    assert originals(es, prefix, "recent") == sorted(good)
    letters = dead_letters(es, prefix, "recent")
    assert [d["event"]["original"] for d in letters] == list(bad)
    for letter, reason in zip(letters, bad.values()):
        assert reason in letter["error"]["message"] and letter["secmon"]["source"] == str(log)
    # No index for a month outside the window: only this month (and the last, early on the 1st).
    months = {f"{prefix}-events-recent-{(now - timedelta(hours=h)):%Y.%m}" for h in range(3)}
    assert set(es.indices.get(index=f"{prefix}-events-*")) == months


@pytest.mark.parametrize("args", [["scan", "--from", "0001-01-01"], ["scan", "--last", "999999999d"],
                                  ["scan", "--from", "2005-01-01", "--to", "9999-12-31T23:59:59-01:00"]])
def test_out_of_range_scan_windows_are_one_line(tmp_path, es_url, args) -> None:  # type: ignore[no-untyped-def]
    config = str(write_config(tmp_path / "secmon.yml", es_url, "unused", free_port()))
    code, out, err = run_cli("-c", config, *args)
    assert code == 2 and "Traceback" not in err and "outside the times" in err or "longer than" in err, err


def test_hostile_json_offline_is_one_line_or_a_note(tmp_path) -> None:  # type: ignore[no-untyped-def]
    deep = tmp_path / "deep.json"
    deep.write_text('{"a":' * 5000 + "1" + "}" * 5000 + "\n")
    code, out, err = run_cli("scan", "--input", str(deep), "--rules", str(ROOT / "rules" / "windows"))
    assert code == 4 and err.strip() == f"secmon: error: {deep}:1: a JSON record nested too deeply to read", err
    odd = tmp_path / "odd.json"  # shapes a flattener cannot take, and a list nested 900 deep: counted, said
    odd.write_text('{"Event": 5}\n' + '{"EventID": 1, "Channel": "Security", "x": ' + "[" * 900 + "]" * 900 + "}\n"
                   + winjson("2020-01-01 00:00:00", 1102) + "\n")
    code, out, err = run_cli("scan", "--input", str(odd), "--rules", str(ROOT / "rules" / "windows"))
    assert code == 0 and "Traceback" not in err, err
    assert "note: 2 records could not be read; first: " in out and "incidents: 1" in out


# --- items 3 and 4: mappings and indices that cannot explode ------------------------------------------------

def random_key(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters) for _ in range(12))


def test_thousands_of_made_up_fields_leave_real_events_indexed_and_detected(tmp_path, es, es_url, prefix  # type: ignore[no-untyped-def]
                                                                            ) -> None:
    rng = random.Random(9)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    stamp = (now - timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M:%S")
    noise = [winjson(stamp, 4624, host=f"n{i}", **{random_key(rng): "x" for _ in range(3)}) for i in range(2000)]
    spread = [winjson(f"{rng.randint(1971, 2998)}-{rng.randint(1, 12):02d}-01 00:00:00", 4624) for _ in range(300)]
    real = winjson(now.strftime("%Y-%m-%d %H:%M:%S"), 1102, host="victim", SubjectUserName="mallory")
    log = tmp_path / "events.json"
    log.write_text("\n".join(noise + spread + [real]) + "\n")
    config = config_with(tmp_path, es_url, prefix)
    code, out, err = run_cli("-c", config, "collect", str(log), "-a", "recent", "-s", "windows-json")
    assert code == 0, err
    shipped = int(out.split(": ")[1].split()[0])
    dead = int(out.split("shipped, ")[1].split()[0])
    assert shipped + dead == len(noise) + len(spread) + 1 and shipped >= len(noise) + 1
    assert "refused by Elasticsearch" not in out  # 6,000 new field names and not one event refused
    # The made-up fields filled the index up to its bound, not past it; the rest are kept in _source.
    indices = es.indices.get(index=f"{prefix}-events-recent-*")
    assert len(indices) <= 14  # 300 events over 1,000 years: only months inside retention and skew got one
    for name, index in indices.items():
        limit = int(index["settings"]["index"]["mapping"]["total_fields"]["limit"])
        fields = es.indices.get_mapping(index=name)[name]["mappings"]
        assert count_fields(fields["properties"]) <= limit
    # The real event of the same month: indexed, and the rule fires on it.
    hit = es.search(index=f"{prefix}-events-recent-*", query={"term": {"winlog.event_id": "1102"}})["hits"]
    assert hit["total"]["value"] == 1
    code, out, err = run_cli("-c", config, "scan", "--from", (now - timedelta(hours=1)).isoformat(),
                             "--to", (now + timedelta(minutes=5)).isoformat(), "--rules",
                             str(ROOT / "rules" / "windows" / "security-audit-log-cleared.yml"), "--no-deliver",
                             "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert [i["finding"]["rule_title"] for i in summary["incidents"]] == ["Security audit log cleared"]
    assert summary["incidents"][0]["finding"]["group"] == [["host.name", "victim"]]


def count_fields(properties: dict[str, Any]) -> int:
    """Fields as Elasticsearch counts them against index.mapping.total_fields.limit (objects included)."""
    total = 0
    for spec in properties.values():
        total += 1 + len(spec.get("fields", {}))
        if "properties" in spec:
            total += count_fields(spec["properties"])
    return total


# --- item 6: a request refused for its size -----------------------------------------------------------------

@pytest.mark.dataset
def test_a_request_too_large_is_split_and_its_document_dead_lettered(tmp_path, es, es_url, prefix, datasets  # type: ignore[no-untyped-def]
                                                                     ) -> None:
    before, after = real_auth(datasets, 2), real_auth(datasets, 2, first=2)
    # 9 MiB of control characters: JSON writes each as \u0001 (6 bytes), twice (message, event.original):
    # over the node's http.max_content_length (100 MB) alone, the 413 the issue met.
    huge = before[0] + " " + "\x01" * (9 * MIB)
    log = tmp_path / "auth.log"
    log.write_text("\n".join(before + [huge] + after) + "\n")
    state = tmp_path / "state"
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    args = ["-c", config, "collect", str(log), "-a", AGENCY, "-s", "linux-auth", "--year", "2005",
            "--state", str(state), "--max-line", str(16 << 10), "--batch-size", "3"]
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert out.strip() == f"{log}: 4 events shipped, 1 dead-lettered, 0 skipped (1 of them refused by Elasticsearch)"
    assert originals(es, prefix, AGENCY) == sorted(before + after)
    [letter] = dead_letters(es, prefix, AGENCY)
    assert "413 Request Entity Too Large" in letter["error"]["message"]
    assert letter["secmon"] == {"pipeline": "linux-auth", "source": str(log),
                                "offset": sum(len(line) + 1 for line in before), "length": len(huge)}
    # Nothing waits in the spool, the checkpoint is past the line, and the next run has nothing to retry.
    assert not list((state / f"{AGENCY}-linux-auth.spool").glob("*.ndjson"))
    assert checkpoint(state) == log.stat().st_size
    with log.open("a") as handle:
        handle.write("\n".join(real_auth(datasets, 2, first=10)) + "\n")
    code, out, err = run_cli(*args)
    assert code == 0 and out.strip() == f"{log}: 2 events shipped, 0 dead-lettered, 0 skipped", err


# --- item 7: a small file keeps its identity as it grows ----------------------------------------------------

FAILURE = "Jun 14 15:16:0{} combo sshd(pam_unix)[1993{}]: authentication failure; logname= uid=0 euid=0 " \
          "tty=NODEVssh ruser= rhost=218.188.2.4  user=root"


def test_a_small_file_that_grows_is_not_collected_twice(tmp_path, es, es_url, prefix) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "auth.log"
    lines = [FAILURE.format(i, i) for i in range(6)]
    log.write_text("\n".join(lines) + "\n")
    assert log.stat().st_size < 1024
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    args = ("-c", config, "collect", str(log), "-a", AGENCY, "-s", "linux-auth", "--year", "2005")
    assert run_cli(*args)[0] == 0
    more = [FAILURE.format(i, i + 10).replace("15:16", "15:17") for i in range(10)]
    with log.open("a") as handle:  # past a KiB now: the fingerprint of the first KiB would have changed
        handle.write("\n".join(more) + "\n")
    code, out, err = run_cli(*args)
    assert code == 0 and out.strip() == f"{log}: 16 events shipped, 0 dead-lettered, 0 skipped", err
    assert originals(es, prefix, AGENCY) == sorted(lines + more)  # 16, not 22: the first six kept their ids
    # With a state folder: a copy of it (same content, another inode) resumes at its checkpoint.
    state = ["--state", str(tmp_path / "state")]
    assert run_cli(*args, *state)[0] == 0
    copy = tmp_path / "auth.log.1"
    copy.write_bytes(log.read_bytes())
    code, out, err = run_cli("-c", config, "collect", str(copy), "-a", AGENCY, "-s", "linux-auth", "--year", "2005",
                             *state)
    assert code == 0 and out.strip() == f"{copy}: 0 events shipped, 0 dead-lettered, 0 skipped", err
    assert len(originals(es, prefix, AGENCY)) == 16


# --- item 8: a damaged EVTX file -----------------------------------------------------------------------------

@pytest.mark.dataset
def test_a_damaged_evtx_file_names_what_it_lost_and_exits_4(tmp_path, es, es_url, prefix, datasets) -> None:  # type: ignore[no-untyped-def]
    source = datasets / "evtx_attack_samples" / "evtx" / "AutomatedTestingTools" / \
        "panache_sysmon_vs_EDRTestingScript.evtx"
    damaged = bytearray(source.read_bytes())
    damaged[4096 + 512:4096 + 576] = bytes(64)  # 64 zero bytes where the first chunk's records start
    path = tmp_path / "damaged.evtx"
    path.write_bytes(bytes(damaged))
    intact = sorted((datasets / "evtx_attack_samples" / "evtx" / "Execution").rglob("*.evtx"))[0]
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    code, out, err = run_cli("-c", config, "collect", str(path), str(intact), "-a", AGENCY, "-s", "windows-evtx")
    assert code == 4, (out, err)
    assert f"{path}: 84 events shipped, 1 dead-lettered, 0 skipped" in out
    assert f"{intact}: " in out and f"{intact}: 0 events" not in out  # the collector went on to the next file
    assert err.strip() == (f"secmon: warning: {path}: 38 events could not be read (the data is damaged); "
                           f"the dead-letter index names each stretch that was lost")
    [letter] = dead_letters(es, prefix, AGENCY)
    assert letter["error"]["message"].startswith("EVTX records 1-38 could not be read (38 events lost)")
    assert letter["secmon"]["source"] == str(path)
    es.indices.refresh(index=f"{prefix}-events-*")  # whatever could be read was shipped: 84 + the other file's
    shipped = sum(int(line.split(": ")[1].split()[0]) for line in out.splitlines())
    assert es.count(index=f"{prefix}-events-*")["count"] == shipped


# --- item 9: refusals counted once, with their origin -------------------------------------------------------

def test_events_elasticsearch_refuses_are_counted_once_and_name_file_and_offset(tmp_path, es, es_url, prefix  # type: ignore[no-untyped-def]
                                                                                ) -> None:
    def alert(signature: Any) -> str:
        return json.dumps({"timestamp": "2022-07-11T06:09:52.602489+0000", "event_type": "alert",
                           "src_ip": "1.2.3.7", "dest_ip": "10.0.0.1", "alert": {"signature": signature,
                                                                                    "severity": 1}})
    lines = [alert("ET EXPLOIT one"), alert({"nested": "object"}), "{not json", alert("ET EXPLOIT two"),
             alert({"another": {"object": 1}})]
    log = tmp_path / "eve.json"
    log.write_text("\n".join(lines) + "\n")
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    code, out, err = run_cli("-c", config, "collect", str(log), "-a", AGENCY, "-s", "suricata-eve")
    assert code == 0, err
    assert out.strip() == f"{log}: 2 events shipped, 3 dead-lettered, 0 skipped (2 of them refused by Elasticsearch)"
    letters = dead_letters(es, prefix, AGENCY)
    assert len(letters) == 3  # reported == stored
    offsets = [sum(len(line) + 1 for line in lines[:i]) for i in range(len(lines))]
    assert [(d["secmon"]["source"], d["secmon"]["offset"]) for d in letters] == \
        [(str(log), offsets[1]), (str(log), offsets[2]), (str(log), offsets[4])]
    assert "elasticsearch rejected the event: document_parsing_exception" in letters[0]["error"]["message"]
    assert letters[0]["event"]["original"] == lines[1] and letters[0]["secmon"]["pipeline"] == "suricata-eve"
    es.indices.refresh(index=f"{prefix}-audit")
    [entry] = es.search(index=f"{prefix}-audit", query={"term": {"event.action": "collect"}})["hits"]["hits"]
    assert entry["_source"]["secmon"]["details"]["dead_letters"] == 3
    assert entry["_source"]["secmon"]["details"]["rejected"] == 2


# --- item 13: the wrong source ------------------------------------------------------------------------------

@pytest.mark.dataset
def test_every_line_dead_lettered_exits_4_with_a_hint(tmp_path, es, es_url, prefix, datasets) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "auth.log"
    log.write_text("\n".join(real_auth(datasets, 20)) + "\n")
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    code, out, err = run_cli("-c", config, "collect", str(log), "-a", AGENCY, "-s", "suricata-eve", "--year", "2005")
    assert code == 4, (out, err)
    assert out.strip() == f"{log}: 0 events shipped, 20 dead-lettered, 0 skipped"
    assert err.strip() == (f"secmon: warning: {log}: every record was dead-lettered (20); wrong --source? "
                           f"the lines look like linux-auth (20 of 20 sampled lines parse)")
    assert len(dead_letters(es, prefix, AGENCY)) == 20
    # An EVTX file through a text pipeline: the same, and the records look like windows-evtx.
    evtx = sorted((datasets / "evtx_attack_samples" / "evtx" / "Execution").rglob("*.evtx"))[0]
    code, out, err = run_cli("-c", config, "collect", str(evtx), "-a", AGENCY, "-s", "linux-auth")
    assert code == 4 and "wrong --source? the lines look like windows-evtx" in err, err


# --- item 15: agencies on the command line ------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["collect", "x.log", "-a", "", "-s", "linux-auth"],
    ["collect", "x.log", "-a", "nope", "-s", "linux-auth"],
    ["collect", "--follow", "x.log", "-a", "", "-s", "linux-auth"],
    ["incidents", "--agency", ""],
    ["scan", "--input", "x.log", "--agency", "", "--source", "linux-auth"],
    ["scan", "--input", "x.log", "--agency", "nope", "--source", "linux-auth"],
])
def test_an_agency_not_in_the_config_is_one_clear_error(tmp_path, es_url, args) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "x.log").write_text("Jun 14 15:16:01 combo sshd[1]: hello\n")
    config = str(write_config(tmp_path / "secmon.yml", es_url, "unused", free_port()))
    args = [str(tmp_path / a) if a.endswith(".log") else a for a in args]
    code, out, err = run_cli("-c", config, *args)
    assert code == 2 and "Traceback" not in err and "--agency" in err and "so-tttt, portal" in err, err


def test_offline_scan_tags_events_with_the_agency_given(tmp_path, es_url) -> None:  # type: ignore[no-untyped-def]
    docs = [{"@timestamp": f"2024-05-01T10:0{i}:00Z", "organization": {"id": "someone-else"},
             "event": {"module": "windows", "code": "1102", "dataset": "windows.security"},
             "winlog": {"channel": "Security", "event_id": "1102", "provider_name": "Microsoft-Windows-Eventlog"},
             "host": {"name": "PC01"}} for i in range(1, 4)]
    path = tmp_path / "ecs.json"
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    config = str(write_config(tmp_path / "secmon.yml", es_url, "unused", free_port()))
    code, out, err = run_cli("-c", config, "scan", "--input", str(path), "--agency", AGENCY, "--json",
                             "--rules", str(ROOT / "rules" / "windows" / "security-audit-log-cleared.yml"))
    assert code == 0, err
    summary = json.loads(out)
    assert [i["finding"]["agency"] for i in summary["incidents"]] == [AGENCY]
    assert f"3 events named another agency ('someone-else' (3)): tagged with --agency {AGENCY}" in summary["notes"]

