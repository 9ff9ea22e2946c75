"""The Celery app under test, shared by the bench process and its ``celery worker`` subprocesses.

It is configured from the environment (``BENCH_REDIS_URL``, ``BENCH_PREFIX``, ``BENCH_QUEUE``) so that
``celery -A bench.app worker`` builds exactly the app the bench process sends to. Configuration is
Celery's defaults plus the two settings the README recommends for interactive mode
(``task_acks_late`` and ``task_reject_on_worker_lost``); plain and interactive tasks share it.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from interactive_celery import InteractiveTask, install
from interactive_celery.task import our_header

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_PREFIX", "bench")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    interactive_key_prefix=PREFIX,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
install(app)


class BenchFailure(Exception):
    """The failure the failure-path figures raise; its message is the unix time of the raise."""


@app.task(name="bench.noop_plain")
def noop_plain():
    return None


@app.task(name="bench.noop_interactive", base=InteractiveTask)
def noop_interactive():
    return None


@app.task(name="bench.fail_then_succeed", base=InteractiveTask, bind=True)
def fail_then_succeed(self):
    """Fails its first try (saying when it raised); an operator-issued try returns when it started."""
    started = time.time()
    if our_header(self.request) is None:
        raise BenchFailure(f"{time.time():.6f}")
    return started


@app.task(name="bench.celery_retry", bind=True)
def celery_retry(self, mark=None):
    """Celery's own retry for comparison: ``self.retry(countdown=0)``; the retried try returns
    ``[when it started, when the first try called self.retry]``."""
    started = time.time()
    if self.request.retries == 0:
        raise self.retry(kwargs={"mark": time.time()}, countdown=0)
    return [started, mark]


@app.task(name="bench.replay_target", base=InteractiveTask)
def replay_target(*args, **kwargs):
    """The task named by seeded incidents. A timed-out flow's replay raises the stored exception
    without running this body."""
    return None
