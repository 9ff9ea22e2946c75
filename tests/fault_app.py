"""The Celery app of the fault suite, for ``celery -A tests.fault_app worker`` subprocesses and for the
test process itself, configured the same way in both (docs/reliability.md).

The subprocess reads its settings from the environment: ``REDIS_URL`` (broker, result backend and our
keys), ``FAULT_PREFIX`` (key prefix and queue name), ``FAULT_VISIBILITY_S`` (the broker's
``visibility_timeout``), ``FAULT_ACKS_LATE`` (``0`` turns ``task_acks_late`` off) and optionally
``FAULT_INTERACTIVE_REDIS_URL`` (a separate URL for our keys).

Body runs are counted in Redis (``INCR`` on a key of the test's own), so the count survives the
processes that the crash tests kill.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from interactive_celery import InteractiveTask, install

TASK = "fault.flaky"


class Broken(Exception):
    """What the flaky task raises until its flow is marked fixed."""


def runs_key(prefix: str, task_id: str) -> str:
    return f"fault-{prefix}:runs:{task_id}"


def fixed_key(prefix: str, task_id: str) -> str:
    return f"fault-{prefix}:fixed:{task_id}"


def gate_key(prefix: str, task_id: str) -> str:
    return f"fault-{prefix}:gate:{task_id}"


def configure(app: Celery, prefix: str, *, visibility_s: float = 3.0, acks_late: bool = True,
              interactive_redis_url: str | None = None) -> Celery:
    app.conf.update(
        task_default_queue=f"q-{prefix}",
        interactive_key_prefix=prefix,
        result_expires=3600,
        task_acks_late=acks_late,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # Redelivery of unacked messages within seconds, so crash recovery fits in a test. kombu only
        # restores every unacked_restore_interval * unacked_restore_throttle seconds (100 s by default).
        broker_transport_options={"visibility_timeout": visibility_s, "unacked_restore_interval": 1,
                                  "unacked_restore_throttle": 1},
        interactive_sweep_interval_seconds=0.2,
        interactive_claim_idle_seconds=1,
        interactive_replay_fallback_seconds=20,
    )
    if interactive_redis_url:
        app.conf.interactive_redis_url = interactive_redis_url
    install(app)
    return app


def add_tasks(app: Celery):
    """``fault.flaky()`` counts its run, then fails until its flow is marked fixed. With ``gated=True``
    its first run waits (up to a minute) until the test opens the flow's gate, then fails: it
    outlasts the broker's visibility timeout for as long as the test wants."""
    prefix = app.conf.interactive_key_prefix
    url = app.conf.broker_url

    @app.task(base=InteractiveTask, bind=True, name=TASK, shared=False)
    def flaky(self, gated: bool = False, **_secrets):
        client = _client(url)
        runs = client.incr(runs_key(prefix, self.request.id))
        if runs == 1 and gated:
            deadline = time.monotonic() + 60
            while not client.get(gate_key(prefix, self.request.id)) and time.monotonic() < deadline:
                time.sleep(0.05)
            raise Broken(f"gated run of {self.request.id} failed")
        if client.get(fixed_key(prefix, self.request.id)):
            return f"ok after {runs} runs"
        raise Broken(f"run {runs} of {self.request.id} failed")

    return flaky


_clients: dict[str, redis.Redis] = {}


def _client(url: str) -> redis.Redis:
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, decode_responses=True)
    return _clients[url]


def build(redis_url: str, prefix: str, **options) -> Celery:
    app = Celery(f"fault-{prefix}", broker=redis_url, backend=redis_url, set_as_current=False)
    configure(app, prefix, **options)
    add_tasks(app)
    return app


if "FAULT_PREFIX" in os.environ:  # a worker subprocess: celery -A tests.fault_app worker
    app = build(os.environ["REDIS_URL"], os.environ["FAULT_PREFIX"],
                visibility_s=float(os.environ.get("FAULT_VISIBILITY_S", "3")),
                acks_late=os.environ.get("FAULT_ACKS_LATE", "1") == "1",
                interactive_redis_url=os.environ.get("FAULT_INTERACTIVE_REDIS_URL") or None)
