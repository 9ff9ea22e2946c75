"""The operator CLI, driven through click's runner exactly as ``celery -A proj interactive …`` runs it,
against a real Redis and a real in-process worker with real parked flows."""

from __future__ import annotations

import uuid

import pytest
from celery import Celery

from interactive_celery import InteractiveTask, OperatorAPI
from interactive_celery.testing import RedisServer, free_port
from tests.cli_app import FileMissing, add_tasks
from tests.cli_helpers import check_shape, invoke, park, parse_json
from tests.conftest import running_worker
from tests.helpers import wait_incident_state


@pytest.fixture
def import_file(app):
    return add_tasks(app)


def _error(result, code: str, exit_code: int) -> dict:
    assert result.exit_code == exit_code, result.output
    doc = parse_json(result.stdout)
    check_shape(doc, "error")
    assert doc["error"]["code"] == code, doc
    return doc["error"]


# -- reading ----------------------------------------------------------------------------------------

def test_list_and_show_present_a_parked_flow_with_its_secrets_redacted(app, alice, import_file, tmp_path):
    """An operator sees the parked flow in ``list`` and every fact in ``show``, but never the secret it
    was called with; the JSON forms match docs/json.md."""
    with running_worker(app):
        flow = park(import_file, tmp_path / "orders.csv", api_key="sk-live-0123456789")

    listing = invoke(app, "list", "--operator", "alice")
    assert listing.exit_code == 0, listing.output
    assert flow.id[:8] in listing.stdout and "cli_app.import_file" in listing.stdout
    assert "FileMissing" in listing.stdout

    doc = parse_json(invoke(app, "list", "--operator", "alice", "--json").stdout)
    check_shape(doc, "incident_list")
    assert [i["id"] for i in doc["incidents"]] == [flow.id]
    assert doc["incidents"][0]["state"] == "open" and doc["incidents"][0]["try"] == 1

    shown = invoke(app, "show", flow.id[:8], "--operator", "alice")
    assert shown.exit_code == 0, shown.output
    for fact in (flow.id, "cli_app.import_file", "orders.csv has not arrived", "raise FileMissing", "'***'"):
        assert fact in shown.stdout, fact
    assert "sk-live-0123456789" not in shown.stdout

    whole = parse_json(invoke(app, "show", flow.id, "--operator", "alice", "--json").stdout)
    check_shape(whole, "incident")
    assert whole["kwargs"] == "{'api_key': '***'}"
    assert [t["outcome"] for t in whole["tries"]] == ["failed"]
    assert "sk-live-0123456789" not in str(whole)


def test_history_lists_every_try_of_a_retried_flow(app, alice, import_file, tmp_path):
    """After a failed first try and a retry that fails again, ``history`` shows both tries."""
    with running_worker(app):
        flow = park(import_file, tmp_path / "late.csv")
        assert invoke(app, "retry", flow.id, "--operator", "alice", "--wait", "10").exit_code == 0
        wait_incident_state(alice, flow.id, "open")  # the second try failed too and parked again

    doc = parse_json(invoke(app, "history", flow.id[:10], "--operator", "alice", "--json").stdout)
    check_shape(doc, "history")
    assert doc["id"] == flow.id
    assert [(t["try"], t["outcome"]) for t in doc["tries"]] == [(1, "failed"), (2, "failed")]
    table = invoke(app, "history", flow.id, "--operator", "alice")
    assert table.exit_code == 0 and table.stdout.count("FileMissing") == 2


def test_list_states_follow_the_flow_from_open_to_resolved(app, alice, import_file, tmp_path):
    """A recorded decision no worker has applied yet is ``active``; once applied and finished the
    incident is ``resolved``. The retry waits durably for a worker and then succeeds."""
    path = tmp_path / "report.csv"
    with running_worker(app):
        flow = park(import_file, path)

    recorded = invoke(app, "retry", flow.id, "--operator", "alice", "--wait", "0.2")
    assert recorded.exit_code == 0, recorded.output
    assert "no worker has applied it yet" in recorded.stdout
    active = parse_json(invoke(app, "list", "--state", "active", "--operator", "alice", "--json").stdout)
    assert [(i["id"], i["state"], i["decided_by"]) for i in active["incidents"]] == [(flow.id, "decided", "alice")]
    assert parse_json(invoke(app, "list", "--operator", "alice", "--json").stdout)["incidents"] == []

    path.write_text("done")
    with running_worker(app):
        assert flow.get(timeout=30) == "done"
    wait_incident_state(alice, flow.id, "succeeded")
    resolved = parse_json(invoke(app, "list", "--state", "resolved", "--operator", "alice", "--json").stdout)
    check_shape(resolved, "incident_list")
    assert [i["id"] for i in resolved["incidents"]] == [flow.id]
    assert resolved["incidents"][0]["applied_by"]
    anything = parse_json(invoke(app, "list", "--state", "any", "--operator", "alice", "--json").stdout)
    assert [i["id"] for i in anything["incidents"]] == [flow.id]


def test_list_hides_incidents_addressed_to_others_unless_everyone(app, import_file, tmp_path):
    """An incident addressed to zoe is hidden from alice's list (shown with --everyone), and alice's
    decision on it is refused with exit 1."""
    @app.task(base=InteractiveTask, name="cli_app.zoe_only", interactive_operators=["zoe"], shared=False)
    def zoe_only(path):
        raise FileMissing(f"{path} has not arrived")

    OperatorAPI(app, "zoe").heartbeat()
    with running_worker(app):
        flow = park(zoe_only, tmp_path / "zoe.csv")

    mine = parse_json(invoke(app, "list", "--operator", "alice", "--json").stdout)
    assert mine["incidents"] == [] and mine["everyone"] is False
    everyone = parse_json(invoke(app, "list", "--operator", "alice", "--everyone", "--json").stdout)
    assert [(i["id"], i["addressed"]) for i in everyone["incidents"]] == [(flow.id, ["zoe"])]

    refused = invoke(app, "retry", flow.id, "--operator", "alice", "--json")
    assert _error(refused, "not_addressed", 1)["addressed"] == ["zoe"]
    assert invoke(app, "retry", flow.id, "--operator", "alice", "--group", "night", "--wait", "0").exit_code == 1
    allowed = invoke(app, "retry", flow.id, "--operator", "zoe", "--wait", "0")
    assert allowed.exit_code == 0, allowed.output


# -- deciding ---------------------------------------------------------------------------------------

def test_retry_through_the_cli_finishes_the_flow_with_success(app, alice, import_file, tmp_path):
    """The file arrives, the operator retries by id prefix, a worker applies it, and the caller's
    AsyncResult gets the value under the same task id."""
    path = tmp_path / "invoices.csv"
    with running_worker(app):
        flow = park(import_file, path)
        path.write_text("42 invoices")
        result = invoke(app, "retry", flow.id[:8], "--reason", "file arrived", "--operator", "alice", "--wait", "10")
        assert result.exit_code == 0, result.output
        assert f"retry of {flow.id} recorded by alice; applied by" in result.stdout
        assert flow.get(timeout=30) == "42 invoices"
    assert flow.state == "SUCCESS"
    assert alice.incident(flow.id)["reason"] == "file arrived"


def test_fail_through_the_cli_ends_the_flow_with_its_original_exception(app, alice, import_file, tmp_path):
    """``fail --json`` reports the worker that applied it, and the caller gets the original exception."""
    with running_worker(app):
        flow = park(import_file, tmp_path / "never.csv")
        result = invoke(app, "fail", flow.id, "--reason", "not coming", "--operator", "alice", "--json",
                        "--wait", "10")
        assert result.exit_code == 0, result.output
        doc = parse_json(result.stdout)
        check_shape(doc, "decision_result")
        assert (doc["id"], doc["decision"], doc["operator"], doc["applied"]) == (flow.id, "fail", "alice", True)
        assert doc["applied_by"]
        with pytest.raises(FileMissing, match="never.csv has not arrived"):
            flow.get(timeout=30)
    assert flow.state == "FAILURE"


def test_ignore_through_the_cli_finishes_the_flow_with_the_given_result(app, alice, import_file, tmp_path):
    """``ignore --result JSON`` makes the flow succeed with that value."""
    with running_worker(app):
        flow = park(import_file, tmp_path / "optional.csv")
        result = invoke(app, "ignore", flow.id, "--result", '{"rows": 0}', "--operator", "alice", "--wait", "10")
        assert result.exit_code == 0, result.output
        assert flow.get(timeout=30) == {"rows": 0}
    assert flow.state == "SUCCESS"


# -- exit codes ---------------------------------------------------------------------------------------

def test_second_decision_is_refused_with_exit_1_naming_the_first(app, alice, import_file, tmp_path):
    """The first decision wins; a later one exits 1 and says what was decided, by whom and when."""
    with running_worker(app):
        flow = park(import_file, tmp_path / "twice.csv")
    assert invoke(app, "retry", flow.id, "--operator", "alice", "--reason", "try again", "--wait", "0").exit_code == 0

    human = invoke(app, "fail", flow.id, "--operator", "bob")
    assert human.exit_code == 1
    assert f"incident {flow.id} was already decided: retry by alice at" in human.stderr
    assert "(try again)" in human.stderr and human.stdout == ""

    error = _error(invoke(app, "fail", flow.id, "--operator", "bob", "--json"), "already_decided", 1)
    assert error["existing_decision"]["decided_by"] == "alice"
    assert error["existing_decision"]["decision"] == "retry"
    assert error["existing_decision"]["reason"] == "try again"


def test_decision_on_a_revoked_flow_is_refused_as_superseded(app, alice, import_file, tmp_path):
    """When Celery ends a parked flow itself (revoked), the incident closes as superseded and a
    decision on it exits 1 with that reason."""
    with running_worker(app):
        flow = park(import_file, tmp_path / "revoked.csv")
        app.control.revoke(flow.id)
        wait_incident_state(alice, flow.id, "superseded", timeout=60)
    error = _error(invoke(app, "retry", flow.id, "--operator", "alice", "--json"), "superseded", 1)
    assert "revoked" in error["message"]


def test_unknown_and_malformed_ids_exit_2(app, alice):
    """An id that matches nothing, or a prefix shorter than 8 characters, is bad input."""
    missing = str(uuid.uuid4())
    _error(invoke(app, "show", missing, "--operator", "alice", "--json"), "unknown_id", 2)
    _error(invoke(app, "retry", missing[:12], "--operator", "alice", "--json"), "unknown_id", 2)
    error = _error(invoke(app, "history", "abc", "--operator", "alice", "--json"), "bad_input", 2)
    assert "at least 8 characters" in error["message"]
    human = invoke(app, "show", missing, "--operator", "alice")
    assert human.exit_code == 2 and f"no incident matches '{missing}'" in human.stderr


def test_ambiguous_prefix_exits_2_and_lists_the_candidates(app, alice, import_file, tmp_path):
    """Two flows whose ids share a prefix: the prefix is refused and both ids are listed; an exact id
    still works."""
    ids = [f"feedf00d-{n}000-4000-8000-000000000000" for n in (1, 2)]
    with running_worker(app):
        for n, task_id in enumerate(ids):
            park(import_file, tmp_path / f"twin{n}.csv", task_id=task_id)
    error = _error(invoke(app, "retry", "feedf00d", "--operator", "alice", "--json"), "ambiguous_id", 2)
    assert sorted(error["candidates"]) == ids
    human = invoke(app, "fail", "feedf00d-", "--operator", "alice")
    assert human.exit_code == 2 and ids[0] in human.stderr and ids[1] in human.stderr
    assert invoke(app, "show", ids[1], "--operator", "alice", "--json").exit_code == 0


def test_bad_options_exit_2_and_answer_in_json_when_asked(app, alice):
    """A bad option value is exit 2; with --json the answer is still one JSON error document."""
    _error(invoke(app, "list", "--state", "bogus", "--operator", "alice", "--json"), "bad_input", 2)
    _error(invoke(app, "retry", "x" * 36, "--wait", "-1", "--json"), "bad_input", 2)
    _error(invoke(app, "ignore", "x" * 36, "--result", "{not json", "--json"), "bad_input", 2)
    _error(invoke(app, "audit", "--since", "last tuesday", "--json"), "bad_input", 2)
    _error(invoke(app, "list", "--operator", "team:ops", "--json"), "bad_input", 2)
    assert invoke(app, "list", "--state", "bogus").exit_code == 2


def test_bad_configuration_exits_2(redis_url):
    """A result backend that cannot hold the parked state is a configuration error, exit 2."""
    app = Celery("badconf", broker=redis_url, backend="rpc://", set_as_current=False)
    error = _error(invoke(app, "list", "--operator", "alice", "--json"), "bad_config", 2)
    assert "rpc://" in error["message"]
    assert invoke(app, "list", "--operator", "alice").exit_code == 2


def test_unreachable_redis_exits_3_without_showing_the_password():
    """Nothing listens on the port: exit 3, one line naming the URL with its password masked."""
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    app = Celery("down", broker=url, backend=url, set_as_current=False)
    error = _error(invoke(app, "list", "--operator", "alice", "--json"), "redis_unavailable", 3)
    assert "hunter2" not in error["message"] and "redis://:***@127.0.0.1" in error["message"]
    human = invoke(app, "retry", "x" * 36, "--operator", "alice")
    assert human.exit_code == 3 and "hunter2" not in human.output
    assert human.stderr.strip().count("\n") == 0 and human.stderr.startswith("error: cannot use Redis at")


def test_redis_refusing_our_password_exits_3():
    """A Redis that requires another password: exit 3, password masked."""
    with RedisServer(password="right-one") as server:
        url = f"redis://:wrong-one@127.0.0.1:{server.port}/0"
        app = Celery("auth", broker=url, backend=url, set_as_current=False)
        error = _error(invoke(app, "operators", "--operator", "alice", "--json"), "redis_unavailable", 3)
    assert "wrong-one" not in error["message"]


# -- presence and audit ------------------------------------------------------------------------------

def test_heartbeat_and_operators_show_who_is_online(app):
    """``heartbeat`` makes an operator count as online; the name defaults to $INTERACTIVE_OPERATOR and
    groups to $INTERACTIVE_GROUPS."""
    beat = invoke(app, "heartbeat", "--operator", "carol", "--group", "ops", "--group", "night", "--json")
    assert beat.exit_code == 0, beat.output
    doc = parse_json(beat.stdout)
    check_shape(doc, "heartbeat")
    assert (doc["operator"], doc["groups"], doc["heartbeats"]) == ("carol", ["ops", "night"], 1)
    assert invoke(app, "heartbeat", env={"INTERACTIVE_OPERATOR": "dora", "INTERACTIVE_GROUPS": "ops,db"}).exit_code == 0

    # Each command is a heartbeat that declares the groups given with it, so repeat them.
    online = parse_json(invoke(app, "operators", "--operator", "carol", "--group", "ops,night", "--json").stdout)
    check_shape(online, "operators")
    found = {op["operator"]: op["groups"] for op in online["operators"]}
    assert found == {"carol": ["ops", "night"], "dora": ["ops", "db"]}
    table = invoke(app, "operators", "--operator", "carol")
    assert "carol" in table.stdout and "dora" in table.stdout and "ops, db" in table.stdout


def test_audit_lists_decisions_with_operator_and_reason(app, alice, import_file, tmp_path):
    """Every decision shows up in ``audit``, with who, what, why and when."""
    with running_worker(app):
        flow = park(import_file, tmp_path / "audited.csv")
    assert invoke(app, "fail", flow.id, "--operator", "alice", "--reason", "bad input file", "--wait", "0").exit_code == 0

    doc = parse_json(invoke(app, "audit", "--since", "1h", "--operator", "alice", "--json").stdout)
    check_shape(doc, "audit")
    assert [(e["id"], e["try"], e["decision"], e["operator"], e["reason"]) for e in doc["decisions"]] == [
        (flow.id, 1, "fail", "alice", "bad input file")]
    assert parse_json(invoke(app, "audit", "--since", "2999-01-01T00:00:00Z", "--json").stdout)["decisions"] == []
    table = invoke(app, "audit", "--operator", "alice")
    assert flow.id[:8] in table.stdout and "bad input file" in table.stdout


def test_a_failure_parks_only_while_someone_is_online(app, import_file, tmp_path):
    """Without any operator activity the flow fails plainly; after ``heartbeat`` the next one parks."""
    with running_worker(app):
        plain = import_file.delay(str(tmp_path / "a.csv"))
        with pytest.raises(FileMissing):
            plain.get(timeout=30)
        assert invoke(app, "heartbeat", "--operator", "erin").exit_code == 0
        parked = park(import_file, tmp_path / "b.csv")
    assert parked.state == "AWAITING_OPERATOR"


def test_shape_check_rejects_undocumented_missing_and_mistyped_fields():
    """The JSON shape check is strict, so an output change that docs/json.md does not describe fails."""
    good = {"operator": "a", "groups": [], "heartbeats": 1, "last_seen": "2025-01-01T00:00:00.000Z"}
    check_shape(good, "heartbeat")
    for bad in ({**good, "extra": 1}, {k: v for k, v in good.items() if k != "groups"},
                {**good, "heartbeats": "1"}, {**good, "last_seen": "2025-01-01 00:00:00"}):
        with pytest.raises(AssertionError):
            check_shape(bad, "heartbeat")
