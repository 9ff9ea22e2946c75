"""Small helpers shared by tests."""

from __future__ import annotations

from celery.result import AsyncResult

from interactive_celery.testing import wait_for


def wait_state(result: AsyncResult, state: str, timeout: float = 20.0) -> AsyncResult:
    wait_for(lambda: result.state == state, timeout=timeout, what=f"{result.id} to reach {state} (is {result.state})")
    return result


def wait_incident_state(api, task_id: str, states, timeout: float = 20.0) -> dict:
    states = {states} if isinstance(states, str) else set(states)

    def check():
        raw = api.store.incident(task_id)
        return raw if raw.get("state") in states else None

    return wait_for(check, timeout=timeout, what=f"incident {task_id} to reach {states}")
