"""Bad input: every one gets a clear error and the right exit code, and changes nothing in Redis.

Already covered elsewhere, so not repeated here: unknown ids, short and ambiguous prefixes and
decisions on resolved incidents through the API (tests/test_decisions.py) and the CLI's exit codes
for them (tests/test_cli.py); most configuration type errors (tests/test_config.py).
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import signal
import time
import uuid

import pexpect
import pytest
import redis
from celery import Celery
from pexpect.popen_spawn import PopenSpawn

from interactive_celery import (
    AlreadyDecided, AWAITING_OPERATOR, BadInput, ConfigurationError, InteractiveTask, OperatorAPI, interactive,
)
from interactive_celery.config import settings_for
from interactive_celery.keys import Keys
from interactive_celery.task import flow_params
from interactive_celery.testing import wait_for
from interactive_celery.worker import Applier
from tests.cli_helpers import BIN, ROOT, cli_env, invoke, parse_json
from tests.conftest import running_worker
from tests.fault_support import seed_incident, snapshot
from tests.helpers import wait_incident_state, wait_state

pytestmark = pytest.mark.legacy  # also on Celery 5.5: redaction and input handling differ by version

# Presence and the operator's own hash change with every command: that is activity, by design.
ACTIVITY = ("presence", "operator")


class Broken(Exception):
    pass


class Opaque:
    """An argument JSON cannot hold; pickle can."""

    def __init__(self, tag):
        self.tag = tag

    def __eq__(self, other):
        return isinstance(other, Opaque) and other.tag == self.tag

    def __repr__(self):
        return f"Opaque({self.tag!r})"


def _error(result, code: str, exit_code: int) -> dict:
    assert result.exit_code == exit_code, result.output
    doc = parse_json(result.stdout)
    assert doc["error"]["code"] == code, doc
    return doc["error"]


def _resolved(store, task_id: str) -> None:
    """Seed an incident and close it as failed, as the sweeper's direct fallback does."""
    seed_incident(store, task_id)
    assert store.decide(task_id, "fail", now=time.time(), operator="alice")[0] == "ok"
    assert store.apply(task_id, 1, now=time.time(), worker="w", fallback_at=0) is not None
    assert store.fallback(task_id, now=time.time()) is not None


# -- ids, prefixes, resolved incidents: nothing changes -------------------------------------------------

def test_refused_commands_leave_every_key_as_it_was(app, alice, rclient):
    """Unknown ids, ambiguous prefixes, a decision on a resolved incident, a bad --result, a reason or
    operator name with control characters: each exits 1 or 2 with one error, and no key under the
    prefix changes (only the operator's own presence, which every command refreshes)."""
    store, prefix = alice.store, app.conf.interactive_key_prefix
    twins = [f"cafe0123-{n}000-4000-8000-000000000000" for n in (1, 2)]
    for task_id in twins:
        seed_incident(store, task_id)
    done = str(uuid.uuid4())
    _resolved(store, done)
    before = snapshot(rclient, prefix, skip=ACTIVITY)

    _error(invoke(app, "retry", str(uuid.uuid4()), "--operator", "alice", "--json"), "unknown_id", 2)
    _error(invoke(app, "fail", "cafe0123", "--operator", "alice", "--json"), "ambiguous_id", 2)
    _error(invoke(app, "retry", done, "--operator", "alice", "--json"), "already_decided", 1)
    _error(invoke(app, "ignore", twins[0], "--result", "{nope", "--operator", "alice", "--json"), "bad_input", 2)
    _error(invoke(app, "retry", twins[0], "--reason", "fixed\x1b[2J", "--operator", "alice", "--json"),
           "bad_input", 2)
    _error(invoke(app, "retry", twins[0], "--operator", "eve\x1b]0;pwned\x07", "--json"), "bad_input", 2)
    _error(invoke(app, "retry", twins[0], "--operator", "bob", "--group", "ops\x00", "--json"), "bad_input", 2)
    with pytest.raises(BadInput, match="JSON-serialisable"):
        alice.ignore(twins[1], result={"when": datetime.datetime.now()})

    assert snapshot(rclient, prefix, skip=ACTIVITY) == before


# -- the stream: foreign and malformed entries -------------------------------------------------------------

FOREIGN = [
    {"hello": "world"},                                                    # another program's entry
    {"type": "deploy.finished", "id": "web-42"},                           # a type that is not ours
    {"type": "incident.opened"},                                           # ours in shape, no id
    {"type": "incident.opened", "id": "x", "deadline": "soon"},            # a field that cannot be read
]


def test_foreign_and_malformed_stream_entries_are_skipped_and_logged(app, alice, rclient, caplog):
    """Readers of the operator stream (the API behind the CLI console and the web console) skip
    entries this library did not write, entries that are not UTF-8 and entries whose fields
    cannot be read, log each one once, and go on to the entries that follow. Control characters in
    what is delivered are escaped."""
    caplog.set_level(logging.WARNING, logger="interactive_celery")
    stream = Keys(app.conf.interactive_key_prefix).stream
    start = alice.stream_position()
    raw = redis.Redis.from_url(app.conf.broker_url)  # writes bytes as they are
    for fields in FOREIGN:
        rclient.xadd(stream, fields)
    raw.xadd(stream, {b"type": b"incident.\xff\xfe", b"id": b"\xc3"})      # not UTF-8
    raw.close()
    real = rclient.xadd(stream, {"v": "1", "type": "incident.decided", "id": "abc", "try": "1",
                                 "decision": "fail", "operator": "mallory", "reason": "ok\x1b[31m"})

    events = alice.events(start)
    assert [e["stream_id"] for e in events] == [real]
    assert events[0]["reason"] == "ok\\x1b[31m"
    skipped = [r for r in caplog.records if "skipping a foreign or malformed" in r.getMessage()]
    assert len(skipped) == len(FOREIGN) + 1
    assert alice.events(start) == events and len(caplog.records) == len(skipped)  # logged once each

    # A batch of foreign entries only, read from its start: the reader goes on past it.
    for fields in FOREIGN:
        rclient.xadd(stream, fields)
    assert alice.events(real, block_s=0.2) == []
    later = rclient.xadd(stream, {"v": "1", "type": "incident.failed", "id": "abc", "try": "1"})
    assert [e["stream_id"] for e in alice.events(real)] == [later]


def test_the_console_keeps_following_past_a_foreign_entry(app, alice, rclient, redis_url, tmp_path):
    """``watch`` on a pipe (a real CLI process) prints the events around a foreign entry and keeps
    running: the entry does not end or wedge the console."""
    stream = Keys(app.conf.interactive_key_prefix).stream
    env = cli_env(redis_url, app.conf.interactive_key_prefix)
    child = PopenSpawn([str(BIN / "interactive-celery"), "-A", "tests.cli_app", "watch", "--operator", "pipe"],
                       env=env, cwd=str(ROOT), encoding="utf-8", timeout=60)
    try:
        child.expect("watching as pipe")
        for fields in FOREIGN:
            rclient.xadd(stream, fields)
        rclient.xadd(stream, {"v": "1", "type": "incident.failed", "id": "after-the-foreign-ones", "try": "1"})
        child.expect("failed after-the-foreign-ones try 1")
        rclient.xadd(stream, {"v": "1", "type": "incident.failed", "id": "and-the-next-one", "try": "1"})
        child.expect("failed and-the-next-one try 1")
        child.kill(signal.SIGTERM)
        child.expect(pexpect.EOF)
    finally:
        if child.proc.poll() is None:
            child.kill(signal.SIGKILL)
    assert child.wait() == 0


def test_foreign_entries_on_the_decisions_stream_are_skipped_and_acknowledged(app, alice, rclient, caplog):
    """Entries on the workers' decisions stream that name no incident, no try, or an unknown one are
    logged and acknowledged (never retried forever), and a real decision after them is applied."""
    caplog.set_level(logging.INFO, logger="interactive_celery")

    @app.task(base=InteractiveTask, name=f"{app.main}.bad")
    def bad():
        raise Broken("down")

    keys = Keys(app.conf.interactive_key_prefix)
    with running_worker(app):
        result = wait_state(bad.delay(), AWAITING_OPERATOR)
        for fields in ({"hello": "world"}, {"id": result.id, "try": "one"}, {"id": str(uuid.uuid4()), "try": "1"}):
            rclient.xadd(keys.decisions, fields)
        alice.fail(result.id, wait=10)
        with pytest.raises(Broken):
            result.get(timeout=20)
        wait_for(lambda: rclient.xpending(keys.decisions, "appliers")["pending"] == 0, timeout=20,
                 what="every decision entry to be acknowledged")
    assert sum("skipping malformed decision entry" in r.getMessage() for r in caplog.records) == 2


# -- what a failure carries -------------------------------------------------------------------------------

def test_arguments_json_cannot_hold_park_and_retry_with_the_real_objects(app_factory):
    """With the pickle serializer a task may take sets, bytes, datetimes and objects, and raise an
    exception holding one. It parks with a readable repr, and a retry runs the body with equal
    objects; a fail replays an exception of the original type."""
    app = app_factory(task_serializer="pickle", result_serializer="pickle", accept_content=["pickle", "json"])
    alice = OperatorAPI(app, "alice")
    alice.heartbeat()
    seen = []

    @app.task(base=InteractiveTask, name=f"{app.main}.odd")
    def odd(items, blob, when, thing=None):
        seen.append((items, blob, when, thing))
        if [s[3] for s in seen].count(thing) == 1:  # each flow's first run fails
            raise Broken(thing)
        return "ok"

    args = ({1, 2}, b"\x00\xff", datetime.datetime(2030, 1, 2, 3, 4, 5))
    with running_worker(app):
        first = wait_state(odd.delay(*args, thing=Opaque("t")), AWAITING_OPERATOR)
        shown = alice.incident(first.id)
        assert "{1, 2}" in shown["args"] and "Opaque('t')" in shown["kwargs"]
        assert shown["exc_message"] == "Opaque('t')"
        alice.retry(first.id, wait=10)
        assert first.get(timeout=20) == "ok"
        assert seen[1] == (*args, Opaque("t"))

        second = wait_state(odd.delay(*args, thing=Opaque("u")), AWAITING_OPERATOR)
        alice.fail(second.id, wait=10)
        with pytest.raises(Broken):
            second.get(timeout=20)


def test_a_ten_megabyte_exception_is_capped_everywhere_it_is_stored(app, alice, rclient):
    """An exception with a 10 MB message (and so a 10 MB traceback) is stored capped: the incident's
    message, the try's traceback, the stored exception, the stream entry and Celery's parked state
    stay within the configured limits, and the whole flow takes well under 1 MB of Redis."""
    huge = "x" * (10 * 1024 * 1024)

    @app.task(base=InteractiveTask, name=f"{app.main}.huge")
    def explode():
        raise Broken(huge)

    settings = settings_for(app)
    keys = Keys(app.conf.interactive_key_prefix)
    with running_worker(app):
        result = wait_state(explode.delay(), AWAITING_OPERATOR)
        incident = rclient.hgetall(keys.incident(result.id))
        record = json.loads(rclient.hget(keys.tries(result.id), "1"))
        assert len(incident["exc_message"]) <= settings.repr_max_chars
        assert len(record["traceback"].encode()) <= settings.traceback_max_bytes
        # The message line is cut, so the frames and the exception type survive.
        assert record["traceback"].startswith("Traceback (most recent call last)")
        assert "in explode" in record["traceback"] and "Broken: xxx" in record["traceback"]
        assert len(rclient.hget(keys.message(result.id), "exc")) <= 4 * settings.repr_max_chars + 200
        assert all(len(v) <= settings.repr_max_chars + 500 for _, f in rclient.xrange(keys.stream) for v in f.values())
        assert len(rclient.get(f"celery-task-meta-{result.id}")) < 10_000
        ours = sum(rclient.memory_usage(k) or 0 for pattern in keys.all_patterns()
                   for k in rclient.scan_iter(match=pattern.replace("{", "\\{").replace("}", "\\}")))
        assert ours < 1_000_000
        alice.fail(result.id, wait=10)
        with pytest.raises(Broken):
            result.get(timeout=20)
    assert len(rclient.get(f"celery-task-meta-{result.id}")) < 100_000


def test_non_ascii_is_kept_and_control_characters_are_escaped(app, rclient):
    """An exception message with accents, CJK, an emoji and terminal escape sequences: the text is
    kept as is, control characters are stored escaped in the incident, the traceback and the
    stream, and the CLI prints no raw escape byte. Operators with non-ASCII names act normally."""
    text = "Grüße aus 東京 🚀 \x1b[2J\x1b]0;owned\x07 nul\x00 end"

    @app.task(base=InteractiveTask, name=f"{app.main}.intl")
    def intl():
        raise Broken(text)

    jose = OperatorAPI(app, "José Ñandú 山田")
    jose.heartbeat()
    keys = Keys(app.conf.interactive_key_prefix)
    with running_worker(app):
        result = wait_state(intl.delay(), AWAITING_OPERATOR)
        stored = [rclient.hget(keys.incident(result.id), "exc_message"), rclient.hget(keys.tries(result.id), "1"),
                  *[v for _, f in rclient.xrange(keys.stream) for v in f.values()]]
        for value in stored:
            assert not any(ch in value for ch in "\x1b\x07\x00"), value
        assert stored[0] == "Grüße aus 東京 🚀 \\x1b[2J\\x1b]0;owned\\x07 nul\\x00 end"
        assert "Grüße aus 東京 🚀" in json.loads(stored[1])["traceback"]
        for args in (("show", result.id), ("list",), ("history", result.id), ("show", result.id, "--json")):
            shown = invoke(app, *args, "--operator", "José Ñandú 山田")
            assert shown.exit_code == 0 and "\x1b" not in shown.stdout and "\x07" not in shown.stdout, args
        assert "Grüße aus 東京" in invoke(app, "show", result.id, "--operator", "José Ñandú 山田").stdout
        jose.fail(result.id, reason="Überlastung – später", wait=10)
        with pytest.raises(Broken):
            result.get(timeout=20)
    incident = wait_incident_state(jose, result.id, "failed")
    assert (incident["decided_by"], incident["reason"]) == ("José Ñandú 山田", "Überlastung – später")


# -- keys corrupted by hand ------------------------------------------------------------------------------

def _corrupt_incident_type(client, keys, ids):
    client.delete(keys.incident(ids[0]))
    client.set(keys.incident(ids[0]), "not a hash")


def _corrupt_incident_fields(client, keys, ids):
    client.hset(keys.incident(ids[0]), mapping={"deadline": "soon", "opened_at": "yesterday", "fence": "x"})


def _corrupt_stream(client, keys, ids):
    client.delete(keys.stream)
    client.hset(keys.stream, "oops", "1")


def _corrupt_decisions(client, keys, ids):
    client.delete(keys.decisions)
    client.set(keys.decisions, "oops")


def _corrupt_presence(client, keys, ids):
    client.delete(keys.presence)
    client.rpush(keys.presence, "alice")


def _corrupt_ids(client, keys, ids):
    client.delete(keys.ids)
    client.set(keys.ids, "oops")


def _corrupt_missing_id(client, keys, ids):
    client.hdel(keys.incident(ids[0]), "id", "try")


# corruption -> (command, expected exit code, expected JSON error code or None for success)
CORRUPTIONS = {
    "incident is not a hash": (_corrupt_incident_type, [
        (("show", 0), 2, "corrupt_data"), (("retry", 0), 2, "corrupt_data"), (("list",), 0, None),
        (("show", 1), 0, None)]),
    "incident fields are garbage": (_corrupt_incident_fields, [
        (("show", 0), 0, None), (("list",), 0, None)]),
    "incident lacks its id": (_corrupt_missing_id, [(("retry", 0), 2, "corrupt_data")]),
    "stream is a hash": (_corrupt_stream, [(("fail", 0), 2, "corrupt_data"), (("show", 1), 0, None)]),
    "decisions stream is a string": (_corrupt_decisions, [(("retry", 1), 2, "corrupt_data")]),
    "presence is a list": (_corrupt_presence, [(("list",), 2, "corrupt_data"), (("fail", 0), 2, "corrupt_data")]),
    "id index is a string": (_corrupt_ids, [(("show", "prefix"), 2, "corrupt_data"), (("show", 1), 0, None)]),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_keys_corrupted_by_hand_give_a_clear_error_and_no_partial_write(app, alice, rclient, corruption):
    """A key under the prefix holding another type, or an incident with unreadable fields: commands
    touching it exit 2 with ``corrupt_data`` (or show the raw value), never a traceback; commands
    on healthy incidents still work; a refused decision writes nothing at all."""
    corrupt, checks = CORRUPTIONS[corruption]
    ids = [str(uuid.uuid4()) for _ in range(2)]
    for task_id in ids:
        seed_incident(alice.store, task_id)
    keys = Keys(app.conf.interactive_key_prefix)
    corrupt(rclient, keys, ids)
    for command, exit_code, code in checks:
        verb, *ref = command
        argv = [verb] + ([ids[0][:9] if ref[0] == "prefix" else ids[ref[0]]] if ref else [])
        before = snapshot(rclient, app.conf.interactive_key_prefix, skip=ACTIVITY)
        result = invoke(app, *argv, "--operator", "alice", "--json", *(["--wait", "0"] if verb in ("retry", "fail") else []))
        if code is None:
            assert result.exit_code == exit_code, result.output
        else:
            error = _error(result, code, exit_code)
            assert app.conf.interactive_key_prefix in error["message"], error
            assert snapshot(rclient, app.conf.interactive_key_prefix, skip=ACTIVITY) == before
    if corruption == "incident fields are garbage":
        shown = parse_json(invoke(app, "show", ids[0], "--operator", "alice", "--json").stdout)
        assert shown["deadline"] == "soon" and shown["fence"] == "x"


def test_one_sweep_batch_times_out_the_due_and_skips_the_rest_each_untouched(app, alice, rclient):
    """The sweeper's batch script answers for each incident. Only the due, open ones time out
    (incident decided, one decision entry each, their try record not rewritten); an incident
    edited by hand into another type, one not due yet, one already decided and an unknown id are
    reported and left exactly as they were."""
    keys = Keys(app.conf.interactive_key_prefix)
    now = time.time()
    due, corrupt, later, decided, unknown, due_too = (str(uuid.uuid4()) for _ in range(6))
    for task_id in (due, corrupt, decided, due_too):
        seed_incident(alice.store, task_id, now=now, deadline=now - 1)
    seed_incident(alice.store, later, now=now, deadline=now + 3600)
    alice.fail(decided, wait=0)
    rclient.delete(keys.incident(corrupt))
    rclient.set(keys.incident(corrupt), "oops")
    before = {task_id: (rclient.dump(keys.incident(task_id)), rclient.dump(keys.tries(task_id)))
              for task_id in (corrupt, later, decided)}
    record_before = rclient.hget(keys.tries(due), "1")

    statuses = alice.store.expire([due, corrupt, later, decided, unknown, due_too], now=now)

    assert statuses == ["ok", "corrupt", "not_due", "decided", "unknown", "ok"]
    for task_id in (due, due_too):
        raw = rclient.hgetall(keys.incident(task_id))
        assert (raw["state"], raw["decision"], float(raw["decided_at"])) == ("decided", "timeout", now)
        assert "decided_by" not in raw and "reason" not in raw  # implied for a timeout
        assert rclient.zscore(keys.active, task_id) == now and rclient.zscore(keys.open, task_id) is None
        assert rclient.zscore(keys.deadlines, task_id) is None
        assert rclient.zscore(keys.audit, f"{task_id}:1") == now
    assert rclient.hget(keys.tries(due), "1") == record_before  # readers take the timeout from the incident
    assert [f["id"] for _, f in rclient.xrange(keys.decisions) if f["decision"] == "timeout"] == [due, due_too]
    assert {task_id: (rclient.dump(keys.incident(task_id)), rclient.dump(keys.tries(task_id)))
            for task_id in (corrupt, later, decided)} == before
    assert rclient.zscore(keys.deadlines, corrupt) == now - 1  # still due: the sweeper pages past it
    assert rclient.zscore(keys.deadlines, later) == now + 3600
    assert alice.store.expire([], now=now) == []

    # Readers see who and why all the same.
    shown = alice.incident(due)
    assert (shown["decided_by"], shown["reason"]) == ("timeout", "no decision before the deadline")
    assert (shown["tries"][0]["decision"], shown["tries"][0]["decided_by"]) == ("timeout", "timeout")
    with pytest.raises(AlreadyDecided) as refused:
        alice.retry(due, wait=0)
    assert refused.value.existing_decision["decided_by"] == "timeout"
    assert refused.value.existing_decision["reason"] == "no decision before the deadline"
    [entry] = [f for _, f in rclient.xrange(keys.stream) if f["type"] == "incident.decided" and f["id"] == due]
    assert (entry["decision"], entry["operator"], entry["reason"]) == ("timeout", "timeout", "no decision before the deadline")


# -- configuration ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("conf, message", [
    ({"interactive_limit_minutes": float("inf")}, "interactive_limit_minutes must be a number"),
    ({"interactive_decision_timeout_minutes": "10"}, "decision_timeout_minutes must be a number"),
    ({"interactive_retention_days": float("inf")}, "retention_days must be a positive number"),
    ({"interactive_retention_days": "14"}, "retention_days must be a positive number"),
    ({"interactive_sweep_interval_seconds": float("nan")}, "sweep_interval_s must be a positive number"),
    ({"interactive_claim_idle_seconds": -1}, "claim_idle_s must be a positive number"),
    ({"interactive_replay_fallback_seconds": True}, "replay_fallback_s must be a positive number"),
    ({"interactive_allow_any_operator": "yes"}, "interactive_allow_any_operator must be True or False"),
    ({"interactive_redact_keys": [1, 2]}, "interactive_redact_keys must be a list of strings"),
    ({"interactive_repr_max_chars": "2000"}, "interactive_repr_max_chars must be an integer"),
    ({"interactive_traceback_max_bytes": 1e9}, "interactive_traceback_max_bytes must be an integer"),
    ({"interactive_subject": 5}, "interactive_subject must be a string"),
    ({"interactive_operators": 5}, "interactive_operators must be a list of names"),
    ({"interactive_key_prefix": 5}, "interactive_key_prefix must be"),
    ({"interactive_key_prefix": "{x}"}, "interactive_key_prefix must be"),
    ({"interactive_flower_url": 5}, "interactive_flower_url must be a URL string"),
    ({"interactive_redis_url": 6379}, "interactive_redis_url must be a redis:// URL"),
    ({"interactive_archive_retries": 1}, "archive_retries must be True or False"),
    ({"result_expires": "3600"}, "result_expires must be seconds or a timedelta"),
])
def test_app_settings_of_the_wrong_type_are_refused_with_a_clear_message(conf, message):
    """Settings not covered by tests/test_config.py: each wrong type (or a non-finite number)
    raises one ConfigurationError that names the setting, exit code 2."""
    app = Celery("cfg", broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.update(conf)
    with pytest.raises(ConfigurationError, match=message) as info:
        settings_for(app)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("keywords, message", [
    ({"interactive_limit_minutes": "5"}, "must be a number of minutes"),
    ({"archive_retries": "no"}, "archive_retries must be True or False"),
    ({"interactive_operators": [3]}, "interactive_operators must be a list of names"),
    ({"interactive_subject": ["x"]}, "interactive_subject must be a string"),
])
def test_task_and_call_parameters_of_the_wrong_type_are_refused(keywords, message):
    """The same checks apply to a task's decorator keywords (at worker start) and to one call's
    parameters (in the caller, before anything is sent)."""
    app = Celery("cfg", broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/0", set_as_current=False)

    @app.task(base=InteractiveTask, name="cfg.keyworded", shared=False, **keywords)
    def keyworded():
        pass

    @app.task(base=InteractiveTask, name="cfg.plain", shared=False)
    def plain():
        pass

    with pytest.raises(ConfigurationError, match=message):
        flow_params(keyworded)
    with pytest.raises(ConfigurationError, match=message):
        interactive(plain.s(), **keywords)


def test_a_malformed_message_record_does_not_wedge_the_applier(app, alice, rclient, caplog):
    """The private message record of a decided incident edited by hand (its body is not what we
    wrote): the applier logs the entry once and acknowledges it instead of retrying it forever."""
    caplog.set_level(logging.WARNING, logger="interactive_celery")
    task_id = str(uuid.uuid4())
    seed_incident(alice.store, task_id)
    keys = Keys(app.conf.interactive_key_prefix)
    rclient.hset(keys.message(task_id), "body", base64.b64encode(b"\x00not json").decode())
    alice.fail(task_id, wait=0)
    alice.store.ensure_group()  # before polling XPENDING: the applier thread creates it only when it runs
    applier = Applier(app, "lone-applier")
    applier.start()
    try:
        wait_for(lambda: rclient.xpending(keys.decisions, "appliers")["pending"] == 0
                 and rclient.xinfo_groups(keys.decisions)[0]["last-delivered-id"] != "0-0",
                 timeout=20, what="the entry to be acknowledged")
    finally:
        applier.stop()
    assert any(task_id in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
