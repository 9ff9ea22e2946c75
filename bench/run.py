"""``make bench`` (``python -m bench.run``): measure every figure of issue 6 and report them.

    python -m bench.run                   # the full run, about 9 minutes on a busy 2-core machine
    python -m bench.run --tiny --out x.json   # seconds-sized smoke run (used by the test suite)
    python -m bench.run --only success,failure

Starts a private redis-server and ``celery worker`` subprocesses (prefork, 2 processes), prints a
table, and writes ``bench/results.json`` with the environment. Absolute times on a shared machine are
noise; read the ratios and the counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from . import report
from .harness import Harness, Producer, ResultListener

GROUPS = ("success", "failure", "deadlines", "scale")


@dataclass(frozen=True)
class Sizes:
    """How much each figure runs. The defaults are the full run; :meth:`tiny` is the smoke run."""

    throughput_n: int = 5000         # no-op tasks per kind, in alternating blocks of throughput_block
    throughput_block: int = 100
    commands_n: int = 500            # tasks per kind per round for commandstats and worker CPU
    commands_rounds: int = 4
    gate_n: int = 300                # first tries per kind per round under MONITOR
    gate_rounds: int = 3
    failure_n: int = 500             # failures timed from raise to stream entry
    failure_rounds: int = 5
    failure_rate_per_s: float = 50.0
    round_trip_n: int = 50           # parks per round under MONITOR
    round_trip_rounds: int = 3
    retry_n: int = 200               # operator retries, each paired with one self.retry()
    retry_rounds: int = 5
    deadline_n: int = 10_000         # deadlines spread evenly over deadline_spread_s
    deadline_spread_s: float = 100.0
    deadline_rounds: int = 10        # consecutive windows of the spread
    failure_wait_s: float = 30.0     # how long the replays' FAILUREs are waited for after that
    scale_n: int = 100_000           # open incidents, all due once a worker starts
    scale_rounds: int = 2
    traceback_bytes: int = 2048
    list_reps: int = 50
    cli_reps: int = 3
    transition_timeout_s: float = 120.0
    replay_window_s: float = 10.0

    @classmethod
    def tiny(cls) -> "Sizes":
        return cls(throughput_n=60, throughput_block=20, commands_n=20, commands_rounds=2, gate_n=10,
                   gate_rounds=1, failure_n=8, failure_rounds=2, round_trip_n=4, round_trip_rounds=2, retry_n=4,
                   retry_rounds=2, deadline_n=40, deadline_spread_s=2.0, deadline_rounds=2, failure_wait_s=60.0,
                   scale_n=300, scale_rounds=1, list_reps=3, cli_reps=1, transition_timeout_s=60.0,
                   replay_window_s=1.0)


def _guarded(figures: dict, keys: tuple[str, ...], fn) -> None:
    """Run one group of figures; on an error, record it against each of its figures and go on."""
    try:
        figures.update(fn())
    except Exception as exc:  # a broken figure must not hide the others
        traceback.print_exc()
        for key in keys:
            figures.setdefault(key, {"figure": key, "error": f"{type(exc).__name__}: {exc}", "met": False})


def run(sizes: Sizes, groups: tuple[str, ...], out: Path, log_dir: str | None = None) -> dict:
    from . import failure, scale, success

    started = time.time()
    figures: dict = {}
    durations: dict = {}
    load: dict = {}

    def group(name: str, keys: tuple[str, ...], fn) -> None:
        t = time.time()
        _guarded(figures, keys, fn)
        durations[name] = round(time.time() - t, 1)
        load[name] = [round(x, 2) for x in os.getloadavg()]
        print(f"{name} done in {durations[name]} s (load average {load[name][0]})", flush=True)

    with Harness(log_dir=log_dir) as harness:
        env = harness.environment()
        print(f"redis-server {env['redis_server']} on {harness.redis.url}; worker logs in {harness.log_dir}",
              flush=True)
        if "success" in groups or "failure" in groups:
            worker = harness.worker("w1")
            listener = ResultListener(harness.redis.url)
            producer = Producer(harness.redis.url, harness.queue)
            try:
                if "success" in groups:
                    group("success", ("success_commands", "success_throughput"),
                          lambda: success.run(harness, worker, producer, listener, sizes))
                if "failure" in groups:
                    group("failure", ("failure_stream_latency", "failure_round_trips", "retry_latency"),
                          lambda: failure.run(harness, worker, listener, sizes))
            finally:
                producer.close()
                listener.close()
                worker.stop()
        if "deadlines" in groups:
            group("deadlines", ("deadline_lateness",),
                  lambda: {"deadline_lateness": scale.deadline_lateness(harness, sizes)})
        if "scale" in groups:
            group("scale", ("list_first_page", "memory_per_incident", "timeout_transitions"),
                  lambda: scale.many_incidents(harness, sizes))
    results = {
        "command": "make bench" if sys.argv[1:] == [] else "python -m bench.run " + " ".join(sys.argv[1:]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1), "durations_s": durations,
        "load_average_after": load,
        "environment": env, "sizes": dataclasses.asdict(sizes), "figures": figures,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(out)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: checks that every figure is produced")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {GROUPS}")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")), help="results file")
    parser.add_argument("--log-dir", default=None, help="where worker logs go (default: a temporary folder)")
    parser.add_argument("--set", action="append", default=[], metavar="SIZE=VALUE",
                        help="override one of the sizes (see bench.run.Sizes), e.g. --set scale_rounds=1")
    args = parser.parse_args(argv)
    groups = tuple(g.strip() for g in args.only.split(",") if g.strip())
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))}")
    sizes = Sizes.tiny() if args.tiny else Sizes()
    for item in args.set:
        name, _, value = item.partition("=")
        field = {f.name: f for f in dataclasses.fields(Sizes)}.get(name)
        if field is None or not value:
            parser.error(f"--set {item!r}: expected SIZE=VALUE with SIZE one of the fields of bench.run.Sizes")
        sizes = dataclasses.replace(sizes, **{name: type(getattr(sizes, name))(value)})
    results = run(sizes, groups, Path(args.out), args.log_dir)
    print()
    print(report.table(results["figures"]))
    print(f"\n{results['duration_s']} s; results in {args.out}")
    return 1 if any("error" in f for f in results["figures"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
