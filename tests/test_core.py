"""Core behaviour of InteractiveTask against a real Redis and a real worker."""

from __future__ import annotations

import threading

import pytest
from celery.exceptions import Ignore

from interactive_celery import AWAITING_OPERATOR, InteractiveTask
from tests.conftest import running_worker
from tests.helpers import wait_incident_state, wait_state

pytestmark = pytest.mark.legacy


class FileMissing(Exception):
    pass


def flaky_task(app, state):
    @app.task(base=InteractiveTask, name=f"{app.main}.import_file")
    def import_file(path):
        state["runs"] = state.get("runs", 0) + 1
        if not state.get("fixed"):
            raise FileMissing(f"{path} has not arrived")
        return f"imported {path}"

    return import_file


def test_unattended_failure_is_plain_celery_failure(app, rclient):
    """With no operator online the task fails at once, exactly like a plain task, and no incident exists."""
    state = {}
    task = flaky_task(app, state)
    with running_worker(app):
        result = task.delay("a.csv")
        with pytest.raises(FileMissing, match="a.csv has not arrived"):
            result.get(timeout=20)
    assert result.state == "FAILURE"
    assert not rclient.exists(f"{{{app.conf.interactive_key_prefix}}}:incident:{result.id}")
    assert rclient.xlen(f"{{{app.conf.interactive_key_prefix}}}:stream") == 0


def test_attended_failure_parks_then_retry_succeeds_under_same_id(app, alice, rclient):
    """An online operator sees the failure parked; after a fix, retry finishes the same task id and a
    caller blocked in get() since the first try receives the value."""
    state = {}
    task = flaky_task(app, state)
    with running_worker(app):
        result = task.delay("b.csv")
        got = {}
        waiter = threading.Thread(target=lambda: got.update(value=result.get(timeout=60)))
        waiter.start()
        wait_state(result, AWAITING_OPERATOR)
        assert result.info["exc_type"] == "FileMissing"

        incident = alice.incident(result.id)
        assert incident["state"] == "open" and incident["try"] == 1
        assert incident["exc_message"] == "b.csv has not arrived"
        entries = rclient.xrange(f"{{{app.conf.interactive_key_prefix}}}:stream")
        assert [e[1]["type"] for e in entries] == ["incident.opened"]
        # No broker message remains while it waits: nothing queued, nothing unacked.
        assert rclient.llen(app.conf.task_default_queue) == 0
        assert rclient.hlen("unacked") == 0

        state["fixed"] = True
        decision = alice.retry(result.id[:8], reason="file is back", wait=10)
        assert decision.applied and decision.applied_by
        waiter.join(timeout=30)
        assert got["value"] == "imported b.csv"
        assert result.state == "SUCCESS"
        assert state["runs"] == 2
        wait_incident_state(alice, result.id, "succeeded")
        history = alice.history(result.id)
        assert [t["outcome"] for t in history] == ["failed", "succeeded"]
        assert history[0]["exc_type"] == "FileMissing" and "has not arrived" in history[0]["traceback"]
