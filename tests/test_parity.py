"""Cloudomation parity: dynamic attachment, addressed operators, templates, ignore, audit."""

from __future__ import annotations

import time

import pytest
from celery import chain, chord

from interactive_celery import (
    AWAITING_OPERATOR, ConfigurationError, InteractiveTask, NotAddressed, OperatorAPI, interactive,
)
from interactive_celery.testing import wait_for
from tests.conftest import running_worker
from tests.helpers import wait_incident_state, wait_state

pytestmark = pytest.mark.legacy


class Maintenance(Exception):
    pass


def test_dynamic_attachment_on_a_plain_task(app, alice):
    """interactive(sig) parks a plain task's failure; the same task without it fails plainly."""
    state = {"runs": 0}

    @app.task(name=f"{app.main}.plain")
    def plain():
        state["runs"] += 1
        if not state.get("fixed"):
            raise Maintenance("partner in maintenance")
        return "ok"

    with running_worker(app):
        with pytest.raises(Maintenance):
            plain.delay().get(timeout=20)
        assert alice.incidents("any") == []

        result = interactive(plain.s()).delay()
        wait_state(result, AWAITING_OPERATOR)
        state["fixed"] = True
        alice.retry(result.id, wait=10)
        assert result.get(timeout=20) == "ok"
    assert state["runs"] == 3


def test_per_call_parameters_override_the_task_and_survive_retries(app, alice):
    """A per-call decision timeout wins over the task's, on the first park and after a retry."""
    @app.task(base=InteractiveTask, name=f"{app.main}.slow_import", decision_timeout_minutes=60)
    def slow_import():
        raise Maintenance("still down")

    with running_worker(app):
        result = interactive(slow_import.s(), decision_timeout_minutes=0.5).delay()
        wait_state(result, AWAITING_OPERATOR)
        first = alice.store.incident(result.id)
        assert float(first["deadline"]) - float(first["opened_at"]) == pytest.approx(30, abs=1)
        alice.retry(result.id, wait=10)
        wait_for(lambda: alice.store.incident(result.id).get("try") == "2"
                 and alice.store.incident(result.id).get("state") == "open", timeout=20)
        second = alice.store.incident(result.id)
        assert float(second["deadline"]) - float(second["opened_at"]) == pytest.approx(30, abs=1)
        alice.fail(result.id, wait=10)


def test_retry_can_change_parameters_for_the_next_tries(app, alice):
    """A retry's overrides are the top layer: the next park uses the operator's timeout."""
    from interactive_celery import BadInput

    @app.task(base=InteractiveTask, name=f"{app.main}.reimport", decision_timeout_minutes=0.5)
    def reimport():
        raise Maintenance("still down")

    with running_worker(app):
        result = reimport.delay()
        wait_state(result, AWAITING_OPERATOR)
        before = alice.store.incident(result.id)
        with pytest.raises(BadInput, match="unknown parameter"):
            alice.retry(result.id, limit=3)
        with pytest.raises(BadInput, match="must be a number of minutes"):
            alice.retry(result.id, decision_timeout_minutes="soon")
        assert alice.store.incident(result.id) == before
        alice.retry(result.id, decision_timeout_minutes=2, wait=10)
        wait_for(lambda: alice.store.incident(result.id).get("try") == "2"
                 and alice.store.incident(result.id).get("state") == "open", timeout=20)
        second = alice.store.incident(result.id)
        assert float(second["deadline"]) - float(second["opened_at"]) == pytest.approx(120, abs=1)
        assert second["subject"].endswith("reimport failed twice")
        alice.fail(result.id, wait=10)


def test_interactive_rejects_unknown_or_bad_parameters():
    """Bad per-call parameters fail in the caller, before anything is sent."""
    from celery import Celery

    app = Celery("p", set_as_current=False)

    @app.task(name="t")
    def t():
        pass

    with pytest.raises(ConfigurationError, match="unknown parameter"):
        interactive(t.s(), limit=5)
    with pytest.raises(ConfigurationError, match="must be a number of minutes"):
        interactive(t.s(), interactive_limit_minutes=-2)
    with pytest.raises(ConfigurationError, match="takes a signature"):
        interactive(t, interactive_limit_minutes=2)


def test_addressed_presence_counts_only_the_addressed(app):
    """Addressed to team:billing: with only bob online it fails unattended; once alice of billing is
    online it parks."""
    @app.task(base=InteractiveTask, name=f"{app.main}.invoice", interactive_operators=["team:billing"])
    def invoice():
        raise Maintenance("ledger locked")

    bob = OperatorAPI(app, "bob", groups=["support"])
    bob.heartbeat()
    with running_worker(app):
        with pytest.raises(Maintenance):
            invoice.delay().get(timeout=20)
        alice = OperatorAPI(app, "alice", groups=["billing"])
        alice.heartbeat()
        result = invoice.delay()
        wait_state(result, AWAITING_OPERATOR)
        assert alice.incident(result.id)["addressed"] == ["team:billing"]
        assert [i["id"] for i in alice.incidents("open", everyone=False)] == [result.id]
        assert bob.incidents("open", everyone=False) == []
        assert [i["id"] for i in bob.incidents("open", everyone=True)] == [result.id]

        before = alice.store.incident(result.id)
        with pytest.raises(NotAddressed, match="'bob' is not addressed"):
            bob.retry(result.id)
        assert alice.store.incident(result.id) == before
        alice.fail(result.id, wait=10)


def test_allow_any_operator_lets_others_decide(app_factory):
    app = app_factory(interactive_allow_any_operator=True)

    @app.task(base=InteractiveTask, name=f"{app.main}.invoice", interactive_operators=["alice"])
    def invoice():
        raise Maintenance("ledger locked")

    OperatorAPI(app, "alice").heartbeat()
    bob = OperatorAPI(app, "bob")
    with running_worker(app):
        result = invoice.delay()
        wait_state(result, AWAITING_OPERATOR)
        assert bob.fail(result.id, wait=10).applied


def test_templates_render_into_the_stream_and_stay_inert(app, alice, rclient):
    """Subject and body templates are filled in the stream entry; code in templates or args is text."""
    @app.task(base=InteractiveTask, name=f"{app.main}.import_invoices",
              interactive_subject="{task_name} failed {fail_count} times",
              interactive_body="{exc_type}: {exc_message} [{context.customer}] {exc_type.__class__} {__import__}",
              interactive_context={"customer": "ACME"})
    def import_invoices(note):
        raise Maintenance(note)

    evil = "{__import__('os').system('touch /tmp/pwned-by-template')} {task_id.__class__}"
    with running_worker(app):
        result = import_invoices.delay(evil)
        wait_state(result, AWAITING_OPERATOR)
        entry = rclient.xrange(alice.store.keys.stream)[-1][1]
        assert entry["subject"] == "import_invoices failed 1 times"
        assert entry["body"] == f"Maintenance: {evil} [ACME] {{exc_type.__class__}} {{__import__}}"
        alice.fail(result.id, wait=10)
    import os

    assert not os.path.exists("/tmp/pwned-by-template")


def test_ignore_continues_the_chain_with_the_given_result(app, alice):
    """Ignore ends the flow as SUCCESS with the operator's JSON result; the next task receives it."""
    received = []

    @app.task(base=InteractiveTask, name=f"{app.main}.rate")
    def rate():
        raise Maintenance("rate service down")

    @app.task(name=f"{app.main}.book")
    def book(value):
        received.append(value)
        return value

    with running_worker(app):
        result = chain(rate.s(), book.s()).delay()
        wait_state(result.parent, AWAITING_OPERATOR)
        decision = alice.ignore(result.parent.id, result={"eur": 1.1}, reason="use yesterday's rate", wait=10)
        assert decision.applied
        assert result.get(timeout=20) == {"eur": 1.1}
        assert result.parent.state == "SUCCESS"
    assert received == [{"eur": 1.1}]
    tries = alice.history(result.parent.id)
    assert tries[0]["decision"] == "ignore" and tries[0]["reason"] == "use yesterday's rate"


def test_ignore_counts_in_a_chord(app, alice):
    @app.task(name=f"{app.main}.ok")
    def ok(n):
        return n

    @app.task(base=InteractiveTask, name=f"{app.main}.flaky")
    def flaky(n):
        raise Maintenance(f"part {n}")

    @app.task(name=f"{app.main}.total")
    def total(values):
        return sorted(values)

    with running_worker(app):
        result = chord([ok.s(1), flaky.s(2), ok.s(3)])(total.s())
        member = result.parent.results[1]
        wait_state(member, AWAITING_OPERATOR)
        alice.ignore(member.id, result=20, wait=10)
        assert result.get(timeout=20) == [1, 3, 20]


def test_audit_lists_every_decision_with_who_why_and_where(app, alice):
    @app.task(base=InteractiveTask, name=f"{app.main}.job")
    def job(n):
        raise Maintenance(f"job {n}")

    bob = OperatorAPI(app, "bob")
    since = time.time()
    with running_worker(app):
        first, second = job.delay(1), job.delay(2)
        wait_state(first, AWAITING_OPERATOR)
        wait_state(second, AWAITING_OPERATOR)
        alice.fail(first.id, reason="bad input file", wait=10)
        bob.ignore(second.id, reason="not needed", wait=10)
        wait_incident_state(alice, second.id, "ignored")
    rows = alice.audit(since=since)
    assert [(r["id"], r["decision"], r["operator"], r["reason"]) for r in rows] == [
        (first.id, "fail", "alice", "bad input file"), (second.id, "ignore", "bob", "not needed")]
    assert all(r["host"] and r["at"].endswith("Z") for r in rows)
    assert alice.audit(since=time.time() + 60) == []
