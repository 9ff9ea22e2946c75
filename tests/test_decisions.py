"""Decisions: refusals, durability without workers, redelivery to another applier, fencing."""

from __future__ import annotations

import logging
import uuid

import pytest
import redis

from interactive_celery import (
    AWAITING_OPERATOR, AlreadyDecided, AmbiguousIncident, BadInput, InteractiveTask, NotWaiting, OperatorAPI,
    Superseded, UnknownIncident,
)
from interactive_celery.keys import Keys
from interactive_celery.store import same_database, store_for
from interactive_celery.testing import wait_for
from interactive_celery.worker import Applier
from tests.conftest import running_worker
from tests.fault_support import seed_incident
from tests.helpers import wait_incident_state, wait_state

pytestmark = pytest.mark.legacy


class PartnerDown(Exception):
    pass


def counting_task(app, state, name="call_partner"):
    @app.task(base=InteractiveTask, name=f"{app.main}.{name}")
    def call_partner():
        state["runs"] = state.get("runs", 0) + 1
        if not state.get("fixed"):
            raise PartnerDown("503 maintenance")
        return "sent"

    return call_partner


def test_decision_without_worker_waits_durably_then_applies(app, alice):
    """With no worker running a decision is recorded, not applied; the next worker applies it."""
    state = {}
    task = counting_task(app, state)
    with running_worker(app):
        result = task.delay()
        wait_state(result, AWAITING_OPERATOR)
    state["fixed"] = True
    decision = alice.retry(result.id, wait=0.5)
    assert decision.recorded and not decision.applied and decision.state == "decided"
    with pytest.raises(AlreadyDecided, match="retry by alice"):
        alice.fail(result.id)
    with running_worker(app):
        assert result.get(timeout=20) == "sent"
    assert state["runs"] == 2


def test_decision_of_a_dead_applier_is_claimed_by_another(app_factory):
    """A decision read by a worker that died before applying it is claimed and applied by another."""
    app = app_factory(interactive_claim_idle_seconds=0.5)
    alice = OperatorAPI(app, "alice")
    alice.heartbeat()
    state = {}
    task = counting_task(app, state)
    with running_worker(app):
        result = task.delay()
        wait_state(result, AWAITING_OPERATOR)
    state["fixed"] = True
    alice.retry(result.id, wait=0)
    store = alice.store
    store.ensure_group()
    # A worker that read the entry and died: delivered to it, never acknowledged.
    assert len(store.read_decisions("dead-worker", block_ms=100)) == 1
    with running_worker(app):
        assert result.get(timeout=20) == "sent"
    assert wait_incident_state(alice, result.id, "succeeded")["applied_by"] != "dead-worker"


def test_duplicate_operator_message_never_runs_twice(app, alice, caplog):
    """Two copies of one operator-issued message (an applier that sent, died before XACK, and was
    replaced): the fencing token lets exactly one run the body."""
    caplog.set_level(logging.INFO, logger="interactive_celery")
    state = {}
    task = counting_task(app, state)
    with running_worker(app):
        result = task.delay()
        wait_state(result, AWAITING_OPERATOR)
    state["fixed"] = True
    alice.retry(result.id, wait=0)
    applier = Applier(app, "applier-1")
    for _ in range(2):  # apply.lua is idempotent for one decision: same fence both times
        applied = applier.store.apply(result.id, 1, now=0, worker="applier-1", fallback_at=0)
        applier.send(result.id, applied)
    with running_worker(app):
        assert result.get(timeout=20) == "sent"
        wait_for(lambda: any("dropping stale message" in r.getMessage() for r in caplog.records),
                 timeout=10, what="the duplicate to be dropped")
    assert state["runs"] == 2
    assert wait_incident_state(alice, result.id, "succeeded")["fence"] == "1"


def test_refusals_are_typed_and_change_nothing(app, alice, rclient):
    """Unknown ids, short or ambiguous prefixes, and decisions on resolved incidents are refused."""
    state = {}
    task = counting_task(app, state)
    with running_worker(app):
        first, second = task.delay(), task.delay()
        wait_state(first, AWAITING_OPERATOR)
        wait_state(second, AWAITING_OPERATOR)
        with pytest.raises(UnknownIncident):
            alice.retry("ffffffff-ffff-ffff-ffff-ffffffffffff")
        with pytest.raises(BadInput, match="at least 8"):
            alice.retry(first.id[:4])
        before = rclient.hgetall(alice.store.keys.incident(first.id))
        with pytest.raises(BadInput):
            alice.decide(first.id, "explode")
        assert rclient.hgetall(alice.store.keys.incident(first.id)) == before

        alice.fail(first.id, wait=10)
        with pytest.raises(PartnerDown):
            first.get(timeout=20)
        wait_incident_state(alice, first.id, "failed")
        with pytest.raises(AlreadyDecided, match="fail by alice"):
            alice.retry(first.id)
        alice.fail(second.id, wait=10)


def test_ambiguous_prefix_lists_candidates(app, alice):
    """Two incidents whose ids share 8+ characters: the prefix is refused with both candidates."""
    @app.task(base=InteractiveTask, name=f"{app.main}.twins")
    def twins():
        raise PartnerDown("down")

    with running_worker(app):
        a = twins.apply_async(task_id="abcdef12-0000-4000-8000-000000000001")
        b = twins.apply_async(task_id="abcdef12-0000-4000-8000-000000000002")
        wait_state(a, AWAITING_OPERATOR)
        wait_state(b, AWAITING_OPERATOR)
        with pytest.raises(AmbiguousIncident) as info:
            alice.retry("abcdef12-0000")
        assert sorted(info.value.candidates) == [a.id, b.id]
        assert alice.incident(a.id)["state"] == "open"  # exact id wins
        alice.fail(a.id, wait=10)
        alice.fail(b.id, wait=10)


def test_revoked_while_parked_is_superseded(app, alice):
    """A flow revoked while it waits closes as superseded, and decisions are refused with why."""
    state = {}
    task = counting_task(app, state)
    with running_worker(app):
        result = task.delay()
        wait_state(result, AWAITING_OPERATOR)
        result.revoke()
        incident = wait_incident_state(alice, result.id, "superseded", timeout=30)
        assert "revoked" in incident["superseded_why"]
        with pytest.raises(Superseded, match="revoked"):
            alice.retry(result.id)
        wait_state(result, "REVOKED")


def test_success_stored_by_celery_supersedes_the_incident(app, alice):
    """When Celery itself stored SUCCESS for a parked flow (a redelivered first try succeeded), the
    incident closes as superseded."""
    state = {}
    task = counting_task(app, state)
    with running_worker(app):
        result = task.delay()
        wait_state(result, AWAITING_OPERATOR)
        # What a redelivered first try that succeeds leaves behind: Celery's own SUCCESS.
        app.backend.mark_as_done(result.id, "sent by a redelivery")
        incident = wait_incident_state(alice, result.id, "superseded", timeout=30)
        assert "SUCCESS" in incident["superseded_why"]
        with pytest.raises(Superseded):
            alice.fail(result.id)


@pytest.mark.parametrize("results, ended", [
    ("in the same Redis database", True), ("in another database", True), ("pickled", True),
    ("pickled", False),
])
def test_the_applier_reads_celerys_state_wherever_results_live(app_factory, redis_url, rclient, results, ended):
    """Before it sends anything the applier checks that Celery has not ended the flow meanwhile (a
    redelivered first try stored SUCCESS). With results in the store's own Redis database the
    apply script reads Celery's result key itself; in another database, or pickled where the
    script cannot read it, the applier asks Celery. Either way an ended flow is superseded and gets
    no message, and a waiting one gets its message."""
    conf = {"result_backend": redis_url.rsplit("/", 1)[0] + "/1"} if results == "in another database" else {}
    if results == "pickled":
        conf.update(result_serializer="pickle", result_accept_content=["json", "pickle"])
    app = app_factory(**conf)
    assert same_database(store_for(app).client, app.backend) == (results != "in another database")
    alice = OperatorAPI(app, "alice")
    alice.heartbeat()
    task_id = str(uuid.uuid4())
    seed_incident(alice.store, task_id, task=f"{app.main}.absent")
    if ended:
        app.backend.mark_as_done(task_id, "stored by a redelivered first try")
    else:
        app.backend.store_result(task_id, {}, AWAITING_OPERATOR)
    if results == "pickled":  # what the apply script cannot read: it asks the applier to use Celery
        assert redis.Redis.from_url(redis_url).get(app.backend.get_key_for_task(task_id)).startswith(b"\x80")
    alice.retry(task_id, wait=0)
    [(_, fields)] = rclient.xrange(Keys(app.conf.interactive_key_prefix).decisions)
    queued = rclient.llen(app.conf.task_default_queue)
    try:
        assert Applier(app, "lone-applier").apply_entry(fields) is not ended
        incident = alice.store.incident(task_id)
        if ended:
            assert incident["state"] == "superseded" and "SUCCESS" in incident["superseded_why"]
            assert rclient.llen(app.conf.task_default_queue) == queued
        else:
            assert incident["state"] == "retrying"
            assert rclient.llen(app.conf.task_default_queue) == queued + 1
    finally:
        app.backend.forget(task_id)


@pytest.mark.parametrize("results", ["in the same Redis database", "in another database", "pickled",
                                     "in Celery's memory cache"])
def test_reconcile_reads_every_open_flows_state_in_one_call(app_factory, redis_url, rclient, results):
    """The upkeep thread's reconcile pass reads Celery's state for a page of open incidents with one
    MGET, decoded as Celery decodes one read (pickled too; the cache backend answers by key). A flow
    Celery ended is superseded, one whose AWAITING_OPERATOR is missing gets it back, and the rest
    are left alone."""
    conf = {"result_backend": redis_url.rsplit("/", 1)[0] + "/1"} if results == "in another database" else {}
    if results == "pickled":
        conf.update(result_serializer="pickle", result_accept_content=["json", "pickle"])
    if results == "in Celery's memory cache":
        conf.update(result_backend="cache+memory://")
    app = app_factory(**conf)
    alice = OperatorAPI(app, "alice")
    alice.heartbeat()
    ids = [str(uuid.uuid4()) for _ in range(7)]
    for task_id in ids:
        seed_incident(alice.store, task_id, task=f"{app.main}.absent")
    ended, missing, waiting = ids[0], ids[1], ids[2:]
    app.backend.mark_as_done(ended, "stored by a redelivered first try")
    for task_id in waiting:
        app.backend.store_result(task_id, {}, AWAITING_OPERATOR)
    rclient.config_resetstat()
    try:
        assert Applier(app, "lone-applier").reconcile() == 1
        calls = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in rclient.info("commandstats").items()}
        assert alice.store.incident(ended)["state"] == "superseded"
        assert app.backend.get_task_meta(missing)["status"] == AWAITING_OPERATOR
        assert {alice.store.incident(task_id)["state"] for task_id in [missing, *waiting]} == {"open"}
        if results != "in Celery's memory cache":
            # One MGET for the open page (the active index is empty), not a GET per flow; Celery
            # itself reads a key before it stores the refreshed AWAITING_OPERATOR.
            assert calls.get("mget") == 1 and calls.get("get", 0) < len(ids), calls
    finally:
        for task_id in ids:
            app.backend.forget(task_id)


def test_every_park_and_decision_logs_one_line(app, alice, caplog):
    """The interactive_celery logger writes one line per park and one per applied decision."""
    caplog.set_level(logging.INFO, logger="interactive_celery")
    state = {}
    task = counting_task(app, state)
    with running_worker(app):
        result = task.delay()
        wait_state(result, AWAITING_OPERATOR)
        state["fixed"] = True
        alice.retry(result.id, wait=10)
        result.get(timeout=20)
    lines = [r.getMessage() for r in caplog.records if r.name == "interactive_celery"]
    assert len([line for line in lines if "parked" in line]) == 1
    assert len([line for line in lines if line.startswith("interactive: applied retry")]) == 1


def test_a_burst_of_decisions_beyond_the_stream_cap_is_never_trimmed(app_factory):
    """More unapplied decisions than interactive_stream_maxlen are all kept and all applied; applied
    entries are deleted, so the decisions stream holds only pending work."""
    app = app_factory(interactive_stream_maxlen=64)
    alice = OperatorAPI(app, "alice")
    alice.heartbeat()

    @app.task(base=InteractiveTask, name=f"{app.main}.batch_item")
    def batch_item(n):
        raise PartnerDown(f"item {n}")

    with running_worker(app):
        results = [batch_item.delay(n) for n in range(80)]
        wait_for(lambda: alice.store.count("open") == 80, timeout=60, what="80 parked flows")
    for result in results:
        alice.fail(result.id, wait=0)
    decisions = alice.store.keys.decisions
    assert alice.store.client.xlen(decisions) == 80
    with running_worker(app):
        for result in results:
            with pytest.raises(PartnerDown):
                result.get(timeout=60)
        wait_for(lambda: alice.store.client.xlen(decisions) == 0, timeout=20, what="applied entries deleted")
