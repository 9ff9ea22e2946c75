"""What each path costs in Redis, what is kept in the history, and what operators can read."""

from __future__ import annotations

import contextlib
import threading
import uuid

import pytest
import redis

from interactive_celery import AWAITING_OPERATOR, InteractiveTask, OperatorAPI
from interactive_celery.testing import RedisServer, wait_for
from interactive_celery.worker import Applier
from tests.conftest import running_worker
from tests.fault_support import seed_incident
from tests.helpers import wait_incident_state, wait_state

pytestmark = pytest.mark.legacy


class Broken(Exception):
    pass


@contextlib.contextmanager
def monitored(url: str):
    """Record every command clients send to the Redis server (MONITOR) while the block runs."""
    client = redis.Redis.from_url(url, decode_responses=True)
    commands: list[str] = []
    stop = threading.Event()
    ready = threading.Event()

    def run():
        with client.monitor() as monitor:
            ready.set()
            for event in monitor.listen():
                if event.get("client_type") != "lua":  # commands run inside our scripts
                    commands.append(event["command"])
                if stop.is_set():
                    return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield commands
    finally:
        stop.set()
        client.ping()  # wakes the monitor loop so it can see the stop flag
        thread.join(5)


def ours(commands: list[str], prefix: str) -> list[str]:
    """Commands on our keys or running scripts, except the applier's blocking read of the decisions
    stream, which every worker runs in the background whatever its tasks do."""
    return [c for c in commands
            if (f"{{{prefix}}}" in c or c.upper().startswith(("EVALSHA", "EVAL ", "SCRIPT")))
            and f"{{{prefix}}}:decisions" not in c]


@pytest.fixture
def quiet_app(app_factory):
    """An app whose sweeper runs once at worker start and then sleeps, so MONITOR sees tasks only."""
    return app_factory(interactive_sweep_interval_seconds=3600)


def test_success_path_issues_no_redis_command_of_ours(quiet_app, redis_url):
    """A first try that succeeds touches none of our keys and runs none of our scripts."""
    app = quiet_app
    OperatorAPI(app, "alice").heartbeat()

    @app.task(base=InteractiveTask, name=f"{app.main}.noop")
    def noop(n):
        return n

    with running_worker(app):
        noop.delay(0).get(timeout=10)  # warm up connections
        with monitored(redis_url) as commands:
            assert [noop.delay(i).get(timeout=10) for i in range(20)] == list(range(20))
    assert commands, "MONITOR saw nothing: the check would prove nothing"
    assert ours(commands, app.conf.interactive_key_prefix) == []


def test_failure_path_is_one_round_trip_of_ours(app, alice, redis_url):
    """Parking costs exactly one script call of our own (Celery's state write and event are its own)."""
    @app.task(base=InteractiveTask, name=f"{app.main}.bad")
    def bad():
        raise Broken("boom")

    with running_worker(app, concurrency=1):
        with monitored(redis_url) as commands:
            result = bad.delay()
            wait_state(result, AWAITING_OPERATOR)
            def parks():
                return [c for c in ours(commands, app.conf.interactive_key_prefix)
                        if "EVALSHA" in c.upper() and f"incident:{result.id}" in c]

            wait_for(parks, timeout=5, what="MONITOR to report the park")  # its feed may lag
        assert len(parks()) == 1
        alice.fail(result.id, wait=10)


def test_a_fresh_decision_is_applied_before_stale_entries_are_claimed(app, alice, redis_url):
    """The periodic claim of stale entries (XAUTOCLAIM) comes after the decisions just read: run
    first, it put one more round trip in front of a new decision about once a second."""
    task_id = str(uuid.uuid4())
    seed_incident(alice.store, task_id, task=f"{app.main}.absent")
    alice.retry(task_id, wait=0)
    applier = Applier(app, "applier-1")  # a fresh applier: its first claim is due at once
    with monitored(redis_url) as commands:
        applier.start()
        try:
            wait_for(lambda: any(c.upper().startswith("XAUTOCLAIM") for c in commands), timeout=10,
                     what="the claim")
        finally:
            applier.stop()
    apply_sha = applier.store._scripts["apply"].sha
    names = [c.split()[0].upper() + (" apply" if apply_sha in c else "") for c in commands]
    assert "EVALSHA apply" in names, names
    assert names.index("EVALSHA apply") < names.index("XAUTOCLAIM"), names
    assert wait_incident_state(alice, task_id, "retrying")["applied_by"] == "applier-1"


def test_unattended_failure_costs_one_presence_check(quiet_app, redis_url, rclient):
    """Nobody online: one script call answers 'unattended' and writes nothing."""
    app = quiet_app
    @app.task(base=InteractiveTask, name=f"{app.main}.bad")
    def bad():
        raise Broken("boom")

    with running_worker(app, concurrency=1):
        with monitored(redis_url) as commands:
            result = bad.delay()
            with pytest.raises(Broken):
                result.get(timeout=10)
    prefix = app.conf.interactive_key_prefix
    assert len(ours(commands, prefix)) == 1 and f"incident:{result.id}" in ours(commands, prefix)[0]
    assert list(rclient.scan_iter(match=f"{{{prefix}}}:incident:*")) == []


def test_limit_zero_means_never_attended_and_no_redis(quiet_app, redis_url):
    """interactive_limit_minutes=0: fails plainly without asking Redis, even with operators online."""
    app = quiet_app
    OperatorAPI(app, "alice").heartbeat()
    @app.task(base=InteractiveTask, name=f"{app.main}.night", interactive_limit_minutes=0)
    def night():
        raise Broken("nightly")

    with running_worker(app, concurrency=1):
        with monitored(redis_url) as commands:
            with pytest.raises(Broken):
                night.delay().get(timeout=10)
    assert ours(commands, app.conf.interactive_key_prefix) == []


def test_redis_for_incidents_unreachable_fails_plainly_and_loudly(app_factory, caplog):
    """If our Redis is down at the moment of failure, the task fails the plain Celery way (never
    silently lost), with an error log line; the worker itself keeps running."""
    import logging

    caplog.set_level(logging.ERROR, logger="interactive_celery")
    with RedisServer() as gone:
        dead_url = gone.url
    app = app_factory(interactive_redis_url=dead_url)

    @app.task(base=InteractiveTask, name=f"{app.main}.bad")
    def bad():
        raise Broken("while redis is away")

    with running_worker(app, concurrency=1):
        with pytest.raises(Broken, match="while redis is away"):
            bad.delay().get(timeout=30)
    assert any("could not park" in r.getMessage() and "failing it plainly" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("archive", [True, False])
def test_archive_keeps_every_try_or_only_the_latest(app, alice, archive):
    """archive_retries=True keeps every try; False keeps the latest finished one plus the current."""
    state = {"runs": 0}

    @app.task(base=InteractiveTask, name=f"{app.main}.stubborn", archive_retries=archive)
    def stubborn():
        state["runs"] += 1
        if state["runs"] < 4:
            raise Broken(f"run {state['runs']}")
        return "done"

    with running_worker(app):
        result = stubborn.delay()
        for expected_try in (1, 2, 3):
            wait_for(lambda: alice.store.incident(result.id).get("try") == str(expected_try)
                     and alice.store.incident(result.id).get("state") == "open", timeout=20)
            alice.retry(result.id, wait=10)
        assert result.get(timeout=20) == "done"
    wait_incident_state(alice, result.id, "succeeded")
    tries = alice.history(result.id)
    if archive:
        assert [t["try"] for t in tries] == [1, 2, 3, 4]
        assert [t["exc_message"] for t in tries[:3]] == ["run 1", "run 2", "run 3"]
        assert all("Traceback" in t["traceback"] for t in tries[:3])
    else:
        assert [t["try"] for t in tries] == [3, 4]
    assert tries[-1]["outcome"] == "succeeded"


def test_operators_never_see_secrets(app, alice, rclient):
    """A secret in kwargs appears in no record an operator can read: incident, history, stream."""
    @app.task(base=InteractiveTask, name=f"{app.main}.login")
    def login(user, password=None, options=None):
        raise Broken("login refused")

    secret = "hunter2-very-secret"
    with running_worker(app):
        result = login.delay("ops", password=secret, options={"api_key": secret, "region": "eu"})
        wait_state(result, AWAITING_OPERATOR)
        incident = alice.incident(result.id)
        assert "'password': '***'" in incident["kwargs"] and "'region': 'eu'" in incident["kwargs"]
        readable = [str(incident), str(alice.history(result.id)),
                    str(rclient.xrange(alice.store.keys.stream))]
        assert all(secret not in text for text in readable)
        # The message to re-send needs the real value; it lives only in the private key.
        import base64

        assert secret in base64.b64decode(rclient.hget(alice.store.keys.message(result.id), "body")).decode()
        alice.fail(result.id, wait=10)


def test_explicit_kwargsrepr_wins(app, alice):
    """A caller's own kwargsrepr decides what operators see."""
    @app.task(base=InteractiveTask, name=f"{app.main}.charge")
    def charge(card=None):
        raise Broken("card declined")

    with running_worker(app):
        result = charge.apply_async(kwargs={"card": "4111111111111111"}, kwargsrepr="{'card': 'ending 1111'}")
        wait_state(result, AWAITING_OPERATOR)
        assert alice.incident(result.id)["kwargs"] == "{'card': 'ending 1111'}"
        alice.fail(result.id, wait=10)
