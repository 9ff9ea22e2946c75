"""Helpers of the fault suite: real ``celery worker`` subprocesses that can be killed, incidents seeded
straight through the park script, and snapshots of every key under a prefix."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.serialization import dumps

from interactive_celery import AWAITING_OPERATOR, OperatorAPI, incidents
from interactive_celery.faults import ENV as CRASH_ENV, GROUP_ENV, ONCE_ENV
from interactive_celery.keys import Keys
from interactive_celery.store import Store
from interactive_celery.testing import die_with_parent, wait_for
from tests.conftest import cleanup
from tests.fault_app import build, fixed_key, gate_key, runs_key

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SLOW = 60  # liveness bound for anything that needs a worker start or a redelivery


class WorkerProcess:
    """``celery -A tests.fault_app worker`` on the prefork pool, in its own process group (session),
    with its output in a log file. ``crash_at`` arms a crash point (faults.py); ``marker`` makes it
    fire once, in the first process to reach it, and only while the marker file does not exist."""

    def __init__(self, redis_url: str, prefix: str, log_dir: Path, *, name: str = "w", concurrency: int = 2,
                 crash_at: str | None = None, marker: Path | None = None, group: bool = False,
                 visibility_s: float = 3.0, acks_late: bool = True, extra_env: dict[str, str] | None = None,
                 queues: str | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERACTIVE_", "CELERY_", "FAULT_"))}
        env.update(REDIS_URL=redis_url, FAULT_PREFIX=prefix, FAULT_VISIBILITY_S=str(visibility_s),
                   FAULT_ACKS_LATE="1" if acks_late else "0", PYTHONPATH=str(ROOT), **(extra_env or {}))
        if crash_at:
            env[CRASH_ENV] = crash_at
            if marker is not None:
                env[ONCE_ENV] = str(marker)
            if group:
                env[GROUP_ENV] = "1"
        self.env = env
        self.hostname = f"{name}-{prefix}@fault"
        self.concurrency = concurrency
        self.queues = queues
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen | None = None

    def start(self, *, timeout: float = 60) -> "WorkerProcess":
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(BIN / "celery"), "-A", "tests.fault_app", "worker", "-P", "prefork", "-c", str(self.concurrency),
             "-n", self.hostname, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
             *(["-Q", self.queues] if self.queues else [])],
            env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
        wait_for(lambda: " ready." in self.log() or not self.alive(), timeout=timeout,
                 what=f"worker {self.hostname} to be ready")
        assert self.alive(), f"worker {self.hostname} died at startup:\n{self.log()}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def group_alive(self) -> bool:
        """True while any process of the worker's group (main or a pool child) still runs."""
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        self.process.poll()  # reap the main process if it is gone, so its group can disappear
        return True

    def wait_dead(self, timeout: float = 30) -> None:
        wait_for(lambda: not self.alive(), timeout=timeout, what=f"worker {self.hostname} to die")
        wait_for(lambda: not self.group_alive(), timeout=timeout, what=f"the pool of {self.hostname} to die")

    def kill(self) -> None:
        """kill -9 of the main process and every pool child."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then kill -9 if it takes too long."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def __enter__(self) -> "WorkerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- seeding incidents without a worker ---------------------------------------------------------------

def seed_incident(store: Store, task_id: str, *, task: str = "fault.flaky", deadline: float | None = None,
                  now: float | None = None, kwargs: dict | None = None) -> tuple[str, str]:
    """Park try 1 of a flow straight through the park script, with the fields task._on_failure
    writes. Someone must be online (a fresh heartbeat), or the script answers ``unattended``."""
    now = time.time() if now is None else now
    fields = {
        "v": incidents.RECORD_VERSION, "id": task_id, "task": task, "worker": "seed@fault",
        "exc_type": "Broken", "exc_message": "seeded failure", "args": "()", "kwargs": repr(kwargs or {}),
        "queue": "", "addressed": "[]", "subject": f"{task} failed 1 times", "body": "Broken: seeded failure",
        "params": "{}", "limit_minutes": 30.0, "fail_count": 1, "host": "seed",
    }
    record = incidents.try_record(1, worker="seed@fault", started_at=now - 0.01, ended_at=now, outcome="failed",
                                  exc_type="Broken", exc_message="seeded failure",
                                  traceback="Traceback (most recent call last):\nBroken: seeded failure\n")
    payload = {"task": task, "args": [], "kwargs": kwargs or {}, "options": {}, "headers": {}, "params": {}}
    content_type, encoding, data = dumps(payload, serializer="json")
    data = data.encode() if isinstance(data, str) else data
    message = {"v": "1", "body": base64.b64encode(data).decode(), "content_type": content_type,
               "content_encoding": encoding,
               "exc": json.dumps({"v": 1, "module": "tests.fault_app", "type": "Broken", "args": ["seeded failure"]})}
    return store.park(task_id, 1, now=now, cutoff=now - 1800, deadline=now + 1800 if deadline is None else deadline,
                      fields=fields, try_record=record, message=message, addressed=())


# -- looking at Redis ---------------------------------------------------------------------------------

def snapshot(client: redis.Redis, prefix: str, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every key under ``prefix`` with its type and whole value, for before/after comparisons.
    ``skip`` names key suffixes left out (presence changes with every operator command by design)."""
    keys = Keys(prefix)
    found: dict[str, Any] = {}
    for pattern in keys.all_patterns():
        for key in client.scan_iter(match=pattern.replace("{", "\\{").replace("}", "\\}"), count=1000):
            if any(key.endswith(s) or f":{s}:" in key for s in skip):
                continue
            kind = client.type(key)
            value: Any = {
                "hash": lambda: client.hgetall(key),
                "zset": lambda: client.zrange(key, 0, -1, withscores=True),
                "stream": lambda: client.xrange(key),
                "string": lambda: client.get(key),
                "list": lambda: client.lrange(key, 0, -1),
                "set": lambda: sorted(client.smembers(key)),
            }.get(kind, lambda: None)()
            found[key] = (kind, value)
    return found


def stream_types(client: redis.Redis, prefix: str, task_id: str) -> list[str]:
    """The operator-stream message types about one flow, oldest first."""
    return [fields.get("type") for _, fields in client.xrange(Keys(prefix).stream) if fields.get("id") == task_id]


def unacked(client: redis.Redis, queue: str) -> int:
    """Messages of ``queue`` that kombu's Redis transport holds as delivered but not acknowledged."""
    count = 0
    for raw in client.hvals("unacked"):
        _message, exchange, routing_key = json.loads(raw)
        count += queue in (exchange, routing_key)
    return count


# -- crash and restart experiments ------------------------------------------------------------------

class Lab:
    """One crash experiment: its own key prefix and queue, the test's app, workers it can kill."""

    def __init__(self, redis_url, rclient, tmp_path, *, acks_late: bool = True, visibility_s: float = 3.0):
        self.redis_url, self.rclient, self.tmp_path = redis_url, rclient, tmp_path
        self.prefix = f"f{uuid.uuid4().hex[:10]}"
        self.acks_late, self.visibility_s = acks_late, visibility_s
        self.app = build(redis_url, self.prefix, acks_late=acks_late, visibility_s=visibility_s)
        self.flaky = self.app.tasks["fault.flaky"]
        self.alice = OperatorAPI(self.app, "alice")
        self.marker = tmp_path / f"crashed-{self.prefix}"
        self.workers: list[WorkerProcess] = []

    def worker(self, name: str, *, crash_at: str | None = None, group: bool = False,
               queues: str | None = None) -> WorkerProcess:
        if crash_at:
            self.marker.touch()  # disarmed until the test removes the marker
        worker = WorkerProcess(self.redis_url, self.prefix, self.tmp_path, name=name, crash_at=crash_at,
                               marker=self.marker if crash_at else None, group=group, acks_late=self.acks_late,
                               visibility_s=self.visibility_s, queues=queues)
        self.workers.append(worker)
        return worker.start()

    def arm(self) -> None:
        self.marker.unlink()

    def wait_crash(self) -> None:
        wait_for(self.marker.exists, timeout=SLOW, what="the crash point to be reached")

    def runs(self, task_id: str) -> int:
        return int(self.rclient.get(runs_key(self.prefix, task_id)) or 0)

    def fix(self, task_id: str) -> None:
        self.rclient.set(fixed_key(self.prefix, task_id), "1")

    def open_gate(self, task_id: str) -> None:
        self.rclient.set(gate_key(self.prefix, task_id), "1")

    def incident(self, task_id: str) -> dict:
        return self.alice.store.incident(task_id)

    def wait_parked(self, result, try_no: int) -> dict:
        def parked():
            raw = self.incident(result.id)
            return raw if raw.get("state") == "open" and raw.get("try") == str(try_no) \
                and result.state == AWAITING_OPERATOR else None

        raw = wait_for(parked, timeout=SLOW, what=f"{result.id} parked at try {try_no}")
        self.wait_acked()
        return raw

    def wait_acked(self) -> None:
        """Parked flows are acknowledged by the worker's main process a moment after the pool child
        stored AWAITING_OPERATOR; a crash before that ack would redeliver them too."""
        queue = self.app.conf.task_default_queue
        wait_for(lambda: unacked(self.rclient, queue) == 0, timeout=SLOW, what="parked flows to be acked")

    def observe(self, result) -> dict[str, Any]:
        """The end a flow reached, for the crash table: incident state and try, Celery's state,
        body runs, and the operator-stream messages about it."""
        raw = self.incident(result.id)
        return {"incident": raw.get("state"), "try": raw.get("try"), "celery": result.state,
                "runs": self.runs(result.id), "events": self.events(result.id)}

    def queued(self) -> int:
        """Messages waiting in the flows' queue."""
        return self.rclient.llen(self.app.conf.task_default_queue)

    def events(self, task_id: str) -> list[str]:
        return stream_types(self.rclient, self.prefix, task_id)

    def tries(self, task_id: str) -> list[int]:
        return sorted(int(n) for n in self.rclient.hkeys(Keys(self.prefix).tries(task_id)))

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        for key in self.rclient.scan_iter(match=f"fault-{self.prefix}:*"):
            self.rclient.delete(key)
        cleanup(self.app, self.rclient)


@pytest.fixture
def lab_factory(redis_url, rclient, tmp_path):
    made: list[Lab] = []

    def factory(**options) -> Lab:
        made.append(Lab(redis_url, rclient, tmp_path, **options))
        return made[-1]

    yield factory
    for lab in made:
        lab.close()


def report(name: str, **data: Any) -> None:
    """Append one JSON line of figures to ``$FAULT_REPORT`` when it is set (docs/reliability.md is
    written from them); a no-op otherwise."""
    path = os.environ.get("FAULT_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"test": name, **data}, default=str) + "\n")
