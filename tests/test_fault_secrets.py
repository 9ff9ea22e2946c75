"""Secrets and least privilege: what an operator can read holds no secret, and an operator's Redis
user (docs/security.md) can run every operator command but cannot read the stored messages, the
broker's queues or the result backend."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import urllib.request
import uuid

import pytest
import redis

from interactive_celery import AWAITING_OPERATOR, InteractiveTask, OperatorAPI
from interactive_celery.keys import Keys
from interactive_celery.testing import RedisServer, wait_for
from tests.cli_helpers import invoke, parse_json, run_cli
from tests.conftest import running_worker
from tests.fault_app import build, fixed_key
from tests.fault_support import ROOT, snapshot
from tests.helpers import wait_incident_state, wait_state
from tests.web_support import console_in_thread

pytestmark = pytest.mark.legacy  # also on Celery 5.5: redaction and input handling differ by version

SECURITY_DOC = ROOT / "docs" / "security.md"


class LoginRefused(Exception):
    pass


def readable_keys(client: redis.Redis, prefix: str) -> str:
    """Every key under the prefix that the operator ACL lets operators read, dumped as text."""
    dumped = snapshot(client, prefix)
    return repr({k: v for k, v in dumped.items() if ":message:" not in k})


def web_text(base: str, paths: list[str]) -> str:
    out = []
    for path in paths:
        with urllib.request.urlopen(base + path, timeout=30) as response:
            assert response.status == 200, path
            out.append(response.read().decode())
    return "\n".join(out)


def web_events(base: str) -> str:
    """The live event stream from its start, up to its ``ready`` event."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/api/events?after=0-0")
    response, text = conn.getresponse(), ""
    while "event: ready" not in text:
        line = response.fp.readline().decode()
        assert line, text
        text += line
    conn.close()
    return text


def test_a_secret_in_kwargs_appears_nowhere_an_operator_reads(app_factory, rclient):
    """A flow called with secrets in its kwargs (a password, a nested Authorization header, a key
    name added by configuration) parks, is retried, fails again and is failed. At each stage the
    secret is in no key operators may read (incident, tries, streams, audit, presence), in no CLI
    output (rich or JSON) and in no web page, API answer or live event; the private message
    record, which operators cannot read, does hold it (the retry needs it). Long values are capped."""
    app = app_factory(interactive_redact_keys=["password", "authorization", "pin"], interactive_repr_max_chars=300)
    secret = f"hunter2-{uuid.uuid4().hex}"

    @app.task(base=InteractiveTask, name=f"{app.main}.login")
    def login(user, password=None, headers=None, pin=None, notes=None):
        raise LoginRefused(f"login refused for {user}")

    alice = OperatorAPI(app, "alice")
    alice.heartbeat()
    prefix = app.conf.interactive_key_prefix
    keys = Keys(prefix)

    def everything_an_operator_reads(task_id: str) -> str:
        cli = [invoke(app, *argv, "--operator", "alice") for argv in (
            ("list", "--state", "any"), ("list", "--state", "any", "--json"), ("show", task_id),
            ("show", task_id, "--json"), ("history", task_id), ("history", task_id, "--json"),
            ("audit",), ("audit", "--json"), ("operators",))]
        assert all(r.exit_code == 0 for r in cli), [r.output for r in cli]
        with console_in_thread(app, no_auth=True) as web:
            pages = web_text(web.url, ["/", f"/incident/{task_id}", "/history", "/operators",
                                       "/api/incidents?state=any", f"/api/incidents/{task_id}",
                                       f"/api/incidents/{task_id}/history", "/api/audit"])
            events = web_events(web.url)
        return "\n".join([readable_keys(rclient, prefix), *(r.output for r in cli), pages, events,
                          json.dumps(app.AsyncResult(task_id).info, default=str)])

    with running_worker(app):
        flow = login.delay("ops", password=secret, headers={"Authorization": f"Bearer {secret}"}, pin=secret,
                           notes="n" * 5000)
        wait_state(flow, AWAITING_OPERATOR)
        seen = everything_an_operator_reads(flow.id)
        assert secret not in seen, seen[max(0, seen.find(secret) - 400): seen.find(secret) + 100]
        assert "login refused for ops" in seen and "'password': '***'" in seen and "'pin': '***'" in seen
        assert "…[truncated]" in alice.incident(flow.id)["kwargs"] and len(alice.incident(flow.id)["kwargs"]) <= 300
        body = base64.b64decode(rclient.hget(keys.message(flow.id), "body")).decode()
        assert body.count(secret) == 3  # the private record keeps the real call

        alice.retry(flow.id, wait=10)
        wait_incident_state(alice, flow.id, "open")  # try 2 failed and parked again
        assert secret not in everything_an_operator_reads(flow.id)

        alice.fail(flow.id, wait=10)
        with pytest.raises(LoginRefused):
            flow.get(timeout=20)
    wait_incident_state(alice, flow.id, "failed")
    assert secret not in everything_an_operator_reads(flow.id)
    assert not rclient.exists(keys.message(flow.id))  # the private record goes with the flow


# -- least privilege --------------------------------------------------------------------------------------

def operator_acl(prefix: str, password: str) -> list[str]:
    """The ``ACL SETUSER`` arguments documented in docs/security.md, for this prefix and password."""
    block = re.search(r"```acl\n(.*?)```", SECURITY_DOC.read_text(), re.S)
    assert block, "docs/security.md has no ```acl block"
    words = block.group(1).replace("{interactive}", "{" + prefix + "}").replace(">CHANGE-ME", f">{password}").split()
    assert words[:2] == ["ACL", "SETUSER"], words
    return words[2:]


@pytest.fixture
def locked_redis():
    """A private Redis whose default user needs a password (the workers' credentials)."""
    with RedisServer(password="workers-secret") as server:
        yield server


def test_the_operator_acl_runs_every_operator_command_and_reads_nothing_private(locked_redis, tmp_path):
    """With the documented operator ACL user (and no broker credentials at all), the CLI lists,
    shows, follows and decides, the web console serves, and the worker (full credentials) applies
    the decision. The same user is refused the stored messages, kombu's queues and unacked
    messages, Celery's results, key listing, and a script of its own that reads a message."""
    admin_url = locked_redis.url
    port = locked_redis.port
    prefix = f"s{uuid.uuid4().hex[:10]}"
    admin = redis.Redis.from_url(admin_url, decode_responses=True)
    admin.execute_command("ACL", "SETUSER", *operator_acl(prefix, "ops-secret"))
    ops_url = f"redis://interactive-operator:ops-secret@127.0.0.1:{port}/0"
    nobody_url = f"redis://127.0.0.1:{port}/0"  # the operators' broker URL: no credentials at all

    workers = build(admin_url, prefix)
    OperatorAPI(workers, "alice").heartbeat()
    operators = build(nobody_url, prefix, interactive_redis_url=ops_url)
    keys = Keys(prefix)
    flaky = workers.tasks["fault.flaky"]
    with running_worker(workers):
        flow = wait_state(flaky.delay(password="in-the-message-only"), AWAITING_OPERATOR)

        for argv in (("heartbeat",), ("operators",), ("list",), ("show", flow.id), ("history", flow.id),
                     ("audit",), ("list", "--json")):
            result = invoke(operators, *argv, "--operator", "alice")
            assert result.exit_code == 0, (argv, result.output)
        listed = parse_json(invoke(operators, "list", "--json", "--operator", "alice").stdout)
        assert [i["id"] for i in listed["incidents"]] == [flow.id]
        assert OperatorAPI(operators, "alice").events("0-0")[0]["type"] == "incident.opened"
        with console_in_thread(operators, no_auth=True) as web:
            assert flow.id in web_text(web.url, ["/", f"/api/incidents/{flow.id}"])

        ops = redis.Redis.from_url(ops_url, decode_responses=True)
        own_script = ops.script_load("return redis.call('HGETALL', KEYS[1])")
        for attempt in (
            lambda: ops.hgetall(keys.message(flow.id)),
            lambda: ops.evalsha(own_script, 1, keys.message(flow.id)),
            lambda: ops.get(f"celery-task-meta-{flow.id}"),
            lambda: ops.hgetall(f"celery-task-meta-{flow.id}"),
            lambda: ops.lrange(workers.conf.task_default_queue, 0, -1),
            lambda: ops.hgetall("unacked"),
            lambda: ops.zrangebyscore("unacked_index", "-inf", "+inf"),
            lambda: ops.keys("*"),
            lambda: ops.scan(0),
            lambda: ops.execute_command("EVAL", "return 1", 0),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()

        admin.set(fixed_key(prefix, flow.id), "1")
        retried = invoke(operators, "retry", flow.id[:8], "--operator", "alice", "--wait", "15")
        assert retried.exit_code == 0 and "applied by" in retried.stdout, retried.output
        assert flow.get(timeout=30) == "ok after 2 runs"

    # A real CLI process with only the operator credentials.
    env = _cli_env(nobody_url, prefix, FAULT_INTERACTIVE_REDIS_URL=ops_url)
    listed = run_cli(["interactive-celery", "-A", "tests.fault_app", "list", "--state", "any", "--json",
                      "--operator", "alice"], env)
    assert listed.returncode == 0, listed.stderr
    assert parse_json(listed.stdout)["incidents"][0]["state"] == "succeeded"


def test_without_credentials_the_cli_exits_3_and_changes_nothing(locked_redis):
    """Against a Redis that requires a password, the CLI started without credentials answers every
    command with exit 3 and one line naming the URL, and no key changes: not even presence."""
    prefix = f"s{uuid.uuid4().hex[:10]}"
    workers = build(locked_redis.url, prefix)
    OperatorAPI(workers, "alice").heartbeat()
    with running_worker(workers):
        flow = wait_state(workers.tasks["fault.flaky"].delay(), AWAITING_OPERATOR)
    admin = redis.Redis.from_url(locked_redis.url, decode_responses=True)
    before = snapshot(admin, prefix)

    env = _cli_env(f"redis://127.0.0.1:{locked_redis.port}/0", prefix)
    for argv in (["retry", flow.id, "--wait", "0"], ["fail", flow.id], ["heartbeat"], ["list"], ["show", flow.id]):
        proc = run_cli(["interactive-celery", "-A", "tests.fault_app", *argv, "--operator", "mallory"], env)
        assert proc.returncode == 3, (argv, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: cannot use Redis at redis://127.0.0.1:") and "Authentication required" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    json_proc = run_cli(["interactive-celery", "-A", "tests.fault_app", "retry", flow.id, "--json"], env)
    assert json_proc.returncode == 3 and parse_json(json_proc.stdout)["error"]["code"] == "redis_unavailable"
    assert snapshot(admin, prefix) == before
    assert admin.hget(Keys(prefix).incident(flow.id), "state") == "open"


def _cli_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERACTIVE_", "CELERY_", "FAULT_"))}
    env.update(REDIS_URL=redis_url, FAULT_PREFIX=prefix, PYTHONPATH=str(ROOT), COLUMNS="120", **extra)
    return env


def test_security_doc_names_every_key_the_acl_opens():
    """The documented ACL opens exactly the operator-readable keys of the schema (keys.py), and
    never the message key: a schema change shows up here."""
    args = operator_acl("interactive", "x")
    patterns = sorted(a[1:] for a in args if a.startswith("~"))
    schema = sorted(p for p in Keys("interactive").all_patterns() if ":message:" not in p)
    assert patterns == schema
    assert not any("message" in a for a in args) and "allkeys" not in args and "~*" not in args



def test_an_explicit_argsrepr_still_hides_a_positional_secret_after_a_retry(app, alice, rclient):
    """A caller hid a positional card number with ``argsrepr``. The operator retries, the new try
    fails again: the incident, its history and the stream still show only the caller's text,
    never the number (the re-sent message carries the shown text as its own argsrepr)."""
    card = "4111111111111111"

    @app.task(base=InteractiveTask, name=f"{app.main}.charge")
    def charge(number, amount=None):
        raise LoginRefused("card declined")

    with running_worker(app):
        flow = charge.apply_async((card,), {"amount": 5}, argsrepr="('card ending 1111',)")
        wait_state(flow, AWAITING_OPERATOR)
        assert alice.incident(flow.id)["args"] == "('card ending 1111',)"
        alice.retry(flow.id, wait=10)
        wait_for(lambda: alice.store.incident(flow.id).get("try") == "2"
                 and alice.store.incident(flow.id).get("state") == "open", timeout=20, what="try 2 to park")
        assert alice.incident(flow.id)["args"] == "('card ending 1111',)"
        assert card not in readable_keys(rclient, app.conf.interactive_key_prefix)
        alice.fail(flow.id, wait=10)
