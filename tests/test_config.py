"""Configuration is validated once per app with readable errors; the key schema is fixed."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from celery import Celery

from interactive_celery import ConfigurationError, IncompatibleRedis, InteractiveTask
from interactive_celery.config import settings_for
from interactive_celery.keys import Keys
from interactive_celery.store import Store
from interactive_celery.task import flow_params
from interactive_celery.testing import RedisServer
from interactive_celery.worker import check_server

pytestmark = pytest.mark.legacy


def app_with(**conf) -> Celery:
    app = Celery("cfg", broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.update(conf)
    return app


def test_defaults_match_the_design():
    """Defaults: 30 minutes, archive on, timeout = limit, prefix interactive, Redis from the broker."""
    s = settings_for(app_with())
    assert (s.flow.limit_minutes, s.flow.archive_retries, s.flow.decision_timeout_minutes) == (30, True, None)
    assert s.flow.timeout_s == 1800
    assert (s.key_prefix, s.stream_maxlen, s.retention_days) == ("interactive", 10000, 14)
    assert (s.repr_max_chars, s.traceback_max_bytes) == (2000, 16384)
    assert "password" in s.redact_keys and "token" in s.redact_keys
    assert s.redis_url == "redis://127.0.0.1:1/0"


def test_fractional_minutes_are_allowed():
    """0.1 minutes is six seconds."""
    assert settings_for(app_with(interactive_limit_minutes=0.1)).flow.timeout_s == pytest.approx(6.0)


@pytest.mark.parametrize("conf, message", [
    ({"interactive_limit_minutes": -1}, "interactive_limit_minutes must be a number of minutes >= 0"),
    ({"interactive_limit_minutes": "30"}, "must be a number of minutes"),
    ({"interactive_limit_minutes": True}, "must be a number of minutes"),
    ({"interactive_archive_retries": "yes"}, "archive_retries must be True or False"),
    ({"interactive_decision_timeout_minutes": 0}, "decision_timeout_minutes must be > 0"),
    ({"interactive_redis_url": "amqp://guest@localhost//"}, "interactive_redis_url must be a redis:// URL"),
    ({"interactive_key_prefix": "a:b"}, "interactive_key_prefix must be"),
    ({"interactive_stream_maxlen": 10}, "interactive_stream_maxlen must be an integer >= 64"),
    ({"interactive_redact_keys": "password"}, "interactive_redact_keys must be a list"),
    ({"interactive_operators": [""]}, "interactive_operators must be a list of names"),
    ({"result_backend": "rpc://"}, "cannot store a custom state"),
    ({"result_backend": None}, "result backend is disabled"),
    ({"result_expires": 600}, "longer than result_expires"),
    ({"result_expires": timedelta(minutes=10), "interactive_decision_timeout_minutes": 11}, "longer than result_expires"),
])
def test_bad_app_config_is_refused_with_a_clear_message(conf, message):
    """Each malformed app setting raises one ConfigurationError that names the setting."""
    with pytest.raises(ConfigurationError, match=message):
        settings_for(app_with(**conf))


def test_non_redis_broker_and_backend_need_an_explicit_url():
    app = Celery("cfg", broker="amqp://localhost//", backend="db+sqlite:///x.db", set_as_current=False)
    with pytest.raises(ConfigurationError, match="neither the broker nor the result backend is Redis"):
        settings_for(app)
    app.conf.interactive_redis_url = "redis://127.0.0.1:1/3"
    assert settings_for(app).redis_url.endswith("/3")


def test_task_keywords_are_validated_and_layered():
    """Decorator keywords override the app; bad ones fail with the task's name."""
    app = app_with(interactive_limit_minutes=5, result_expires=3600)

    # shared=False: a shared task would be added to every app finalized later in this process.
    @app.task(base=InteractiveTask, name="good", interactive_limit_minutes=2, archive_retries=False, shared=False)
    def good():
        pass

    @app.task(base=InteractiveTask, name="bad", decision_timeout_minutes=120, shared=False)
    def bad():
        pass

    @app.task(base=InteractiveTask, name="inherits", shared=False)
    def inherits():
        pass

    assert flow_params(good).limit_minutes == 2 and flow_params(good).archive_retries is False
    assert flow_params(inherits).limit_minutes == 5
    with pytest.raises(ConfigurationError, match="task bad: the decision timeout"):
        flow_params(bad)


def test_startup_check_warns_on_eviction_policy(caplog):
    """A Redis that may evict keys gets a loud warning, read through INFO."""
    with RedisServer(extra=("--maxmemory-policy", "allkeys-lru")) as server:
        app = app_with(broker_url=server.url, result_backend=server.url)
        caplog.set_level(logging.WARNING, logger="interactive_celery")
        info = check_server(Store(settings_for(app)))
    assert info["maxmemory_policy"] == "allkeys-lru"
    assert any("maxmemory-policy is 'allkeys-lru'" in r.getMessage() for r in caplog.records)


def test_startup_check_accepts_noeviction(caplog, redis_url):
    app = app_with(broker_url=redis_url, result_backend=redis_url)
    caplog.set_level(logging.WARNING, logger="interactive_celery")
    assert check_server(Store(settings_for(app)))["maxmemory_policy"] == "noeviction"
    assert not caplog.records


def test_old_redis_is_refused():
    """Redis older than 6.2 is refused (kombu 5.7 and XAUTOCLAIM need 6.2)."""
    from interactive_celery.store import MIN_REDIS

    assert MIN_REDIS == (6, 2)
    with pytest.raises(IncompatibleRedis, match="6.0.9 is too old"):
        check_server(_FixedInfo("6.0.9"))


class _FixedInfo:
    """A store stand-in that reports a fixed server version (no Redis 6.0 binary is available here)."""

    def __init__(self, version):
        self.version = version

    def server_info(self):
        return {"redis_version": self.version, "maxmemory_policy": "noeviction"}


def test_key_schema_is_the_documented_one():
    """Every key pattern, in one place; a change here is a schema change to review."""
    assert Keys("interactive").all_patterns() == [
        "{interactive}:incident:*", "{interactive}:tries:*", "{interactive}:message:*",
        "{interactive}:operator:*", "{interactive}:open", "{interactive}:active", "{interactive}:resolved",
        "{interactive}:ids", "{interactive}:deadlines", "{interactive}:presence", "{interactive}:stream",
        "{interactive}:decisions", "{interactive}:audit",
    ]
    import interactive_celery.keys as keys_module

    for pattern in Keys("P").all_patterns():  # and each is documented in keys.py's docstring
        assert f"``{pattern.replace('{P}', 'P').rstrip('*')}" in keys_module.__doc__
