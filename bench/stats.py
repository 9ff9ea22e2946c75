"""Summaries (median, spread, percentiles) and Redis-side counting (INFO commandstats, MONITOR)."""

from __future__ import annotations

import math
import statistics
import threading
import uuid
from collections import Counter
from typing import Iterable, Sequence

import redis


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _num(value: float, digits: int):
    """Rounded, or None for infinity (JSON has no infinity; None reads as "not reached")."""
    return None if math.isinf(value) else round(value, digits)


def summary(rounds: Sequence[float], digits: int = 3) -> dict:
    """Median of the per-round values with their spread (min, max, and max-min relative to median)."""
    rounds = [float(r) for r in rounds]
    med = statistics.median(rounds)
    lo, hi = min(rounds), max(rounds)
    finite = not any(math.isinf(v) for v in (med, lo, hi))
    return {"median": _num(med, digits), "min": _num(lo, digits), "max": _num(hi, digits),
            "spread_pct": round(100 * (hi - lo) / abs(med), 1) if med and finite else None,
            "rounds": [_num(r, digits) for r in rounds]}


def distribution(samples: Sequence[float], rounds: Sequence[Sequence[float]], digits: int = 3) -> dict:
    """p50/p99 of all samples, plus each round's p50 and p99 summarised across rounds."""
    return {"n": len(samples), "p50": _num(percentile(samples, 50), digits),
            "p99": _num(percentile(samples, 99), digits), "max": _num(max(samples), digits),
            "p50_rounds": summary([percentile(r, 50) for r in rounds if r], digits),
            "p99_rounds": summary([percentile(r, 99) for r in rounds if r], digits)}


# -- INFO commandstats ------------------------------------------------------------------------------

def commandstats(client: redis.Redis) -> Counter:
    """Calls per command since the last CONFIG RESETSTAT (commands run inside scripts included)."""
    raw = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in raw.items()})


def delta(after: Counter, before: Counter) -> Counter:
    out = Counter(after)
    out.subtract(before)
    return Counter({k: v for k, v in out.items() if v})


# -- MONITOR --------------------------------------------------------------------------------------

class CommandLog:
    """Every command Redis runs while open, from MONITOR, read in a thread.

    MONITOR also shows the commands a Lua script runs (client ``lua``): those are not round trips, and
    :meth:`classify` keeps them apart. It slows Redis down, so no timing is taken while one is open.
    """

    def __init__(self, client: redis.Redis):
        self._client = client
        self._sentinel = f"bench-monitor-end-{uuid.uuid4().hex}"
        self.commands: list[dict] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)

    def __enter__(self) -> "CommandLog":
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("MONITOR did not start")
        return self

    def _run(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            while True:
                command = monitor.next_command()
                if self._sentinel in command["command"]:
                    return
                self.commands.append(command)

    def __exit__(self, *exc) -> None:
        self._client.echo(self._sentinel)
        self._thread.join(timeout=60)

    def classify(self, prefix: str, background: Iterable[str] = ()) -> Counter:
        """Count commands by (who, command, what it touched).

        who: ``lua`` for commands inside a script, else ``client``. What it touched: ``ours`` for a
        key under our hash-tagged prefix, ``result`` for Celery's result keys, ``event`` for Celery's
        event exchange, ``other`` for the rest (broker queues, acks, MULTI/EXEC, ...). Commands on our
        prefix whose name is in ``background`` (the worker's periodic applier and sweeper reads) are
        labelled ``ours-background``.
        """
        tag = "{" + prefix + "}:"
        quiet = {name.upper() for name in background}
        counts: Counter = Counter()
        for command in self.commands:
            text = command["command"]
            name = text.split(" ", 1)[0].upper()
            who = "lua" if command["client_type"] == "lua" else "client"
            if tag in text:
                what = "ours-background" if name in quiet and who == "client" else "ours"
            elif "celery-task-meta-" in text:
                what = "result"
            elif "celeryev" in text:
                what = "event"
            else:
                what = "other"
            counts[(who, name, what)] += 1
        return counts


def per(counts: Counter, n: int, digits: int = 3) -> dict[str, float]:
    """``{"client EVALSHA ours": 1.0, ...}`` per unit, largest first."""
    return {" ".join(key): round(value / n, digits) for key, value in counts.most_common()}
