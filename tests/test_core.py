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
        # No broker message remains while it waits: nothing queued, nothing unacked (the ack
        # follows the parked state by a moment).
        from interactive_celery.testing import wait_for

        assert rclient.llen(app.conf.task_default_queue) == 0
        wait_for(lambda: not any(result.id in v for v in rclient.hvals("unacked")), timeout=10,
                 what="the message to be acked")

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


def test_fail_replays_the_original_failure_through_celery(app, alice):
    """Fail ends the flow as Celery ends a failure: the original exception type from get(), the
    original frames in the stored traceback, the errback once, on_failure and task_failure once."""
    from celery import signals

    seen = {"on_failure": 0, "signal": 0, "errback": 0}

    class Tracked(InteractiveTask):
        def on_failure(self, exc, task_id, args, kwargs, einfo):
            seen["on_failure"] += 1

    @app.task(base=Tracked, name=f"{app.main}.load_ledger")
    def load_ledger(path):
        raise FileMissing(f"{path} is missing")

    @app.task(name=f"{app.main}.on_error")
    def on_error(request, exc, traceback):
        seen["errback"] += 1

    def on_signal(sender=None, **kwargs):
        if sender is not None and sender.name == load_ledger.name:
            seen["signal"] += 1

    signals.task_failure.connect(on_signal, weak=False)
    try:
        with running_worker(app):
            result = load_ledger.apply_async(("ledger.csv",), link_error=on_error.s())
            wait_state(result, AWAITING_OPERATOR)
            decision = alice.fail(result.id, reason="cannot be fixed today", wait=10)
            assert decision.applied
            with pytest.raises(FileMissing, match="ledger.csv is missing"):
                result.get(timeout=20)
            assert "in load_ledger" in result.traceback  # the original frame, kept as a note
            from interactive_celery.testing import wait_for
            wait_for(lambda: seen["errback"] == 1, timeout=10, what="the errback")
            incident = wait_incident_state(alice, result.id, "failed")
            assert incident["decision"] == "fail" and incident["decided_by"] == "alice"
    finally:
        signals.task_failure.disconnect(on_signal)
    assert seen == {"on_failure": 1, "signal": 1, "errback": 1}


def test_timeout_fails_never_before_the_deadline(app, alice):
    """With no decision, the flow fails with its original exception after the decision timeout,
    never before it, and within a generous bound after it."""
    import time

    @app.task(base=InteractiveTask, name=f"{app.main}.sync", decision_timeout_minutes=0.03)
    def sync():
        raise FileMissing("partner offline")

    since = time.time()
    with running_worker(app):
        result = sync.delay()
        wait_state(result, AWAITING_OPERATOR)
        deadline = float(alice.store.incident(result.id)["deadline"])
        with pytest.raises(FileMissing):
            result.get(timeout=30)
        ended = time.time()
        assert ended >= deadline
        incident = wait_incident_state(alice, result.id, "failed")
        assert incident["decision"] == "timeout" and float(incident["decided_at"]) >= deadline
    assert "before the deadline" in result.traceback
    # The sweeper keeps a timeout in the incident only; history and audit still show it on the try.
    [parked_try] = alice.history(result.id)
    assert (parked_try["try"], parked_try["decision"], parked_try["decided_by"]) == (1, "timeout", "timeout")
    assert parked_try["decided_at"].endswith("Z")
    assert [(r["id"], r["try"], r["decision"], r["operator"], r["reason"]) for r in alice.audit(since=since)] == [
        (result.id, 1, "timeout", "timeout", "no decision before the deadline")]


def test_chain_parked_then_retried_continues_once(app, alice):
    """chain(a, flaky, b): parked, fixed, retried; the final result is right and b runs once."""
    from celery import chain

    state = {"b_runs": 0}

    @app.task(name=f"{app.main}.fetch")
    def fetch(n):
        return n + 1

    @app.task(base=InteractiveTask, name=f"{app.main}.transform")
    def transform(n):
        if not state.get("fixed"):
            raise FileMissing("mapping table missing")
        return n * 10

    @app.task(name=f"{app.main}.store_total")
    def store_total(n):
        state["b_runs"] += 1
        return f"stored {n}"

    with running_worker(app):
        result = chain(fetch.s(1), transform.s(), store_total.s()).delay()
        middle = result.parent
        wait_state(middle, AWAITING_OPERATOR)
        state["fixed"] = True
        alice.retry(middle.id, wait=10)
        assert result.get(timeout=30) == "stored 20"
    assert state["b_runs"] == 1


def _chord_tasks(app, state):
    @app.task(name=f"{app.main}.part_ok")
    def part_ok(n):
        return n

    @app.task(base=InteractiveTask, name=f"{app.main}.part_flaky")
    def part_flaky(n):
        if not state.get("fixed"):
            raise FileMissing(f"part {n} input missing")
        return n

    @app.task(name=f"{app.main}.summary")
    def summary(values):
        state["summary_runs"] = state.get("summary_runs", 0) + 1
        return sum(values)

    return part_ok, part_flaky, summary


def test_chord_member_retried_completes_body_with_all_results(app, alice):
    """chord([ok, flaky, ok], body): the body waits while the member is parked, then gets all results."""
    from celery import chord

    state = {}
    part_ok, part_flaky, summary = _chord_tasks(app, state)
    with running_worker(app):
        result = chord([part_ok.s(1), part_flaky.s(2), part_ok.s(3)])(summary.s())
        flaky_id = [r for r in result.parent.results if r.state != "SUCCESS" or True][1].id
        wait_state(app.AsyncResult(flaky_id), AWAITING_OPERATOR)
        assert state.get("summary_runs") is None
        state["fixed"] = True
        alice.retry(flaky_id, wait=10)
        assert result.get(timeout=30) == 6
    assert state["summary_runs"] == 1


def test_chord_member_failed_errors_the_body_once(app, alice):
    """A fail decision on a chord member errors the chord body exactly once."""
    from celery import chord
    from celery.exceptions import ChordError

    state = {}
    part_ok, part_flaky, summary = _chord_tasks(app, state)
    with running_worker(app):
        result = chord([part_ok.s(1), part_flaky.s(2), part_ok.s(3)])(summary.s())
        flaky_id = result.parent.results[1].id
        wait_state(app.AsyncResult(flaky_id), AWAITING_OPERATOR)
        alice.fail(flaky_id, wait=10)
        with pytest.raises((ChordError, FileMissing)):
            result.get(timeout=30)
        # get() re-raises the member's error as soon as the member's FAILURE is stored (it checks
        # the parents first); the body's FAILURE is stored just after, by on_chord_part_return.
        wait_state(result, "FAILURE")
    assert state.get("summary_runs") is None


def test_autoretry_is_exhausted_before_the_operator_sees_it(app, alice):
    """autoretry_for with max_retries=2: the flow parks only after the third failure."""
    state = {"runs": 0}

    @app.task(base=InteractiveTask, name=f"{app.main}.poll", autoretry_for=(FileMissing,),
              max_retries=2, default_retry_delay=0)
    def poll():
        state["runs"] += 1
        raise FileMissing(f"attempt {state['runs']}")

    with running_worker(app):
        result = poll.delay()
        from interactive_celery.testing import wait_for

        wait_for(lambda: alice.incidents("open"), timeout=20, what="the incident")
        assert state["runs"] == 3
        assert alice.incident(result.id)["exc_message"] == "attempt 3"
        # Celery may store the second run's RETRY after the third run parked; the sweeper restores it.
        wait_state(result, AWAITING_OPERATOR, timeout=20)


def test_concurrent_retries_one_wins_and_body_runs_once_more(app, alice):
    """Two threads retry the same incident: one wins, the other is refused, one more run."""
    from concurrent.futures import ThreadPoolExecutor

    from interactive_celery import AlreadyDecided, OperatorAPI

    state = {"runs": 0}

    @app.task(base=InteractiveTask, name=f"{app.main}.once")
    def once():
        state["runs"] += 1
        if state["runs"] == 1:
            raise FileMissing("first run fails")
        return "ok"

    bob = OperatorAPI(app, "bob")
    with running_worker(app):
        result = once.delay()
        wait_state(result, AWAITING_OPERATOR)
        barrier = threading.Barrier(2)

        def decide(api):
            barrier.wait()
            try:
                return api.retry(result.id, wait=0)
            except AlreadyDecided as exc:
                return exc

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(decide, [alice, bob]))
        assert result.get(timeout=20) == "ok"
    refused = [o for o in outcomes if isinstance(o, AlreadyDecided)]
    assert len(refused) == 1 and "already decided: retry by" in str(refused[0])
    assert state["runs"] == 2


def test_custom_header_survives_a_retry(app, alice):
    """A caller's custom message header is still there on the operator-issued try."""
    state = {}

    @app.task(base=InteractiveTask, bind=True, name=f"{app.main}.tenant_job")
    def tenant_job(self):
        headers = self.request.headers or {}
        tenant = getattr(self.request, "x_tenant", None) or headers.get("x_tenant")
        state.setdefault("tenants", []).append(tenant)
        if len(state["tenants"]) == 1:
            raise FileMissing("first try fails")
        return tenant

    with running_worker(app):
        result = tenant_job.apply_async(headers={"x_tenant": "acme"})
        wait_state(result, AWAITING_OPERATOR)
        alice.retry(result.id, wait=10)
        assert result.get(timeout=20) == "acme"
    assert state["tenants"] == ["acme", "acme"]


def test_passes_celery_control_flow_through(app, alice, rclient):
    """Ignore raised by the body is Celery's own control flow, never parked."""
    from interactive_celery.testing import wait_for

    ran = []

    @app.task(base=InteractiveTask, name=f"{app.main}.skip")
    def skip():
        ran.append(True)
        raise Ignore()

    with running_worker(app):
        result = skip.delay()
        wait_for(lambda: ran, timeout=10, what="the body to run")
        # The ack follows __call__, so once the message is gone the interception is over.
        wait_for(lambda: not any(result.id in v for v in rclient.hvals("unacked")), timeout=10,
                 what="the message to be acked")
    assert alice.incidents("any") == []
    assert result.state == "PENDING"


def test_direct_and_eager_calls_never_park(app, alice):
    """Calling the task directly or eagerly raises at once, even with an operator online."""
    @app.task(base=InteractiveTask, name=f"{app.main}.direct")
    def direct():
        raise FileMissing("direct call")

    with pytest.raises(FileMissing):
        direct()
    with pytest.raises(FileMissing):
        direct.apply().get()
    assert alice.incidents("any") == []
