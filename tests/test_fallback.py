"""Fail without a worker on the task's queue, and soft time limits."""

from __future__ import annotations

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from interactive_celery import AWAITING_OPERATOR, InteractiveTask, OperatorAPI
from interactive_celery.testing import wait_for
from tests.conftest import running_worker
from tests.helpers import wait_incident_state, wait_state

pytestmark = pytest.mark.legacy


class LedgerLocked(Exception):
    pass


def test_fail_falls_back_to_the_backend_when_no_worker_replays_it(app_factory):
    """A fail whose replay no worker picks up (nobody consumes the task's queue) is stored directly
    after interactive_replay_fallback_seconds: get() raises the original type, errbacks run once."""
    app = app_factory(interactive_replay_fallback_seconds=1)
    alice = OperatorAPI(app, "alice")
    alice.heartbeat()
    calls = {"errback": 0}

    @app.task(base=InteractiveTask, name=f"{app.main}.close_books")
    def close_books():
        raise LedgerLocked("ledger locked by month-end")

    @app.task(name=f"{app.main}.notify")
    def notify(request, exc, traceback):
        calls["errback"] += 1

    with running_worker(app):
        result = close_books.apply_async(link_error=notify.s())
        wait_state(result, AWAITING_OPERATOR)
    # From now on only a worker for another queue runs: it applies decisions, but nobody consumes
    # the task's queue, so the replay message is never picked up.
    with running_worker(app, queues=["elsewhere"]):
        alice.fail(result.id, reason="month-end", wait=10)
        with pytest.raises(LedgerLocked, match="ledger locked"):
            result.get(timeout=30)
        incident = wait_incident_state(alice, result.id, "failed")
        assert incident["replayed"] == "direct"
        wait_for(lambda: calls["errback"] == 1, timeout=10, what="the errback")
    assert "in close_books" in result.traceback
    # The stale replay message is still queued; a worker that takes it later drops it (fenced).
    # (start_worker's queue selection sticks to the app, hence the explicit queue.)
    with running_worker(app, queues=[app.conf.task_default_queue]):
        wait_for(lambda: app.backend.client.llen(app.conf.task_default_queue) == 0, timeout=10,
                 what="the stale replay message to be consumed")
    assert result.state == "FAILURE" and calls["errback"] == 1


def test_soft_time_limit_parks_like_any_exception(app, alice):
    """SoftTimeLimitExceeded is an ordinary exception to interactive mode: it parks."""
    @app.task(base=InteractiveTask, name=f"{app.main}.slow")
    def slow():
        raise SoftTimeLimitExceeded("soft time limit (10s) exceeded")

    with running_worker(app):
        result = slow.delay()
        wait_state(result, AWAITING_OPERATOR)
        assert alice.incident(result.id)["exc_type"] == "SoftTimeLimitExceeded"
        alice.fail(result.id, wait=10)
        with pytest.raises(SoftTimeLimitExceeded):
            result.get(timeout=20)
