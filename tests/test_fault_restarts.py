"""Duplicates and restarts: redelivered and re-sent messages, Redis restarted from its AOF, a worker
killed while flows are parked.

Redis unreachable at the moment of a failure is tested in tests/test_paths.py
(``test_redis_for_incidents_unreachable_fails_plainly_and_loudly``): the flow fails the plain Celery
way with an error line in the ``interactive_celery`` log, and the worker keeps running.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from interactive_celery import AWAITING_OPERATOR, OperatorAPI, interactive
from interactive_celery.keys import Keys
from interactive_celery.testing import RedisServer, wait_for
from interactive_celery.worker import Applier
from tests.conftest import running_worker
from tests.fault_app import Broken, build, fixed_key, runs_key
from tests.fault_support import SLOW, lab_factory, seed_incident, snapshot  # noqa: F401 (a fixture)
from tests.helpers import wait_incident_state, wait_state

pytestmark = pytest.mark.fault


def test_a_first_try_redelivered_while_parked_is_parked_once_and_dropped_after_the_decision(lab_factory):
    """A first try outlives the broker's 2 s visibility timeout, so kombu delivers a second copy while
    the first still runs. The copy fails and parks; the flow is parked once (one incident, one
    ``incident.opened``). The operator retries it and it succeeds; when the first copy finally fails,
    it is dropped as stale: SUCCESS stays, nothing is re-announced, no try starts again."""
    lab = lab_factory(visibility_s=2)
    worker = lab.worker("w")
    lab.alice.heartbeat()
    result = lab.flaky.delay(gated=True)
    lab.wait_parked(result, 1)
    assert lab.runs(result.id) == 2  # both copies ran the first try: Celery's own redelivery
    assert lab.events(result.id) == ["incident.opened"]

    lab.fix(result.id)
    assert lab.alice.retry(result.id, wait=SLOW).applied
    assert result.get(timeout=SLOW) == "ok after 3 runs"
    lab.open_gate(result.id)  # the first copy now fails, long after the flow ended
    wait_for(lambda: f"dropping a stale failure of {result.id}" in worker.log(), timeout=SLOW,
             what="the late copy to be dropped")
    assert lab.app.AsyncResult(result.id).state == "SUCCESS"
    assert lab.app.AsyncResult(result.id).result == "ok after 3 runs"
    assert lab.incident(result.id)["state"] == "succeeded" and lab.tries(result.id) == [1, 2]
    assert lab.events(result.id) == ["incident.opened", "incident.decided", "incident.retried", "incident.succeeded"]
    assert lab.runs(result.id) == 3


def test_re_sent_retry_messages_never_start_a_try_twice(lab_factory):
    """Copies of one operator-issued message (an applier that sent, died before acknowledging and was
    replaced; a message redelivered late) arrive before the try, while the try is parked again and
    after the flow succeeded: the fencing token lets exactly one copy run the body."""
    lab = lab_factory()
    first = lab.worker("w1")
    lab.alice.heartbeat()
    result = lab.flaky.delay()
    lab.wait_parked(result, 1)
    first.stop()

    lab.alice.retry(result.id, wait=0)
    resender = Applier(lab.app, "resender")
    applied = resender.store.apply(result.id, 1, now=time.time(), worker="resender", fallback_at=0)
    for _ in range(2):
        resender.send(result.id, applied)
    worker = lab.worker("w2")  # its applier claims the decision too and sends one more copy
    lab.wait_parked(result, 2)  # try 2 ran once and failed again
    dropped = lambda: worker.log().count(f"dropping stale message for {result.id}")  # noqa: E731
    wait_for(lambda: dropped() >= 2, timeout=SLOW, what="the extra copies to be dropped")
    assert lab.runs(result.id) == 2

    count = dropped()
    resender.send(result.id, applied)  # a late copy while try 2 waits for an operator
    wait_for(lambda: dropped() == count + 1, timeout=SLOW, what="the late copy to be dropped")
    assert lab.runs(result.id) == 2 and lab.incident(result.id)["state"] == "open"

    lab.fix(result.id)
    lab.alice.retry(result.id, wait=SLOW)
    assert result.get(timeout=SLOW) == "ok after 3 runs"
    resender.send(result.id, applied)  # a copy of try 2 after the flow succeeded
    wait_for(lambda: dropped() == count + 2, timeout=SLOW, what="the copy after success to be dropped")
    assert lab.runs(result.id) == 3 and lab.app.AsyncResult(result.id).result == "ok after 3 runs"
    assert lab.events(result.id).count("incident.retried") == 2


def test_redis_restarted_from_its_aof_keeps_parked_flows_decidable(tmp_path):
    """Redis with appendonly is stopped and started again on the same port and data directory while
    three flows are parked: incidents, tries, deadlines, both streams and Celery's parked state come
    back intact, and afterwards a retry succeeds, a fail fails, and a deadline fires (never before it)."""
    server = RedisServer(appendonly=True, data_dir=str(tmp_path)).start()
    prefix = f"a{uuid.uuid4().hex[:10]}"
    try:
        app = build(server.url, prefix)
        flaky = app.tasks["fault.flaky"]
        OperatorAPI(app, "alice").heartbeat()
        with running_worker(app):
            flows = [flaky.delay(), flaky.delay(),
                     interactive(flaky.s(), decision_timeout_minutes=0.2).delay()]
            for flow in flows:
                wait_state(flow, AWAITING_OPERATOR)
        before = snapshot(server_client(server), prefix)
        assert len(before) >= 10
        server.stop(keep_data=True)

        server = RedisServer(port=server.port, appendonly=True, data_dir=str(tmp_path)).start()
        client = server_client(server)
        assert snapshot(client, prefix) == before
        keys = Keys(prefix)
        assert [g["name"] for g in client.xinfo_groups(keys.decisions)] == ["appliers"]

        app = build(server.url, prefix)  # processes restart with Redis: a new app, new connections
        alice = OperatorAPI(app, "alice")
        assert [app.AsyncResult(f.id).state for f in flows] == [AWAITING_OPERATOR] * 3
        retried, failed, timed_out = (app.AsyncResult(f.id) for f in flows)
        client.set(fixed_key(prefix, retried.id), "1")
        with running_worker(app):
            alice.retry(retried.id, wait=SLOW)
            alice.fail(failed.id, wait=SLOW)
            assert retried.get(timeout=SLOW) == "ok after 2 runs"
            with pytest.raises(Broken):
                failed.get(timeout=SLOW)
            with pytest.raises(Broken):
                timed_out.get(timeout=SLOW)
        ended = wait_incident_state(alice, timed_out.id, "failed")
        assert ended["decision"] == "timeout" and float(ended["decided_at"]) >= float(ended["deadline"])
        assert [int(client.get(runs_key(prefix, f.id))) for f in flows] == [2, 1, 1]
    finally:
        server.stop()


def server_client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True)


def test_timeouts_fire_after_a_worker_killed_while_flows_were_parked(lab_factory):
    """The only worker is killed (kill -9) while three flows are parked with a short decision
    timeout. While no worker runs, nothing times out; once a new worker starts, every deadline
    fires exactly once, each after its deadline, with the original exception."""
    lab = lab_factory()
    first = lab.worker("w1")
    lab.alice.heartbeat()
    flows = [interactive(lab.flaky.s(), decision_timeout_minutes=0.05).delay() for _ in range(3)]
    deadlines = [float(lab.wait_parked(flow, 1)["deadline"]) for flow in flows]
    first.kill()

    time.sleep(max(0.0, max(deadlines) - time.time()) + 2)  # past every deadline, with no worker
    assert [lab.incident(f.id)["state"] for f in flows] == ["open"] * 3

    lab.worker("w2")
    for flow, deadline in zip(flows, deadlines):
        with pytest.raises(Broken):
            flow.get(timeout=SLOW)
        ended = wait_incident_state(lab.alice, flow.id, "failed", timeout=SLOW)
        assert ended["decision"] == "timeout" and float(ended["decided_at"]) >= deadline
        assert lab.events(flow.id) == ["incident.opened", "incident.decided", "incident.timed_out"]
        assert lab.runs(flow.id) == 1


@pytest.mark.parametrize("stage", ["decided", "replaying", "retrying"])
def test_a_late_copy_of_a_decided_try_is_stale_and_changes_nothing(app, alice, rclient, stage):
    """A redelivered copy of try 1 that fails after an operator decided on try 1 (recorded, being
    replayed, or retried) is answered ``stale`` by the park script and writes nothing, so the worker
    drops it without storing AWAITING_OPERATOR again: a late re-park could otherwise land on top of
    the FAILURE that the replay stores, and the flow would wait forever."""
    task_id = str(uuid.uuid4())
    seed_incident(alice.store, task_id)
    alice.decide(task_id, "retry" if stage == "retrying" else "fail", wait=0)
    if stage != "decided":
        alice.store.apply(task_id, 1, now=time.time(), worker="w", fallback_at=time.time() + 60)
    before = snapshot(rclient, app.conf.interactive_key_prefix)
    assert seed_incident(alice.store, task_id) == ("stale", stage)
    assert snapshot(rclient, app.conf.interactive_key_prefix) == before
