"""Flower shows what interactive mode does, through its REST API.

A real Flower process on loopback (with FLOWER_UNAUTHENTICATED_API=true: Flower 2.1+ answers its API
with 401 without it), a real `celery worker` subprocess running the example app, a real Redis.
Flower reads events only, so what it shows comes from the task-awaiting_operator and task-retried
events and from Celery's own task events.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery

from examples import processes
from examples.invoices import COLUMNS
from examples.partner import PartnerService
from interactive_celery import AWAITING_OPERATOR, OperatorAPI
from interactive_celery.testing import free_port, wait_for
from tests.conftest import cleanup

pytestmark = pytest.mark.e2e

IMPORT = "invoices.import_batch"


class Stack:
    """The example app's worker and a Flower, on their own key prefix, queue and inbox."""

    def __init__(self, redis_url: str, workdir: Path, partner: PartnerService):
        run = uuid.uuid4().hex[:10]
        self.prefix, self.queue = f"fl{run}", f"q-fl{run}"
        self.inbox = workdir / "inbox"
        self.inbox.mkdir(parents=True)
        self.env = processes.child_env(
            REDIS_URL=redis_url, INTERACTIVE_KEY_PREFIX=self.prefix, INVOICES_QUEUE=self.queue,
            INVOICES_DIR=str(workdir), PARTNER_URL=partner.url)
        self.logs = workdir
        self.app = Celery(f"client-{run}", broker=redis_url, backend=redis_url, set_as_current=False)
        self.app.conf.update(task_default_queue=self.queue, interactive_key_prefix=self.prefix)
        self.children: list[processes.Managed] = []

    def flower(self, name: str = "flower") -> str:
        port = free_port()
        managed = processes.start_flower(self.env, self.logs / f"{name}.log", port=port)
        self.children.append(managed)
        url = f"http://127.0.0.1:{port}"
        processes.wait_flower_ready(url, managed)
        return url

    def worker(self) -> None:
        managed = processes.start_worker(self.env, self.logs / "worker.log", queue=self.queue,
                                         name=processes.worker_name(f"w-{self.prefix}"))
        self.children.append(managed)
        processes.wait_worker_ready(self.app, managed)
        processes.wait_flower_sees(self.flower_url, managed)

    def batch(self, name: str, *rows: str) -> str:
        (self.inbox / f"{name}.csv").write_text("\n".join([",".join(COLUMNS), *rows]) + "\n")
        return name

    def stop(self) -> None:
        for managed in reversed(self.children):
            managed.stop()


@pytest.fixture(scope="module")
def stack(redis_url, tmp_path_factory):
    with PartnerService() as partner:
        stack = Stack(redis_url, tmp_path_factory.mktemp("flower"), partner)
        try:
            stack.flower_url = stack.flower()  # before the worker: Flower never sees earlier events
            stack.worker()
            yield stack
        finally:
            stack.stop()
            client = redis.Redis.from_url(redis_url, decode_responses=True)
            cleanup(stack.app, client)
            client.close()


@pytest.fixture
def alice(stack):
    api = OperatorAPI(stack.app, "alice")
    api.heartbeat()
    return api


def flower_state(url: str, task_id: str, state: str, timeout: float = 30.0) -> dict:
    """Wait until Flower lists the task under ``state`` (/api/tasks?state=…); return its entry."""
    return wait_for(lambda: processes.flower_tasks(url, state).get(task_id), timeout=timeout,
                    what=f"Flower to list {task_id} as {state}")


def park(stack: Stack, batch: str) -> str:
    result = stack.app.send_task(IMPORT, args=[batch])
    wait_for(lambda: result.state == AWAITING_OPERATOR, timeout=30, what=f"{result.id} to park")
    return result.id


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    """The operator CLI as a person runs it: `interactive-celery -A examples.invoices …`."""
    return subprocess.run([str(Path(sys.executable).parent / "interactive-celery"), "-A", processes.APP, *args],
                          env={**stack.env, "INTERACTIVE_OPERATOR": "alice"}, cwd=processes.ROOT,
                          capture_output=True, text=True, timeout=60)


def test_parked_flow_shows_as_awaiting_operator_then_success_after_a_cli_retry(stack, alice):
    """Flower lists a parked flow under AWAITING_OPERATOR; the id copied from Flower (a prefix is
    enough) retries it with the CLI, and Flower then shows the same task id SUCCESS, having gone
    through RETRY, RECEIVED, STARTED and SUCCESS."""
    task_id = park(stack, "late-arrival")  # not in the inbox yet
    entry = flower_state(stack.flower_url, task_id, AWAITING_OPERATOR)
    assert entry["name"] == IMPORT

    stack.batch("late-arrival", "L-1,Late Ltd,10.00,EUR")
    retried = cli(stack, "retry", task_id[:8], "--reason", "the file arrived", "--wait", "10")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    flower_state(stack.flower_url, task_id, "SUCCESS")
    assert task_id not in processes.flower_tasks(stack.flower_url, AWAITING_OPERATOR)
    status, info = processes.http_get(f"{stack.flower_url}/api/task/info/{task_id}")
    assert status == 200
    assert all(info.get(field) for field in ("retried", "received", "started", "succeeded")), info
    assert stack.app.AsyncResult(task_id).get(timeout=10)["totals"] == {"EUR": "10.00"}


def test_failed_flow_shows_as_failure_after_the_operator_fails_it(stack, alice):
    """A parked flow that the operator fails leaves AWAITING_OPERATOR and shows as FAILURE, with the
    original exception."""
    stack.batch("broken", "B-1,Broken BV,ten,EUR")
    task_id = park(stack, "broken")
    flower_state(stack.flower_url, task_id, AWAITING_OPERATOR)

    alice.fail(task_id, reason="sent back to the customer", wait=10)
    entry = flower_state(stack.flower_url, task_id, "FAILURE")
    assert "MalformedRow" in (entry.get("exception") or "")
    assert task_id not in processes.flower_tasks(stack.flower_url, AWAITING_OPERATOR)


def test_flower_started_after_the_park_does_not_show_it_but_list_does(stack, alice):
    """Events are not replayed: a Flower started after a flow parked never learns of it, while the
    CLI's `list` reads the incident from Redis and shows it."""
    task_id = park(stack, "never-arrives")
    late_flower = stack.flower("late-flower")
    # Prove the late Flower receives events, so the absence below is not just lag. Its event
    # receiver connects a little after its HTTP server answers, so probe until one is seen.
    stack.batch("probe", "P-1,Probe,1.00,EUR")
    probes: list[str] = []

    def sees_a_probe() -> bool:
        probes.append(stack.app.send_task(IMPORT, args=["probe"]).id)
        return bool(set(probes) & set(processes.flower_tasks(late_flower, "SUCCESS")))

    wait_for(sees_a_probe, timeout=60, interval=1.0, what="the late Flower to see a new task")
    assert task_id not in processes.flower_tasks(late_flower)
    assert task_id in processes.flower_tasks(stack.flower_url, AWAITING_OPERATOR)

    listed = cli(stack, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert task_id in listed.stdout
    alice.fail(task_id, reason="test over", wait=10)
