"""``python -m bench.profile_retry [N]``: where the time of an operator retry goes, step by step.

Runs ``N`` operator retries against a worker started from :mod:`bench.trace_app` (the bench app with
timing probes around the applier's steps and the store's scripts), and ``N`` of Celery's own
``self.retry(countdown=0)`` for comparison, then prints the median and p90 of each step.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from interactive_celery import AWAITING_OPERATOR, OperatorAPI

from .failure import SETTLE_S, hop_floor, ping_pair
from .harness import Harness, ResultListener
from .stats import percentile

STEPS = (
    ("decision call returns (decide script, one read)", "call"),
    ("decision call starts -> applier starts on the entry", "wake"),
    ("applier: result-backend check (another Redis database only)", "superseded"),
    ("applier: apply script (fencing token; Celery state when in this database)", "apply"),
    ("applier: decode + apply_async + task-retried event", "send"),
    ("applier done -> start_try script begins (broker, consumer, pool)", "deliver"),
    ("worker: start_try script", "start_try"),
    ("start_try done -> first line of the body", "body"),
    ("total: decision call -> first line of the body", "total"),
)


def _events(trace_dir: str) -> list[tuple[float, float, str]]:
    events = []
    for path in Path(trace_dir).glob("trace-*.log"):
        for line in path.read_text().splitlines():
            name, start, end = line.split()
            events.append((float(start), float(end), name))
    return sorted(events)


def _first(events, name: str, after: float, before: float):
    return next(((s, e) for s, e, n in events if n == name and after <= s <= before), None)


def profile(n: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as trace_dir, Harness() as harness:
        os.environ["BENCH_TRACE_DIR"] = trace_dir
        from bench.app import app

        worker = harness.worker("w1", app_module="bench.trace_app")
        listener = ResultListener(harness.redis.url)
        api = OperatorAPI(app, "bench")
        api.heartbeat()
        samples, celery = [], []
        try:
            for _ in range(n):
                parked = app.send_task("bench.fail_then_succeed")
                listener.wait([parked.id], timeout=30, status=AWAITING_OPERATOR)
                time.sleep(SETTLE_S)
                decided = time.time()
                api.retry(parked.id, wait=0)
                returned = time.time()
                samples.append((decided, returned, parked.get(timeout=30)))
                started, mark = app.send_task("bench.celery_retry").get(timeout=30)
                celery.append(1000 * (started - mark))
        finally:
            listener.close()
            worker.stop()
        events = _events(trace_dir)
        round_trips = _round_trips(harness.client, n)
    steps: dict[str, list[float]] = {key: [] for _, key in STEPS}
    for decided, returned, started in samples:
        entry = _first(events, "apply_entry", decided, started)
        sup = _first(events, "superseded", decided, started)
        app_ = _first(events, "apply", decided, started)
        send = _first(events, "send", decided, started)
        start_try = _first(events, "start_try", decided, started)
        if not all((entry, app_, send, start_try)):
            continue
        if sup:  # only when the result backend is not the store's Redis database
            steps["superseded"].append(1000 * (sup[1] - sup[0]))
        for key, value in (("call", returned - decided), ("wake", entry[0] - decided), ("apply", app_[1] - app_[0]),
                           ("send", send[1] - send[0]), ("deliver", start_try[0] - entry[1]),
                           ("start_try", start_try[1] - start_try[0]), ("body", started - start_try[1]),
                           ("total", started - decided)):
            steps[key].append(1000 * value)
    steps["celery_total"] = celery
    steps.update(round_trips)
    return steps


def _round_trips(client, n: int) -> dict[str, list[float]]:
    """What one hop costs on this machine (each step above starts from idle)."""
    pairs = [ping_pair(client) for _ in range(n)]
    return {"rtt_idle": [idle for idle, _ in pairs], "rtt_hot": [hot for _, hot in pairs]}


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 40
    steps = profile(n)
    print(f"{'step':<70} {'p50 ms':>8} {'p90 ms':>8}")
    for label, key in (*STEPS, ("Celery self.retry(countdown=0) -> first line of the retried body", "celery_total"),
                       ("one Redis round trip (PING) from idle", "rtt_idle"),
                       ("one Redis round trip (PING) back to back", "rtt_hot")):
        values = steps[key]
        if values:
            print(f"{label:<70} {statistics.median(values):8.2f} {percentile(values, 90):8.2f}")
    celery = statistics.median(steps["celery_total"])
    ratio = statistics.median(steps["total"]) / celery
    floor = hop_floor(celery, steps["rtt_idle"], steps["rtt_hot"])
    print(f"ratio {ratio:.2f}; the design's three hops at one round trip each (one from idle, two back to "
          f"back): +{floor['extra_ms']:.2f} ms, ratio {floor['ratio']:.2f} at best")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
