"""The demo's closing table, read back from Redis and the result backend.

Only the task ids and the story's expectations come from the demo's memory. States, results, tries
and decisions are read again: the Celery state and result from the result backend, the incident and
its tries from the incident records, the decisions from the operator stream (the audit trail). The
state Flower shows (from events only) is listed too, for comparison; it does not decide the verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from celery.states import READY_STATES

from rich.console import Console
from rich.table import Table

from interactive_celery import OperatorAPI

from .processes import flower_tasks
from .story import Flow


@dataclass
class Observed:
    flow: Flow
    state: str
    result: str
    incident: str | None
    tries: list[dict]
    decisions: list[dict]
    flower: str = "-"

    @property
    def problems(self) -> list[str]:
        found = []
        if self.state != self.flow.state:
            found.append(f"Celery state is {self.state}, the story expects {self.flow.state}")
        if self.incident != self.flow.incident:
            found.append(f"incident is {self.incident or 'absent'}, the story expects {self.flow.incident or 'none'}")
        names = tuple(d["decision"] for d in self.decisions)
        if names != self.flow.decisions:
            found.append(f"decisions are {list(names)}, the story expects {list(self.flow.decisions)}")
        return found


def observe(app, api: OperatorAPI, flows: list[Flow], flower_url: str | None = None) -> list[Observed]:
    decisions = api.audit()  # every decision in the operator stream, oldest first
    flower = _flower_states(flower_url, [flow.task_id for flow in flows])
    seen = []
    for flow in flows:
        result = app.AsyncResult(flow.task_id)
        state = result.state
        value = result.result
        shown = type(value).__name__ if isinstance(value, BaseException) else _short(value)
        incident = api.store.incident(flow.task_id)
        tries = api.history(flow.task_id) if incident else []
        seen.append(Observed(flow, state, shown, incident.get("state"), tries,
                             [d for d in decisions if d.get("id") == flow.task_id],
                             flower.get(flow.task_id, "?") if flower_url else "-"))
    return seen


def _flower_states(url: str | None, task_ids: list[str], wait_s: float = 5.0) -> dict[str, str]:
    """Flower's state of each task. Flower's events trail the result backend by a moment, so wait
    (briefly, for display only) until it has a final state for each."""
    if not url:
        return {}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            states = {task_id: info.get("state", "?") for task_id, info in flower_tasks(url).items()}
        except RuntimeError:
            return {}
        if all(states.get(t) in READY_STATES for t in task_ids) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def _short(value) -> str:
    if isinstance(value, dict) and "totals" in value:
        totals = " + ".join(f"{c} {a}" for c, a in value["totals"].items())
        count = len(value["batches"]) if isinstance(value.get("batches"), list) else 1
        return f"{count} batch(es), {value['invoices']} invoices, {totals}"
    if isinstance(value, dict) and "receipt" in value:
        return f"receipt {value['receipt']}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _decision(entry: dict) -> str:
    if entry["decision"] == "timeout":
        return "timeout (nobody decided)"
    return f"{entry['decision']} by {entry.get('operator')}"


def render(observed: list[Observed], console: Console | None = None) -> bool:
    """Print the table and any mismatch; True when every flow matches the story."""
    console = console or Console(width=160, highlight=False)
    table = Table(title="Flows, read back from Redis and the result backend", title_justify="left")
    for column in ("flow", "task id", "tries", "decisions", "incident", "Celery state", "Flower", "result", "ok"):
        table.add_column(column, overflow="fold")
    for o in observed:
        tries = " ".join(f"{t['try']}:{t['outcome']}" for t in o.tries) or "1 (no incident)"
        decided = ", ".join(_decision(d) for d in o.decisions) or "-"
        table.add_row(o.flow.label, o.flow.task_id[:8], tries, decided, o.incident or "-", o.state, o.flower, o.result,
                      "yes" if not o.problems else "NO")
    console.print(table)
    bad = [(o, p) for o in observed for p in o.problems]
    for o, problem in bad:
        console.print(f"MISMATCH {o.flow.label} ({o.flow.task_id}): {problem}")
    if bad:
        console.print(f"{len({id(o) for o, _ in bad})} of {len(observed)} flows do not match the story.")
    else:
        console.print(f"All {len(observed)} flows match the story.")
    return not bad
