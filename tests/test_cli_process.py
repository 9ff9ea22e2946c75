"""The CLI as real processes: the ``celery interactive`` plug-in, the ``interactive-celery`` script, and
``watch`` under a pseudo-terminal and on a pipe. The app module is tests/cli_app.py, pointed at this
test's Redis and key prefix through the environment; the worker runs in the test process."""

from __future__ import annotations

import io
import signal

import pexpect
import pytest
from pexpect.popen_spawn import PopenSpawn

from interactive_celery import InteractiveTask, OperatorAPI
from interactive_celery.keys import Keys
from interactive_celery.testing import free_port, wait_for
from tests.cli_app import FileMissing, add_tasks
from tests.cli_helpers import BIN, ROOT, check_shape, cli_env, park, parse_json, run_cli
from tests.conftest import running_worker
from tests.helpers import wait_incident_state

pytestmark = pytest.mark.e2e


@pytest.fixture
def import_file(app):
    return add_tasks(app)


@pytest.fixture
def env(app, redis_url):
    return cli_env(redis_url, app.conf.interactive_key_prefix)


def test_celery_plugin_lists_and_retries_a_parked_flow(app, alice, import_file, env, tmp_path):
    """``celery -A proj interactive`` is registered through the entry point; its retry leads to SUCCESS."""
    path = tmp_path / "plugin.csv"
    with running_worker(app):
        flow = park(import_file, path)
        listing = run_cli(["celery", "-A", "tests.cli_app", "interactive", "list", "--json", "--operator", "alice"], env)
        assert listing.returncode == 0, listing.stderr
        doc = parse_json(listing.stdout)
        check_shape(doc, "incident_list")
        assert [i["id"] for i in doc["incidents"]] == [flow.id]

        path.write_text("plugged in")
        retried = run_cli(["celery", "-A", "tests.cli_app", "interactive", "retry", flow.id[:8], "--operator", "alice",
                           "--reason", "file is there", "--wait", "15"], env)
        assert retried.returncode == 0, retried.stderr
        assert "applied by" in retried.stdout
        assert flow.get(timeout=30) == "plugged in"
    assert flow.state == "SUCCESS"


def test_standalone_script_fails_a_parked_flow(app, alice, import_file, env, tmp_path):
    """``interactive-celery -A proj fail`` ends the flow with its original exception."""
    with running_worker(app):
        flow = park(import_file, tmp_path / "standalone.csv")
        failed = run_cli(["interactive-celery", "-A", "tests.cli_app", "fail", flow.id, "--operator", "alice",
                          "--json", "--wait", "15"], env)
        assert failed.returncode == 0, failed.stderr
        check_shape(parse_json(failed.stdout), "decision_result")
        with pytest.raises(FileMissing):
            flow.get(timeout=30)
    assert flow.state == "FAILURE"


def test_processes_exit_with_the_documented_codes_and_no_traceback(app, alice, import_file, env, tmp_path):
    """Refused 1, bad input 2, unloadable app 2, Redis unreachable 3: each one line, never a traceback."""
    with running_worker(app):
        flow = park(import_file, tmp_path / "codes.csv")
    script = ["interactive-celery", "-A", "tests.cli_app"]
    assert run_cli([*script, "retry", flow.id, "--operator", "alice", "--wait", "0"], env).returncode == 0

    refused = run_cli([*script, "fail", flow.id, "--operator", "bob"], env)
    assert refused.returncode == 1 and "already decided: retry by alice" in refused.stderr

    unknown = run_cli([*script, "show", "0123456789abcdef", "--operator", "alice", "--json"], env)
    assert unknown.returncode == 2 and parse_json(unknown.stdout)["error"]["code"] == "unknown_id"

    no_app = run_cli(["interactive-celery", "-A", "tests.no_such_module", "list", "--json"], env)
    assert no_app.returncode == 2 and parse_json(no_app.stdout)["error"]["code"] == "bad_input"
    assert run_cli(["interactive-celery", "list"], env).returncode == 2

    down = dict(env, REDIS_URL=f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    for argv in ([*script, "list"], ["celery", "-A", "tests.cli_app", "interactive", "list"]):
        unreachable = run_cli(argv, down)
        assert unreachable.returncode == 3, unreachable.stderr
        assert "s3cret" not in unreachable.stderr and ":***@127.0.0.1" in unreachable.stderr
        assert len(unreachable.stderr.strip().splitlines()) == 1, unreachable.stderr


def _spawn_watch(env, operator: str) -> pexpect.spawn:
    return pexpect.spawn(str(BIN / "celery"), ["-A", "tests.cli_app", "interactive", "watch", "--operator", operator],
                         env=env, cwd=str(ROOT), dimensions=(40, 120), encoding="utf-8", timeout=60)


def _online(rclient, app, name: str) -> bool:
    return rclient.zscore(Keys(app.conf.interactive_key_prefix).presence, name) is not None


def test_watch_in_a_terminal_retries_a_failed_flow_with_the_r_key(app, rclient, import_file, env, tmp_path):
    """With only the console open the operator counts as online, so a failure parks and appears; ``r``,
    ``y`` and a reason retry it, and the flow succeeds under the same id."""
    path = tmp_path / "watched.csv"
    with running_worker(app):
        child = _spawn_watch(env, "wendy")
        try:
            child.expect("wendy online")
            wait_for(lambda: _online(rclient, app, "wendy"), timeout=30, what="the console's heartbeat")
            flow = park(import_file, path)
            child.expect(flow.id[:8])
            child.expect("FileMissing")
            path.write_text("arrived late")
            child.send("r")
            child.expect(f"Retry {flow.id[:8]}")
            child.send("y")
            child.expect("Reason for retry")
            child.send("file arrived\r")
            assert flow.get(timeout=30) == "arrived late"
            child.expect(f"succeeded {flow.id[:8]}")
            child.send("q")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
    assert child.exitstatus == 0
    incident = OperatorAPI(app, "auditor").incident(flow.id)
    assert (incident["decision"], incident["decided_by"], incident["reason"]) == ("retry", "wendy", "file arrived")


def test_watch_shows_another_operators_decision_as_it_happens(app, rclient, import_file, env, tmp_path):
    """A decision made elsewhere (bob, through the API) appears in the console; declining the
    confirmation sends nothing."""
    with running_worker(app):
        child = _spawn_watch(env, "wendy")
        try:
            child.expect("wendy online")
            wait_for(lambda: _online(rclient, app, "wendy"), timeout=30, what="the console's heartbeat")
            flow = park(import_file, tmp_path / "elsewhere.csv")
            child.expect(flow.id[:8])
            child.send("f")
            child.expect(f"Fail {flow.id[:8]}")
            child.send("n")
            child.expect("cancelled")
            assert OperatorAPI(app, "bob").incident(flow.id)["state"] == "open"

            OperatorAPI(app, "bob").fail(flow.id, reason="known outage", wait=0)
            child.expect(f"decided {flow.id[:8]} fail by bob \\(known outage\\)")
            with pytest.raises(FileMissing):
                flow.get(timeout=30)
            child.expect(f"failed {flow.id[:8]}")
            child.send("q")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
    assert child.exitstatus == 0


def test_watch_prints_plain_lines_when_stdout_is_not_a_terminal(app, rclient, import_file, env, tmp_path):
    """On a pipe the console prints one line per event with full ids, heartbeats all the same, leaves
    out incidents addressed to someone else, and ends cleanly on SIGTERM."""

    @app.task(base=InteractiveTask, name="cli_app.zoe_only", interactive_operators=["zoe"], shared=False)
    def zoe_only(path):
        raise FileMissing(f"{path} has not arrived")

    output = io.StringIO()
    with running_worker(app):
        OperatorAPI(app, "zoe").heartbeat()
        theirs = park(zoe_only, tmp_path / "zoe.csv")
        child = PopenSpawn([str(BIN / "interactive-celery"), "-A", "tests.cli_app", "watch", "--operator", "pipe"],
                           env=env, cwd=str(ROOT), encoding="utf-8", timeout=60)
        child.logfile_read = output
        try:
            child.expect("watching as pipe: 0 open incident")
            wait_for(lambda: _online(rclient, app, "pipe"), timeout=30, what="the console's heartbeat")
            later = park(zoe_only, tmp_path / "zoe-later.csv")
            for hidden in (theirs, later):  # events on incidents the pipe's operator does not see
                OperatorAPI(app, "zoe").fail(hidden.id, wait=0)
            flow = park(import_file, tmp_path / "piped.csv")
            child.expect(f"opened {flow.id} cli_app.import_file try 1: FileMissing: ")
            OperatorAPI(app, "alice").retry(flow.id, reason="again", wait=0)
            child.expect(f"decided {flow.id} retry by alice \\(again\\)")
            wait_incident_state(OperatorAPI(app, "alice"), flow.id, "open")
            child.expect(f"retrying {flow.id} try 2")
            child.expect(f"opened {flow.id} cli_app.import_file try 2")
            child.kill(signal.SIGTERM)
            child.expect(pexpect.EOF)
        finally:
            if child.proc.poll() is None:
                child.kill(signal.SIGKILL)
    assert child.wait() == 0
    assert theirs.id not in output.getvalue() and later.id not in output.getvalue()


def test_heartbeat_every_keeps_the_operator_online_until_interrupted(app, rclient, env):
    """``heartbeat --every`` refreshes presence repeatedly; Ctrl-C ends it with one JSON document."""
    child = PopenSpawn([str(BIN / "interactive-celery"), "-A", "tests.cli_app", "heartbeat", "--every", "0.2",
                        "--operator", "night-shift", "--json"], env=env, cwd=str(ROOT), encoding="utf-8", timeout=60)
    try:
        presence = Keys(app.conf.interactive_key_prefix).presence
        first = wait_for(lambda: rclient.zscore(presence, "night-shift"), timeout=30, what="the first heartbeat")
        wait_for(lambda: rclient.zscore(presence, "night-shift") > first, timeout=30, what="a later heartbeat")
        child.kill(signal.SIGINT)
        child.expect(pexpect.EOF)
    finally:
        if child.proc.poll() is None:
            child.kill(signal.SIGKILL)
    assert child.wait() == 0
    doc = parse_json(child.before)
    check_shape(doc, "heartbeat")
    assert doc["operator"] == "night-shift" and doc["heartbeats"] >= 2
