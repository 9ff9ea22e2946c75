"""Races: concurrent deciders (retry, fail, ignore and the timeout sweeper) on one incident, and several
sweepers on the same due deadlines. The first decision wins, every other one is refused (or the
sweeper's no-op), and a decision is applied once: the body runs at most once more.

Most trials seed the incident straight through the park script (tests/fault_support.py), which is
what a worker's failure path runs, so that a thousand trials fit in seconds; a smaller number run
end to end through a real worker to show what the body does. docs/reliability.md has the figures.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
import redis

from interactive_celery import AWAITING_OPERATOR, AlreadyDecided, DecisionResult, OperatorAPI
from interactive_celery.config import settings_for
from interactive_celery.incidents import implied_decision
from interactive_celery.keys import Keys
from interactive_celery.store import Store
from interactive_celery.worker import Applier
from tests.conftest import cleanup, running_worker
from tests.fault_app import Broken, build, fixed_key, runs_key
from tests.fault_support import report, seed_incident
from tests.helpers import wait_incident_state, wait_state

pytestmark = pytest.mark.fault

THREAD_TRIALS = 1000
PROCESS_TRIALS = 100
E2E_TRIALS = 20
SWEPT = 300
ROLES = ("retry", "fail", "ignore", "timeout")
NAMES = ("alice", "bob", "carol", "dave")
IGNORED = {"ignored": True}


def plan(rng: random.Random) -> list[str]:
    """2-4 deciders; each is an operator deciding retry, fail or ignore, or the timeout sweeper."""
    roles = [rng.choice(ROLES) for _ in range(rng.randint(2, 4))]
    if len(set(roles)) == 1 and rng.random() < 0.5:
        roles[-1] = rng.choice([r for r in ROLES if r != roles[0]])  # mostly mixed, sometimes all alike
    return roles


def act(api: OperatorAPI | None, applier: Applier | None, role: str, task_id: str, now: float | None = None):
    """One decider's move: the outcome, or the refusal it got. The sweeper's outcome is its number
    of transitions; with ``now`` it times out this one incident as the sweeper does at ``now``."""
    if role == "timeout":
        if now is None:
            return applier.sweep(time.time())
        status = applier.store.expire([task_id], now=now)[0]
        assert status in ("ok", "decided"), status
        return int(status == "ok")
    try:
        return api.decide(task_id, role, wait=0, result=IGNORED if role == "ignore" else None)
    except AlreadyDecided as exc:
        return exc


def judge(roles: list[str], names: list[str], outcomes: list) -> tuple[str, str]:
    """Exactly one winner; every operator who lost got AlreadyDecided naming the winner's decision,
    and a sweeper that lost changed nothing. Returns the winner's (decision, decided_by)."""
    won = [i for i, o in enumerate(outcomes) if isinstance(o, DecisionResult) or o == 1]
    assert len(won) == 1, (roles, outcomes)
    winner = won[0]
    decision = roles[winner]
    for i, outcome in enumerate(outcomes):
        if i == winner:
            continue
        if roles[i] == "timeout":
            assert outcome == 0, (roles, outcomes)
        else:
            assert isinstance(outcome, AlreadyDecided), (roles, outcomes)
            assert outcome.existing_decision["decision"] == decision, (roles, outcomes)
    return decision, ("timeout" if decision == "timeout" else names[winner])


def check_recorded(client: redis.Redis, keys: Keys, task_id: str, decision: str, by: str) -> None:
    raw = client.hgetall(keys.incident(task_id))
    assert (raw["state"], raw["decision"], implied_decision(raw)["decided_by"]) == ("decided", decision, by), raw


def entries_per_id(client: redis.Redis, stream: str, **match: str) -> Counter:
    return Counter(f["id"] for _, f in client.xrange(stream)
                   if all(f.get(k) == v for k, v in match.items()))


# -- threads ---------------------------------------------------------------------------------------------

def test_a_thousand_thread_races_have_exactly_one_winner(app, rclient):
    """1,000 trials: 2-4 threads (operators with their own Redis connections, and the timeout
    sweeper, whose deadline has just passed) decide one incident at the same instant. Each trial has
    exactly one winner, recorded once in the incident, the workers' decision stream and the
    operators' stream; every other operator gets AlreadyDecided and a losing sweeper does nothing."""
    settings = settings_for(app)
    apis = {name: OperatorAPI(app, name, store=Store(settings)) for name in NAMES}
    appliers = [Applier(app, f"sweeper-{n}") for n in range(4)]
    seeder = Store(settings)
    keys = seeder.keys
    rng = random.Random(7)
    wins, sizes = Counter(), Counter()
    with ThreadPoolExecutor(4) as pool:
        for trial in range(THREAD_TRIALS):
            roles = plan(rng)
            sizes[len(roles)] += 1
            names = rng.sample(NAMES, len(roles))
            task_id = str(uuid.uuid4())
            apis["alice"].heartbeat()
            now = time.time()
            assert seed_incident(seeder, task_id, now=now,
                                 deadline=now - 0.001 if "timeout" in roles else now + 3600)[0] == "parked"
            barrier = threading.Barrier(len(roles))

            def decider(i: int):
                barrier.wait(timeout=30)
                return act(apis[names[i]], appliers[i], roles[i], task_id)

            outcomes = list(pool.map(decider, range(len(roles))))
            decision, by = judge(roles, names, outcomes)
            check_recorded(rclient, keys, task_id, decision, by)
            wins[decision] += 1
    applies = entries_per_id(rclient, keys.decisions)
    decided = entries_per_id(rclient, keys.stream, type="incident.decided")
    assert len(applies) == len(decided) == THREAD_TRIALS
    assert set(applies.values()) == set(decided.values()) == {1}
    assert set(wins) == set(ROLES), wins  # every kind of decider won some trials
    report("threads", trials=THREAD_TRIALS, deciders=dict(sizes), wins=dict(wins))


# -- processes -------------------------------------------------------------------------------------------

_proc: dict = {}


def _init_decider(redis_url: str, prefix: str, barriers: dict) -> None:
    """Runs once in each pool process: its own app, Redis connections and operator APIs."""
    _proc["app"] = build(redis_url, prefix)
    _proc["barriers"] = barriers
    _proc["apis"] = {}


def _decide_in_process(task_id: str, role: str, name: str, parties: int, now: float | None = None):
    app = _proc["app"]
    api = None if role == "timeout" else _proc["apis"].setdefault(name, OperatorAPI(app, name))
    applier = Applier(app, f"sweeper-{multiprocessing.current_process().pid}")
    _proc["barriers"][parties].wait(timeout=60)
    outcome = act(api, applier, role, task_id, now)
    if isinstance(outcome, AlreadyDecided):  # only the data crosses the process boundary
        return ("refused", outcome.existing_decision["decision"])
    if isinstance(outcome, DecisionResult):
        return ("won", outcome.decision)
    return ("swept", outcome)


@pytest.fixture(scope="module")
def decider_pool(redis_url):
    """Four long-lived processes (spawned, not forked), each holding its own app and OperatorAPIs."""
    prefix = f"p{uuid.uuid4().hex[:10]}"
    ctx = multiprocessing.get_context("spawn")
    barriers = {n: ctx.Barrier(n) for n in (2, 3, 4)}
    pool = ProcessPoolExecutor(max_workers=4, mp_context=ctx, initializer=_init_decider,
                               initargs=(redis_url, prefix, barriers))
    app = build(redis_url, prefix)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield pool, app, client
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        cleanup(app, client)
        client.close()


def test_a_hundred_process_races_have_exactly_one_winner(decider_pool):
    """100 trials: 2-4 decisions from separate long-lived processes hit one incident at once
    (operators, and the timeout sweeper of another process). Exactly one wins each trial; the
    others are refused with the winner's decision, or the sweeper does nothing."""
    pool, app, client = decider_pool
    store, keys = Store(settings_for(app)), Keys(app.conf.interactive_key_prefix)
    rng = random.Random(11)
    wins, sizes = Counter(), Counter()
    for trial in range(PROCESS_TRIALS):
        roles = plan(rng)
        sizes[len(roles)] += 1
        names = rng.sample(NAMES, len(roles))
        task_id = str(uuid.uuid4())
        OperatorAPI(app, "seeder").heartbeat()
        now = time.time()
        seed_incident(store, task_id, now=now, deadline=now - 0.001 if "timeout" in roles else now + 3600)
        futures = [pool.submit(_decide_in_process, task_id, role, name, len(roles))
                   for role, name in zip(roles, names)]
        outcomes = [f.result(timeout=120) for f in futures]
        won = [i for i, (kind, value) in enumerate(outcomes) if kind == "won" or (kind, value) == ("swept", 1)]
        assert len(won) == 1, (roles, outcomes)
        decision = roles[won[0]]
        for i, (kind, value) in enumerate(outcomes):
            if i != won[0]:
                assert (kind, value) in (("refused", decision), ("swept", 0)), (roles, outcomes)
                assert (kind == "swept") == (roles[i] == "timeout"), (roles, outcomes)
        check_recorded(client, keys, task_id, decision, "timeout" if decision == "timeout" else names[won[0]])
        wins[decision] += 1
    applies = entries_per_id(client, keys.decisions)
    assert len(applies) == PROCESS_TRIALS and set(applies.values()) == {1}
    assert len(wins) >= 3, wins
    report("processes", trials=PROCESS_TRIALS, deciders=dict(sizes), wins=dict(wins))


def test_sweepers_in_several_processes_make_one_transition_each(decider_pool):
    """Four processes sweep the same 300 due deadlines at the same instant, twice: the timeouts,
    then the direct-failure fallback of replays no worker picked up. Every incident makes exactly
    one transition each time (one timeout decision, one FAILURE stored), never two."""
    pool, app, client = decider_pool
    store, keys = Store(settings_for(app)), Keys(app.conf.interactive_key_prefix)
    client.delete(keys.decisions, keys.stream)  # this test counts from zero
    OperatorAPI(app, "seeder").heartbeat()
    now = time.time()
    ids = [str(uuid.uuid4()) for _ in range(SWEPT)]
    for task_id in ids:
        seed_incident(store, task_id, now=now, deadline=now - 1)

    def sweep_everywhere() -> int:
        """Sweep rounds in all four processes at once until nothing is due; the transitions made.
        (A round may leave fallbacks to the next one: they run within a time budget.)"""
        made = 0
        for _round in range(50):
            if not store.due(time.time()):
                return made
            futures = [pool.submit(_decide_in_process, "", "timeout", "", 4) for _ in range(4)]
            made += sum(f.result(timeout=120)[1] for f in futures)
        raise AssertionError("due deadlines left after 50 sweep rounds")

    assert sweep_everywhere() == SWEPT
    assert all(client.hget(keys.incident(i), "decision") == "timeout" for i in ids)
    assert entries_per_id(client, keys.decisions) == Counter({i: 1 for i in ids})

    # Applied but never replayed by a worker: the fallback deadline passes for all of them at once.
    for task_id in ids:
        assert store.apply(task_id, 1, now=now, worker="gone", fallback_at=now - 1) is not None
    assert sweep_everywhere() == SWEPT
    assert entries_per_id(client, keys.stream, type="incident.timed_out") == Counter({i: 1 for i in ids})
    assert {app.AsyncResult(i).state for i in ids} == {"FAILURE"}
    assert client.zcard(keys.deadlines) == 0
    report("sweepers", incidents=SWEPT, processes=4, timeouts=SWEPT, fallbacks=SWEPT)


# -- end to end ------------------------------------------------------------------------------------------

@pytest.fixture
def e2e_app(redis_url, rclient):
    app = build(redis_url, f"e{uuid.uuid4().hex[:10]}")
    yield app
    for key in rclient.scan_iter(match=f"fault-{app.conf.interactive_key_prefix}:*"):
        rclient.delete(key)
    cleanup(app, rclient)


def test_races_through_a_real_worker_run_the_body_at_most_once_more(e2e_app, rclient):
    """20 trials through a real worker: a flow parks, then 2-4 deciders (operators and the timeout
    sweeper at the deadline) race on it. One wins, and the flow ends the way the winner said: a
    retry runs the body exactly once more and succeeds; fail and timeout store FAILURE with the
    original exception and ignore stores the given result, without running the body again."""
    app = e2e_app
    prefix = app.conf.interactive_key_prefix
    flaky = app.tasks["fault.flaky"]
    apis = {name: OperatorAPI(app, name, store=Store(settings_for(app))) for name in NAMES}
    appliers = [Applier(app, f"sweeper-{n}") for n in range(4)]
    rng = random.Random(3)
    wins, runs_seen = Counter(), Counter()
    with running_worker(app), ThreadPoolExecutor(4) as pool:
        apis["alice"].heartbeat()
        for trial in range(E2E_TRIALS):
            roles = plan(rng)
            names = rng.sample(NAMES, len(roles))
            result = wait_state(flaky.delay(), AWAITING_OPERATOR)
            rclient.set(fixed_key(prefix, result.id), "1")  # a retry would now succeed
            deadline = float(apis["alice"].store.incident(result.id)["deadline"])
            barrier = threading.Barrier(len(roles))

            def decider(i: int):
                barrier.wait(timeout=30)
                return act(apis[names[i]], appliers[i], roles[i], result.id, now=deadline)

            decision, _ = judge(roles, names, list(pool.map(decider, range(len(roles)))))
            wins[decision] += 1
            runs = lambda: int(rclient.get(runs_key(prefix, result.id)))  # noqa: E731
            if decision == "retry":
                assert result.get(timeout=30) == "ok after 2 runs"
                wait_incident_state(apis["alice"], result.id, "succeeded")
            elif decision == "ignore":
                assert result.get(timeout=30) == IGNORED
                wait_incident_state(apis["alice"], result.id, "ignored")
            else:
                with pytest.raises(Broken):
                    result.get(timeout=30)
                wait_incident_state(apis["alice"], result.id, "failed")
            assert runs() == (2 if decision == "retry" else 1)
            runs_seen[f"{decision}: {runs()} runs"] += 1
    assert len(wins) >= 3, wins
    report("e2e", trials=E2E_TRIALS, wins=dict(wins), body_runs=dict(runs_seen))
