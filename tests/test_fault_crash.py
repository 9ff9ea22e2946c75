"""Crash points: a real ``celery worker`` (prefork, ``task_acks_late=True``,
``task_reject_on_worker_lost=True``, a 3 s broker ``visibility_timeout``) dies with ``kill -9`` at each
named step of park, apply and an operator-issued try (interactive_celery/faults.py). Either the pool
child alone dies (the main process lives on and redelivers), or the whole worker does (a new worker
without the crash hook is started). Every flow must reach a defined end: still parked and
decidable, retried exactly once, failed exactly once, or superseded. docs/reliability.md has the table.

Body runs are counted with INCR on a Redis key of the test's own, so the count survives the processes.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pytest

from interactive_celery import AWAITING_OPERATOR, OperatorAPI
from interactive_celery.keys import Keys
from interactive_celery.testing import wait_for
from tests.conftest import cleanup
from tests.fault_app import Broken, build, fixed_key, runs_key
from tests.fault_support import WorkerProcess, stream_types, unacked

pytestmark = [pytest.mark.fault, pytest.mark.e2e]

SLOW = 60  # liveness bound for anything that needs a worker start or a redelivery


class Lab:
    """One crash experiment: its own key prefix and queue, the test's app, workers it can kill."""

    def __init__(self, redis_url, rclient, tmp_path, *, acks_late: bool = True):
        self.redis_url, self.rclient, self.tmp_path = redis_url, rclient, tmp_path
        self.prefix = f"f{uuid.uuid4().hex[:10]}"
        self.acks_late = acks_late
        self.app = build(redis_url, self.prefix, acks_late=acks_late)
        self.flaky = self.app.tasks["fault.flaky"]
        self.alice = OperatorAPI(self.app, "alice")
        self.marker = tmp_path / f"crashed-{self.prefix}"
        self.workers: list[WorkerProcess] = []

    def worker(self, name: str, *, crash_at: str | None = None, group: bool = False) -> WorkerProcess:
        if crash_at:
            self.marker.touch()  # disarmed until the test removes the marker
        worker = WorkerProcess(self.redis_url, self.prefix, self.tmp_path, name=name, crash_at=crash_at,
                               marker=self.marker if crash_at else None, group=group, acks_late=self.acks_late)
        self.workers.append(worker)
        return worker.start()

    def arm(self) -> None:
        self.marker.unlink()

    def wait_crash(self) -> None:
        wait_for(self.marker.exists, timeout=SLOW, what="the crash point to be reached")

    def runs(self, task_id: str) -> int:
        return int(self.rclient.get(runs_key(self.prefix, task_id)) or 0)

    def fix(self, task_id: str) -> None:
        self.rclient.set(fixed_key(self.prefix, task_id), "1")

    def incident(self, task_id: str) -> dict:
        return self.alice.store.incident(task_id)

    def wait_parked(self, result, try_no: int) -> dict:
        def parked():
            raw = self.incident(result.id)
            return raw if raw.get("state") == "open" and raw.get("try") == str(try_no) \
                and result.state == AWAITING_OPERATOR else None

        raw = wait_for(parked, timeout=SLOW, what=f"{result.id} parked at try {try_no}")
        self.wait_acked()
        return raw

    def wait_acked(self) -> None:
        """Parked flows are acknowledged by the worker's main process a moment after the pool child
        stored AWAITING_OPERATOR; a crash before that ack would redeliver them too."""
        queue = self.app.conf.task_default_queue
        wait_for(lambda: unacked(self.rclient, queue) == 0, timeout=SLOW, what="parked flows to be acked")

    def events(self, task_id: str) -> list[str]:
        return stream_types(self.rclient, self.prefix, task_id)

    def tries(self, task_id: str) -> list[int]:
        return sorted(int(n) for n in self.rclient.hkeys(Keys(self.prefix).tries(task_id)))

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        for key in self.rclient.scan_iter(match=f"fault-{self.prefix}:*"):
            self.rclient.delete(key)
        cleanup(self.app, self.rclient)


@pytest.fixture
def lab_factory(redis_url, rclient, tmp_path):
    made: list[Lab] = []

    def factory(**options) -> Lab:
        made.append(Lab(redis_url, rclient, tmp_path, **options))
        return made[-1]

    yield factory
    for lab in made:
        lab.close()


def _restart_if_dead(lab: Lab, crashed: WorkerProcess, scope: str) -> None:
    """A whole-worker crash: wait until every process of it is gone, then start a worker without the
    crash hook. A child crash: the main process lives on and is the one that recovers."""
    if scope == "worker":
        crashed.wait_dead()
        lab.worker("restarted")
    else:
        assert crashed.alive(), f"the main process died with its child:\n{crashed.log()}"


def _retried_exactly_once(lab: Lab, result, *, runs: int) -> None:
    assert result.get(timeout=SLOW) == f"ok after {runs} runs"
    assert lab.runs(result.id) == runs
    incident = wait_for(lambda: (lambda raw: raw if raw.get("state") == "succeeded" else None)(
        lab.incident(result.id)), timeout=SLOW, what="the incident to close as succeeded")
    assert incident["try"] == "2" and lab.tries(result.id) == [1, 2]
    events = lab.events(result.id)
    assert events.count("incident.retried") == 1 and events.count("incident.succeeded") == 1, events


def _failed_exactly_once(lab: Lab, result, *, runs: int, try_no: int = 1) -> None:
    with pytest.raises(Broken):
        result.get(timeout=SLOW)
    assert result.state == "FAILURE" and lab.runs(result.id) == runs
    incident = wait_for(lambda: (lambda raw: raw if raw.get("state") == "failed" else None)(
        lab.incident(result.id)), timeout=SLOW, what="the incident to close as failed")
    assert incident["try"] == str(try_no)
    events = lab.events(result.id)
    assert events.count("incident.failed") == 1 and events.count("incident.succeeded") == 0, events


# -- park ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["child", "worker"])
@pytest.mark.parametrize("point", ["park.before", "park.after"])
def test_crash_while_parking_a_first_try_leaves_it_parked_and_decidable(lab_factory, point, scope):
    """The first try fails and its worker dies before or after the park script. The unacked message is
    redelivered (by the surviving main process, or after the visibility timeout to the restarted
    worker), the body runs again (Celery's own at-least-once for first tries) and the flow is parked
    exactly once: one incident, one ``incident.opened``. An operator retry then runs it exactly once
    more."""
    lab = lab_factory()
    crashed = lab.worker("crashing", crash_at=point, group=scope == "worker")
    lab.alice.heartbeat()
    lab.arm()
    result = lab.flaky.delay()
    lab.wait_crash()
    _restart_if_dead(lab, crashed, scope)

    lab.wait_parked(result, 1)
    assert lab.runs(result.id) == 2
    assert lab.events(result.id) == ["incident.opened"] and lab.tries(result.id) == [1]

    lab.fix(result.id)
    assert lab.alice.retry(result.id, wait=SLOW).applied
    _retried_exactly_once(lab, result, runs=3)


def test_crash_while_parking_a_retried_try_parks_that_try_once(lab_factory):
    """An operator-issued try fails again and its pool child dies before the park script. The
    redelivered copy carries the same fencing token and the redelivered flag, so it is admitted once
    more, fails and parks as try 2; a fail decision then ends the flow exactly once."""
    lab = lab_factory()
    lab.worker("crashing", crash_at="park.before")
    lab.alice.heartbeat()
    result = lab.flaky.delay()
    lab.wait_parked(result, 1)
    lab.arm()
    lab.alice.retry(result.id, wait=0)
    lab.wait_crash()

    lab.wait_parked(result, 2)
    assert lab.runs(result.id) == 3  # try 1, try 2 (crashed), try 2 again
    assert lab.events(result.id).count("incident.opened") == 2 and lab.tries(result.id) == [1, 2]

    lab.alice.fail(result.id, wait=SLOW)
    _failed_exactly_once(lab, result, runs=3, try_no=2)


# -- apply ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("decision", ["retry", "fail"])
@pytest.mark.parametrize("point", ["apply.claimed", "apply.sent"])
def test_crash_while_applying_a_decision_applies_it_exactly_once(lab_factory, point, decision):
    """The applier runs in the worker's main process: the whole worker dies after apply.lua bumped the
    fencing token, before or after it sent the message, and before it acknowledged the decision. The
    restarted worker claims the entry (XAUTOCLAIM) and applies it again with the same token; a copy
    already sent is dropped by the fence. A second flow decided while no worker ran is applied too."""
    lab = lab_factory()
    crashed = lab.worker("crashing", crash_at=point, group=True)
    lab.alice.heartbeat()
    result, other = lab.flaky.delay(), lab.flaky.delay()
    lab.wait_parked(result, 1)
    lab.wait_parked(other, 1)
    lab.fix(result.id)
    lab.arm()
    lab.alice.decide(result.id, decision, wait=0)
    lab.wait_crash()
    crashed.wait_dead()
    assert lab.incident(result.id)["state"] in ("retrying", "replaying")

    outcome = lab.alice.ignore(other.id, result={"skipped": True}, wait=0)
    assert outcome.recorded and not outcome.applied
    lab.worker("restarted")
    if decision == "retry":
        _retried_exactly_once(lab, result, runs=2)
    else:
        _failed_exactly_once(lab, result, runs=1)
    assert other.get(timeout=SLOW) == {"skipped": True} and lab.runs(other.id) == 1


# -- the operator-issued try -----------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["child", "worker"])
@pytest.mark.parametrize("point", ["try.started", "try.finished"])
def test_crash_during_a_retried_try_finishes_it_once(lab_factory, point, scope):
    """The retried try was admitted (state ``running``) and its worker dies before the body runs, or
    after the body returned but before finish.lua recorded it. The redelivered message is admitted
    again (same token, redelivered flag) and the flow succeeds exactly once. Before the body nothing
    ran, so the body runs once more; after the body, it runs a second time: acks_late redelivers an
    unrecorded try like any Celery task, so bodies must be idempotent (docs/reliability.md)."""
    lab = lab_factory()
    crashed = lab.worker("crashing", crash_at=point, group=scope == "worker")
    lab.alice.heartbeat()
    result = lab.flaky.delay()
    lab.wait_parked(result, 1)
    lab.fix(result.id)
    lab.arm()
    lab.alice.retry(result.id, wait=0)
    lab.wait_crash()
    _restart_if_dead(lab, crashed, scope)

    _retried_exactly_once(lab, result, runs=2 if point == "try.started" else 3)


# -- without acks_late ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["child", "worker"])
def test_without_acks_late_a_first_try_dying_before_park_is_handled_as_plain_celery(lab_factory, scope):
    """With ``task_acks_late=False`` the message is acknowledged before the body runs, so nothing can
    redeliver it: when only the pool child dies, Celery's main process stores FAILURE
    (WorkerLostError) and no incident exists; when the whole worker dies, the flow is lost and stays
    PENDING, exactly as in plain Celery."""
    lab = lab_factory(acks_late=False)
    crashed = lab.worker("crashing", crash_at="park.before", group=scope == "worker")
    lab.alice.heartbeat()
    lab.arm()
    result = lab.flaky.delay()
    lab.wait_crash()
    if scope == "child":
        wait_for(lambda: result.state == "FAILURE", timeout=SLOW, what="Celery to store WorkerLostError")
        assert "WorkerLostError" in repr(result.result) or "exited prematurely" in str(result.result)
    else:
        crashed.wait_dead()
        lab.worker("restarted")
        # Long enough for any redelivery: past the 3 s visibility timeout, several 1 s restore sweeps.
        time.sleep(8)
        assert result.state == "PENDING"
    assert lab.runs(result.id) == 1
    assert lab.incident(result.id) == {} and lab.events(result.id) == []
