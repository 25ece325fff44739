"""Real ElastAlert 2 over one day, run in its own virtualenv (not secmon's): the rules benchmark's other side.

    ~/.cache/secmon/ea2/bin/python bench/rules/ea2_driver.py --config ea2.yaml --mode backfill --start T0 --end T1
    ~/.cache/secmon/ea2/bin/python bench/rules/ea2_driver.py --config ea2.yaml --mode live --start T0 --end T1

It builds ElastAlert 2's own `ElastAlerter` from its config and rule files, and calls what its
scheduler calls, `handle_rule_execution(rule)` for every rule, on a pool of `max_threads` threads
(its setting, 10 as it ships), which is the job its APScheduler runs per rule:

- backfill: once per rule with `--start T0 --end T1` (its run_rule then walks the span in
  buffer_time segments). Not the `elastalert --start T0 --end T1` command itself: in its source
  (ElastAlerter.start, add_rule) the rule jobs first run 0-15 s after start while the main loop
  exits at once when now + run_every is past --end, as it is for a past day (read, not run here);
- live: ElastAlert 2's clock (`ts_now`, what it takes as now) is set to T0, T0 + run_every, ...
  up to T1, and at each tick every rule's job runs once, then its pending-alerts job: the day of
  runs its scheduler makes every `run_every`, without waiting a day. Its in-memory state (sliding
  windows, seen ids, silences) lives across the ticks as it would in one long-running process.

Prints one JSON line: rules, ticks, matches alerted per rule type, errors.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import elastalert.elastalert as ea_module
import elastalert.ruletypes as ruletypes_module
from elastalert.elastalert import ElastAlerter
from elastalert.util import ts_to_dt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--mode", choices=("backfill", "live"), required=True)
    parser.add_argument("--start", required=True)
    parser.add_argument("--end", required=True)
    args = parser.parse_args()
    logging.getLogger("elastalert").setLevel(logging.WARNING)  # one info line per rule run otherwise

    start, end = ts_to_dt(args.start), ts_to_dt(args.end)
    clock = [start]
    if args.mode == "live":
        ea_module.ts_now = ruletypes_module.ts_now = lambda: clock[0]
        ea = ElastAlerter(["--config", args.config])
    else:
        ea = ElastAlerter(["--config", args.config, "--start", args.start, "--end", args.end])
        for rule in ea.rules:  # what start() does with --start
            rule["initial_starttime"] = start

    alerted: Counter[str] = Counter()
    errors: list[str] = []
    alert = ea.alert
    handle_error = ea.handle_error

    def counted_alert(matches: list[dict[str, Any]], rule: dict[str, Any], *rest: Any, **kw: Any) -> Any:
        alerted[rule["type"].__class__.__name__] += len(matches)
        return alert(matches, rule, *rest, **kw)

    def counted_error(message: str, data: Any = None) -> None:
        errors.append(message[:300])
        handle_error(message, data)

    ea.alert = counted_alert  # type: ignore[method-assign]
    ea.handle_error = counted_error  # type: ignore[method-assign]
    threads = int(ea.conf.get("max_threads", 10))
    ticks = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        if args.mode == "backfill":
            list(pool.map(ea.handle_rule_execution, ea.rules))
            ticks = 1
        else:
            step = ea.run_every
            while clock[0] <= end:
                list(pool.map(ea.handle_rule_execution, ea.rules))
                ea.handle_pending_alerts()
                ticks += 1
                clock[0] = clock[0] + step
    print(json.dumps({"rules": len(ea.rules), "ticks": ticks, "threads": threads,
                      "run_every_s": ea.run_every.total_seconds(), "buffer_time_s": ea.buffer_time.total_seconds(),
                      "alerted": dict(alerted), "errors": len(errors), "first_errors": errors[:5],
                      "at": datetime.datetime.now(datetime.timezone.utc).isoformat()}))


if __name__ == "__main__":
    main()
