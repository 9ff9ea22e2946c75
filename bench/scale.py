"""Deadlines and scale: timeout lateness, listing and memory with many open incidents, and how fast
a worker's sweeper turns due deadlines into timeout decisions. Incidents are seeded through the
store's park script (:mod:`bench.seed`), never through workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime

from interactive_celery import OperatorAPI
from interactive_celery.store import store_for

from .harness import ROOT, Harness
from .seed import Seeder
from .stats import distribution, percentile, summary

SEED_RATE_GUESS = 1500  # parks/s on a busy 2-core machine; only sets how far ahead deadlines start


def _stream_time(entry_id: str) -> float:
    """The latest time (unix seconds) the entry can have been appended: its id holds the floor of
    Redis's clock in milliseconds, so lateness is an upper bound, never below zero by truncation."""
    return (int(entry_id.split("-")[0]) + 1) / 1000


def _failures_stored(harness: Harness, ids: list[str]) -> dict[str, float]:
    """task id -> unix time Celery stored FAILURE (its ``date_done``), for those already stored."""
    done = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        for task_id, raw in zip(chunk, harness.client.mget([f"celery-task-meta-{i}" for i in chunk])):
            if raw:
                meta = json.loads(raw)
                if meta.get("status") == "FAILURE" and meta.get("date_done"):
                    done[task_id] = datetime.fromisoformat(meta["date_done"]).timestamp()
    return done


def deadline_lateness(harness: Harness, sizes) -> dict:
    """``n`` deadlines spread evenly over ``spread`` seconds, one worker running its sweeper: how
    late the timeout decision (the ``incident.decided`` entry's id time) and the FAILURE are."""
    from bench.app import app

    n, spread = sizes.deadline_n, sizes.deadline_spread_s
    harness.reset()
    OperatorAPI(app, "bench").heartbeat()
    store = store_for(app)
    worker = harness.worker("w1")
    try:
        first = time.time() + 3 + n / SEED_RATE_GUESS
        deadline = {}

        def deadline_of(i: int, _now: float) -> float:
            return first + spread * i / n

        ids = Seeder(app, store).seed(n, deadline_of)
        deadline = {task_id: deadline_of(i, 0) for i, task_id in enumerate(ids)}
        seeded_late = time.time() > first
        decided, last_id = {}, "0-0"
        give_up = first + spread + 60
        while len(decided) < n and time.time() < give_up:
            reply = harness.client.xread({store.keys.stream: last_id}, count=2000, block=500)
            for entry_id, fields in (reply[0][1] if reply else []):
                last_id = entry_id
                if fields.get("type") == "incident.decided" and fields.get("decision") == "timeout":
                    decided[fields["id"]] = _stream_time(entry_id)
        failed = {}
        # Replays run at worker speed after the transitions; wait a bounded time for the tail.
        wait_until = time.time() + sizes.failure_wait_s
        while len(failed) < n and time.time() < wait_until:
            failed = _failures_stored(harness, ids)
            if len(failed) < n:
                time.sleep(0.5)
    finally:
        worker.stop()
    to_decision = [decided[i] - deadline[i] for i in ids if i in decided]
    # A FAILURE not stored within the wait counts as infinitely late, so percentiles stay honest.
    to_failure = [failed[i] - deadline[i] if i in failed else float("inf") for i in ids]
    if not to_decision:
        raise RuntimeError("no deadline expired")
    rounds = max(1, sizes.deadline_rounds)
    size = -(-n // rounds)  # rounds: consecutive windows of the spread, in deadline order
    windows = [[decided[i] - deadline[i] for i in ids[k:k + size] if i in decided] for k in range(0, n, size)]
    fwindows = [[failed[i] - deadline[i] if i in failed else float("inf") for i in ids[k:k + size]]
                for k in range(0, n, size)]
    d_dec = distribution(to_decision, windows, digits=3)
    d_fail = distribution(to_failure, fwindows, digits=3)
    return {
        "figure": "decision timeout lateness", "unit": "s after the deadline",
        "value": {"p50": d_dec["p50"], "p99": d_dec["p99"]},
        "to_timeout_transition_s": d_dec, "to_failure_stored_s": d_fail,
        "expired": len(decided), "failures_stored": len(failed), "failure_wait_s": sizes.failure_wait_s,
        "n": n, "spread_s": spread,
        "seeding_overran_first_deadline": seeded_late,
        "sweep_interval_s": store.settings.sweep_interval_s,
        "target": "p99 <= 1 s to the transition",
        "met": len(decided) == n and d_dec["p99"] <= 1.0,
    }


def _cli_list(env: dict) -> tuple[float, int]:
    command = [sys.executable, "-m", "celery", "-A", "bench.app", "interactive", "list", "--json",
               "--operator", "bench"]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(command[2:])}` exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds, len(json.loads(proc.stdout)["incidents"])


def _watch_transitions(harness: Harness, key_open: str, n: int, timeout: float, poll_s: float = 0.02):
    """Poll the open index until it is empty: (first seen transition, last), perf_counter times."""
    first = last = None
    give_up = time.perf_counter() + timeout
    while time.perf_counter() < give_up:
        left = harness.client.zcard(key_open)
        now = time.perf_counter()
        if first is None and left < n:
            first = now
        if left == 0:
            last = now
            break
        time.sleep(poll_s)
    return first, last


def many_incidents(harness: Harness, sizes) -> dict:
    """Rounds of: seed ``n`` open incidents whose deadlines are all due; measure memory per incident,
    the first page through the API and the CLI; then start a worker and time its sweeper turning
    all of them into timeout decisions, and the replays that follow."""
    from bench.app import app

    n = sizes.scale_n
    memory, api_ms, api_cpu_ms, cli_s, rates, replays, seed_rates = [], [], [], [], [], [], []
    cli_error, page_sizes, unfinished, backlog = None, set(), 0, []
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for _ in range(sizes.scale_rounds):
        harness.reset()
        api = OperatorAPI(app, "bench")
        api.heartbeat()
        store = store_for(app)
        before = harness.client.info("memory")["used_memory"]
        start = time.perf_counter()
        Seeder(app, store, traceback_bytes=sizes.traceback_bytes).seed(n, lambda i, now: now)
        seed_rates.append(n / (time.perf_counter() - start))
        memory.append((harness.client.info("memory")["used_memory"] - before) / n)

        api.incidents("open", limit=50)
        for _ in range(sizes.list_reps):
            start, cpu = time.perf_counter(), time.process_time()
            page = api.incidents("open", limit=50)
            api_ms.append(1000 * (time.perf_counter() - start))
            api_cpu_ms.append(1000 * (time.process_time() - cpu))
            page_sizes.add(len(page))
        for _ in range(sizes.cli_reps):
            try:
                seconds, count = _cli_list(env)
                cli_s.append(seconds)
                page_sizes.add(count)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
                cli_error = str(exc)
                break

        worker = harness.worker("w1")
        try:
            first, last = _watch_transitions(harness, store.keys.open, n, timeout=sizes.transition_timeout_s)
            if last is None:
                unfinished += 1
                left = harness.client.zcard(store.keys.open)
                rates.append((n - left) / (time.perf_counter() - first) if first else 0.0)
            else:
                rates.append(n / max(last - first, 1e-3))
            resolved = harness.client.zcard(store.keys.resolved)
            # The decisions stream is never capped: what the appliers have not applied yet waits there.
            backlog.append({"decisions_written": n, "decisions_stream_len": harness.client.xlen(store.keys.decisions),
                            "stream_maxlen": store.settings.stream_maxlen, "resolved_so_far": resolved})
            time.sleep(sizes.replay_window_s)
            replays.append((harness.client.zcard(store.keys.resolved) - resolved) / sizes.replay_window_s)
        finally:
            worker.stop()

    api_summary = {"p50": round(percentile(api_ms, 50), 2), "p99": round(percentile(api_ms, 99), 2),
                   "max": round(max(api_ms), 2), "n": len(api_ms),
                   # CPU time of the calling process: what the call costs when the machine is not
                   # shared (wall time also waits for a core; see the load average in results.json).
                   "cpu_p50": round(percentile(api_cpu_ms, 50), 2)}
    rate = summary(rates, 0)
    return {
        "list_first_page": {
            "figure": f"{n:,} open incidents: list the first page", "unit": "ms (API, p50)",
            "value": api_summary["p50"], "api_ms": api_summary,
            "cli_list_json_s": summary(cli_s, 3) if cli_s else None, "cli_error": cli_error,
            "page_sizes": sorted(page_sizes), "open_incidents": n,
            "target": "<= 20 ms (API)", "met": api_summary["p50"] <= 20,
        },
        "memory_per_incident": {
            "figure": "memory per open incident", "unit": "bytes (INFO used_memory delta / N)",
            "value": summary(memory, 0)["median"], "bytes": summary(memory, 0),
            "traceback_bytes": sizes.traceback_bytes, "n": n,
            "seeding_parks_per_s": summary(seed_rates, 0),
            "target": "<= 6 KiB (6144 bytes)", "met": summary(memory, 0)["median"] <= 6144,
        },
        "timeout_transitions": {
            "figure": "timeout transitions (compare-and-set expirations)", "unit": "per s, one worker's sweeper",
            "value": rate["median"], "per_s": rate, "due_deadlines": n,
            "rounds_not_finished": unfinished, "timeout_s": sizes.transition_timeout_s,
            "replays_per_s_after": summary(replays, 1) if replays else None,
            "decisions_backlog": backlog,
            "target": ">= 20k/s", "met": unfinished == 0 and rate["median"] >= 20000,
        },
    }
