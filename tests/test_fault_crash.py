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

import pytest

from interactive_celery.testing import wait_for
from tests.fault_app import Broken
from tests.fault_support import SLOW, Lab, WorkerProcess, lab_factory, report  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.fault, pytest.mark.e2e]


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

    # After park.after the incident is already open before the redelivery: wait for the second run,
    # or wait_parked can pass while the restored message sits in the queue, neither unacked nor run.
    wait_for(lambda: lab.runs(result.id) >= 2, timeout=SLOW, what="the redelivered first try to run")
    lab.wait_parked(result, 1)
    assert lab.runs(result.id) == 2
    assert lab.events(result.id) == ["incident.opened"] and lab.tries(result.id) == [1]

    parked = lab.observe(result)
    lab.fix(result.id)
    assert lab.alice.retry(result.id, wait=SLOW).applied
    _retried_exactly_once(lab, result, runs=3)
    report("crash", point=point, scope=scope, flows=1, parked=parked, then_retried=lab.observe(result))


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

    parked = lab.observe(result)
    lab.alice.fail(result.id, wait=SLOW)
    _failed_exactly_once(lab, result, runs=3, try_no=2)
    report("crash", point="park.before (try 2)", scope="child", flows=1, parked=parked,
           then_failed=lab.observe(result))


@pytest.mark.parametrize("scope", ["child", "worker"])
def test_crash_after_parking_then_a_succeeding_redelivery_supersedes_the_incident(lab_factory, scope):
    """The park script ran, then the worker died. Before the message is redelivered the cause is
    fixed, so the redelivered first try succeeds: Celery stores SUCCESS, the incident closes as
    superseded (the sweeper reconciles it), and a decision on it is refused with that reason."""
    from interactive_celery import Superseded

    lab = lab_factory()
    crashed = lab.worker("crashing", crash_at="park.after", group=scope == "worker")
    lab.alice.heartbeat()
    lab.arm()
    result = lab.flaky.delay()
    lab.wait_crash()
    lab.fix(result.id)
    _restart_if_dead(lab, crashed, scope)

    assert result.get(timeout=SLOW) == "ok after 2 runs"
    incident = wait_for(lambda: (lambda raw: raw if raw.get("state") == "superseded" else None)(
        lab.incident(result.id)), timeout=SLOW, what="the incident to be superseded")
    assert "SUCCESS" in incident["superseded_why"]
    with pytest.raises(Superseded):
        lab.alice.retry(result.id, wait=0)
    assert lab.events(result.id) == ["incident.opened", "incident.superseded"] and lab.runs(result.id) == 2
    report("crash", point="park.after (fixed before redelivery)", scope=scope, flows=1, end=lab.observe(result))


# -- apply ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("decision", ["retry", "fail"])
@pytest.mark.parametrize("point", ["apply.claimed", "apply.sent"])
def test_crash_while_applying_a_decision_applies_it_exactly_once(lab_factory, point, decision):
    """The applier runs in the worker's main process: the whole worker dies after apply.lua bumped the
    fencing token, before or after it sent the message, and before it acknowledged the decision. The
    restarted worker claims the entry (XAUTOCLAIM) and applies it again with the same token; of the
    two copies then queued (apply.sent), the fence lets one run. A second flow decided while no worker
    ran is applied too."""
    lab = lab_factory()
    parking = lab.worker("parking")
    lab.alice.heartbeat()
    result, other = lab.flaky.delay(), lab.flaky.delay()
    lab.wait_parked(result, 1)
    lab.wait_parked(other, 1)
    parking.stop()
    # The crashing worker's pool consumes another queue, so a message it sent before dying is
    # still in the flow's queue: the experiment stays about the applier, not a retried try.
    crashed = lab.worker("crashing", crash_at=point, group=True, queues=f"idle-{lab.prefix}")
    lab.fix(result.id)
    lab.arm()
    lab.alice.decide(result.id, decision, wait=0)
    lab.wait_crash()
    crashed.wait_dead()
    assert lab.incident(result.id)["state"] == ("retrying" if decision == "retry" else "replaying")
    assert lab.queued() == (1 if point == "apply.sent" else 0)

    outcome = lab.alice.ignore(other.id, result={"skipped": True}, wait=0)
    assert outcome.recorded and not outcome.applied
    lab.worker("restarted")
    if decision == "retry":
        _retried_exactly_once(lab, result, runs=2)
    else:
        _failed_exactly_once(lab, result, runs=1)
    assert other.get(timeout=SLOW) == {"skipped": True} and lab.runs(other.id) == 1
    report("crash", point=point, scope="worker", decision=decision, flows=2, end=lab.observe(result),
           other=lab.observe(other))


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
    report("crash", point=point, scope=scope, flows=1, end=lab.observe(result))


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
    report("crash", point="park.before (acks_late=False)", scope=scope, flows=1, end=lab.observe(result))
