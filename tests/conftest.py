"""Fixtures: a private real redis-server per session, a Celery app per test with its own key prefix
and queue, and real in-process workers (celery.contrib.testing.worker.start_worker)."""

from __future__ import annotations

import contextlib
import uuid

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

from interactive_celery import OperatorAPI, install
from interactive_celery.keys import Keys
from interactive_celery.testing import RedisServer, env_redis_url
from tests.cli_app import configure


@pytest.fixture(scope="session")
def redis_url():
    url = env_redis_url()
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def rclient(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def make_app(redis_url: str, **conf) -> Celery:
    name = f"t{uuid.uuid4().hex[:10]}"
    app = configure(Celery(name, broker=redis_url, backend=redis_url, set_as_current=False), name)
    app.conf.update(conf)
    install(app)
    return app


@pytest.fixture
def app_factory(redis_url, rclient):
    """Build apps with extra configuration; each is cleaned up after the test."""
    made = []

    def factory(**conf) -> Celery:
        made.append(make_app(redis_url, **conf))
        return made[-1]

    yield factory
    for app in made:
        cleanup(app, rclient)


@pytest.fixture
def app(app_factory):
    return app_factory()


def cleanup(app: Celery, client: redis.Redis) -> None:
    """Delete only what this test made: keys under its own prefix and its queue."""
    prefix = Keys(app.conf.interactive_key_prefix)
    for pattern in prefix.all_patterns():
        for key in client.scan_iter(match=pattern.replace("{", "\\{").replace("}", "\\}"), count=1000):
            client.delete(key)
    client.delete(app.conf.task_default_queue)
    app.close()


@contextlib.contextmanager
def running_worker(app: Celery, **kwargs):
    options = dict(pool="threads", concurrency=4, perform_ping_check=False, loglevel="WARNING",
                   shutdown_timeout=15)
    options.update(kwargs)
    with start_worker(app, **options) as worker:
        try:
            yield worker
        finally:
            # The test worker's blueprint may skip step.stop() on exit; stop our threads ourselves.
            applier = getattr(worker, "interactive", None)
            if applier:
                applier.stop()


@pytest.fixture
def alice(app):
    api = OperatorAPI(app, "alice")
    api.heartbeat()
    return api
