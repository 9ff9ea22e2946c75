"""What every figure needs: a private Redis, real ``celery worker`` subprocesses, a producer, a
listener for stored results, and the environment record for ``results.json``.

The bench process talks to the worker only through Redis, like any client would. Results are
noticed through Celery's own result publish (``PSUBSCRIBE celery-task-meta-*``), which adds no Redis
command per task, so the command counts of the success path stay clean.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from importlib import metadata
from pathlib import Path

import redis

from interactive_celery.testing import RedisServer, die_with_parent, wait_for

ROOT = Path(__file__).resolve().parent.parent
RESULT_PATTERN = "celery-task-meta-*"


class Harness:
    """One private Redis for the whole run, and the settings the bench app reads from the environment."""

    def __init__(self, *, log_dir: str | None = None):
        self.redis = RedisServer()
        self.prefix = f"bench{uuid.uuid4().hex[:6]}"
        self.queue = f"q-{self.prefix}"
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="interactive-bench-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.workers: list[Worker] = []
        self.client: redis.Redis | None = None

    def start(self) -> "Harness":
        self.redis.start()
        os.environ.update(BENCH_REDIS_URL=self.redis.url, BENCH_PREFIX=self.prefix, BENCH_QUEUE=self.queue)
        # No read timeout: FLUSHALL of a 100k-incident run can take seconds on a busy machine.
        self.client = redis.Redis.from_url(self.redis.url, decode_responses=True, socket_timeout=None)
        return self

    def stop(self) -> None:
        for worker in list(self.workers):
            worker.stop()
        if self.client is not None:
            self.client.close()
        self.redis.stop()

    def __enter__(self) -> "Harness":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def worker(self, name: str = "w1", *, concurrency: int = 2, pool: str = "prefork",
               app_module: str = "bench.app") -> "Worker":
        worker = Worker(self, name, concurrency=concurrency, pool=pool, app_module=app_module)
        self.workers.append(worker)
        return worker.start()

    def reset(self) -> None:
        """Start the next figure from an empty Redis (no worker may run: the applier's consumer
        group would vanish under it)."""
        assert not any(w.running for w in self.workers), "stop the workers before reset()"
        self.client.flushall()
        self.client.config_resetstat()

    def environment(self) -> dict:
        info = self.client.info("server")
        versions = {}
        for dist in ("celery", "kombu", "redis", "interactive_celery"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = None
        return {
            "python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
            "redis_server": info.get("redis_version"), "redis_mode": info.get("redis_mode"),
            "redis_allocator": self.client.info("memory").get("mem_allocator"),
            "packages": versions,
        }


class Worker:
    """A real ``celery -A bench.app worker`` subprocess (prefork by default, as deployed)."""

    def __init__(self, harness: Harness, name: str, *, concurrency: int, pool: str, app_module: str):
        self.harness = harness
        self.app_module = app_module
        self.hostname = f"{name}@bench"
        self.concurrency = concurrency
        self.pool = pool
        self.log_path = harness.log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "Worker":
        from bench.app import app

        command = [sys.executable, "-m", "celery", "-A", self.app_module, "worker", "-P", self.pool,
                   "-c", str(self.concurrency), "-n", self.hostname, "-Q", self.harness.queue,
                   "--without-gossip", "--without-mingle", "-l", "WARNING"]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=die_with_parent)

        def ready() -> bool:
            if not self.running:
                raise RuntimeError(f"worker {self.hostname} exited; see {self.log_path}")
            return bool(app.control.ping(destination=[self.hostname], timeout=0.5))

        wait_for(ready, timeout=60, interval=0.2, what=f"worker {self.hostname}")
        return self

    def pause(self) -> None:
        """Stop consuming the bench queue, so that a batch can be queued whole before it runs."""
        from bench.app import app

        app.control.cancel_consumer(self.harness.queue, destination=[self.hostname], reply=True, timeout=5)

    def resume(self) -> None:
        from bench.app import app

        app.control.add_consumer(self.harness.queue, destination=[self.hostname], reply=True, timeout=5)

    def cpu_seconds(self) -> float:
        """User+system CPU time used so far by the worker and its pool processes (Linux /proc)."""
        pids = [self.process.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    pids.append(int(entry.name))
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.running:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # our own process group only
                self.process.wait()
        if self in self.harness.workers:
            self.harness.workers.remove(self)


class Producer:
    """Sends tasks by name through an app without a result backend.

    With the Redis backend, ``apply_async`` also SUBSCRIBEs the sender to every task's result
    channel; a benchmark sending thousands of tasks and never reading them would measure (and
    overflow) that instead.
    """

    def __init__(self, url: str, queue: str):
        from celery import Celery

        self.app = Celery("bench-producer", broker=url, set_as_current=False)
        self.app.conf.task_default_queue = queue
        self.queue = queue

    def send(self, name: str, count: int) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(count)]
        with self.app.producer_or_acquire() as producer:
            for task_id in ids:
                self.app.send_task(name, task_id=task_id, queue=self.queue, producer=producer)
        return ids

    def close(self) -> None:
        self.app.close()


class ResultListener:
    """Notes the arrival time of every result Celery stores (its own PUBLISH), in a thread."""

    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(RESULT_PATTERN)
        self.arrivals: dict[str, tuple[float, str]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-results", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offset = len(RESULT_PATTERN) - 1
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if not message:
                continue
            now = time.perf_counter()
            task_id = message["channel"][offset:].decode()
            try:
                status = json.loads(message["data"])["status"]
            except (ValueError, KeyError, TypeError):
                status = "?"
            with self._cond:
                self.arrivals[task_id] = (now, status)
                self._cond.notify_all()

    def wait(self, ids, timeout: float, status: str | None = None) -> list[float]:
        """Arrival times (perf_counter) of all ``ids`` (in ``status``, if given); raise TimeoutError
        if some never arrive."""
        deadline = time.monotonic() + timeout
        wanted = list(ids)

        def arrived(task_id: str) -> bool:
            got = self.arrivals.get(task_id)
            return got is not None and (status is None or got[1] == status)

        with self._cond:
            while True:
                missing = sum(1 for i in wanted if not arrived(i))
                if not missing:
                    return [self.arrivals[i][0] for i in wanted]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{missing} of {len(wanted)} results never arrived")
                self._cond.wait(min(left, 0.5))

    def forget(self, ids) -> None:
        with self._cond:
            for task_id in ids:
                self.arrivals.pop(task_id, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.pubsub.close()
        self.client.close()
