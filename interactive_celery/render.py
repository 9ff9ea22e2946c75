"""How incidents, tries, operators and stream messages look to a person: rich renderables for a
terminal, one-line text for logs and pipes. Pure functions over the operator API's views; nothing
here reads Redis or decides anything.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

SHORT = 8
TRACEBACK_LINES = 14


def short(task_id: str | None) -> str:
    return (task_id or "?")[:SHORT]


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def seconds_since(value: str | None, now: datetime | None = None) -> float | None:
    when = parse_iso(value)
    if when is None:
        return None
    return ((now or datetime.now(timezone.utc)) - when).total_seconds()


def duration(seconds: float | None) -> str:
    """A short human duration: ``45s``, ``12m 03s``, ``3h 20m``, ``2d 4h``."""
    if seconds is None:
        return "-"
    s = int(abs(seconds))
    if s < 60:
        text = f"{s}s"
    elif s < 3600:
        text = f"{s // 60}m {s % 60:02d}s"
    elif s < 86400:
        text = f"{s // 3600}h {s % 3600 // 60:02d}m"
    else:
        text = f"{s // 86400}d {s % 86400 // 3600}h"
    return f"-{text}" if seconds < 0 else text


def clock(value: str | None) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` UTC, for tables."""
    when = parse_iso(value)
    return when.strftime("%Y-%m-%d %H:%M:%S") if when else "-"


def exception_text(view: dict[str, Any], width: int = 0) -> str:
    text = f"{view.get('exc_type') or '?'}: {view.get('exc_message') or ''}".strip().rstrip(":")
    first = text.splitlines()[0] if text else ""
    if width and len(first) > width:
        first = first[: width - 1] + "…"
    return first


def time_left(view: dict[str, Any]) -> str:
    if view.get("state") != "open":
        return "-"
    left = seconds_since(view.get("deadline"))
    return "due" if left is not None and left >= 0 else duration(-left if left is not None else None)


def decision_text(view: dict[str, Any]) -> str:
    if not view.get("decision"):
        return ""
    reason = f" ({view['reason']})" if view.get("reason") else ""
    return f"{view['decision']} by {view.get('decided_by') or '?'}{reason}"


# -- tables -----------------------------------------------------------------------------------------

def _row(table: Table, *cells: Any, style: str | None = None, one_line: bool = False) -> None:
    # Cells are plain text: a task's arguments or an exception message may contain "[...]", which
    # rich would otherwise read as markup.
    table.add_row(*(Text(str(cell), no_wrap=one_line, overflow="ellipsis" if one_line else None)
                    for cell in cells), style=style)


def _table() -> Table:
    # Light rules and one space between columns: the tables must stay readable at 80 columns.
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True)


def incidents_table(views: Iterable[dict[str, Any]], *, selected: str | None = None,
                    live: bool = False, decided: bool = True) -> Table:
    """The ``list`` table. ``live`` marks the ``selected`` row (the console); ``decided`` adds the
    state and decision columns, which say nothing while every row is open."""
    table = _table()
    columns: list[tuple[str, dict[str, Any]]] = [
        ("ID", {"no_wrap": True}), ("TASK", {"overflow": "fold", "ratio": 1}),
        ("EXCEPTION", {"overflow": "fold", "ratio": 2}), ("AGE", {"justify": "right", "no_wrap": True}),
        ("TRY", {"justify": "right", "no_wrap": True}), ("LEFT", {"justify": "right", "no_wrap": True})]
    if live:
        columns.insert(0, ("", {"no_wrap": True}))
    elif decided:
        columns += [("STATE", {"no_wrap": True}), ("DECISION", {"overflow": "fold", "ratio": 1})]
    for name, opts in columns:
        table.add_column(name, **opts)
    for view in views:
        row = [short(view.get("id")), view.get("task") or "?", exception_text(view),
               duration(seconds_since(view.get("opened_at"))), str(view.get("try", "?")), time_left(view)]
        if live:
            row.insert(0, "▶" if view.get("id") == selected else "")
        elif decided:
            row += [view.get("state") or "?", decision_text(view)]
        # In the console each incident takes one line (cut with …), so it knows how many rows fit.
        _row(table, *row, style="reverse" if live and view.get("id") == selected else None, one_line=live)
    return table


def tries_table(tries: list[dict[str, Any]]) -> Table:
    table = _table()
    decided = any(record.get("decision") for record in tries)
    for name in ("TRY", "OUTCOME", "WORKER", "STARTED", "TOOK", "EXCEPTION", *(("DECISION",) if decided else ())):
        table.add_column(name, no_wrap=name not in ("EXCEPTION", "DECISION"), overflow="fold")
    for record in tries:
        started, ended = parse_iso(record.get("started_at")), parse_iso(record.get("ended_at"))
        took = duration((ended - started).total_seconds()) if started and ended else "-"
        exc = exception_text(record) if record.get("exc_type") else ""
        cells = [record.get("try", "?"), record.get("outcome", "?"), record.get("worker") or "-",
                 clock(record.get("started_at")), took, exc]
        _row(table, *cells, *((decision_text(record),) if decided else ()))
    return table


def operators_table(operators: list[dict[str, Any]]) -> Table:
    table = _table()
    for name in ("OPERATOR", "GROUPS", "HOST", "ONLINE SINCE", "LAST SEEN"):
        table.add_column(name, no_wrap=True)
    for op in operators:
        _row(table, op["operator"], ", ".join(op.get("groups") or []) or "-", op.get("host") or "-",
                      f"{clock(op.get('since'))} ({duration(seconds_since(op.get('since')))})",
                      f"{duration(seconds_since(op.get('last_seen')))} ago")
    return table


def audit_table(entries: list[dict[str, Any]]) -> Table:
    table = _table()
    for name in ("AT", "ID", "TRY", "DECISION", "OPERATOR", "HOST", "REASON"):
        table.add_column(name, no_wrap=name != "REASON", overflow="fold")
    for e in entries:
        _row(table, clock(e.get("at")), short(e.get("id")), str(e.get("try", "?")), e.get("decision") or "?",
                      e.get("operator") or "?", e.get("host") or "-", e.get("reason") or "")
    return table


# -- one incident -----------------------------------------------------------------------------------

def _field_grid(rows: list[tuple[str, Any]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in rows:
        if value not in (None, "", []):
            grid.add_row(label, value if isinstance(value, Text) else Text(str(value)))
    return grid


def incident_detail(view: dict[str, Any], *, traceback_lines: int = TRACEBACK_LINES,
                    all_tries: bool = False) -> RenderableType:
    """Everything an operator needs to decide: task, redacted call, exception, tries, traceback.

    The traceback comes last and is cut from its top (its end names the failure), so a console
    that has little height left still shows every fact above it.
    """
    tries = view.get("tries") or []
    state = str(view.get("state", "?"))
    where = " ".join(part for part in (f"on {view['worker']}" if view.get("worker") else "",
                                       f"queue {view['queue']}" if view.get("queue") else "") if part)
    when = f"opened {clock(view.get('opened_at'))} ({duration(seconds_since(view.get('opened_at')))} ago)"
    if state == "open":
        when += f", deadline {clock(view.get('deadline'))} ({time_left(view)} left)"
    elif view.get("resolved_at"):
        when += f", resolved {clock(view.get('resolved_at'))}"
    applied = f"applied by {view['applied_by']} at {clock(view.get('applied_at'))}" if view.get("applied_by") else ""
    rows: list[tuple[str, Any]] = [
        ("incident", Text.assemble(str(view.get("id")), "  ", (state.upper(), "bold yellow"),
                                   f"  try {view.get('try', '?')}, failed {view.get('fail_count', '?')}×")),
        ("task", f"{view.get('task', '?')} {where}".strip()),
        ("args", view.get("args")),
        ("kwargs", view.get("kwargs")),
        ("time", when),
        ("addressed", ", ".join(view.get("addressed") or []) or "anyone"),
        ("decision", " · ".join(p for p in (decision_text(view), applied) if p)),
        ("superseded", view.get("superseded_why")),
        ("exception", Text(exception_text(view), style="bold red")),
    ]
    parts: list[RenderableType] = [_field_grid(rows)]
    if len(tries) > 1 or (all_tries and tries):
        parts += [tries_table(tries)]
    failed = [t for t in tries if t.get("traceback")]
    if failed and traceback_lines > 0:
        lines = failed[-1]["traceback"].rstrip().splitlines()
        if len(lines) > traceback_lines:
            lines = ["…", *lines[-traceback_lines:]]
        parts += [Text(f"traceback of try {failed[-1].get('try', '?')}:", style="bold"),
                  Text("\n".join(lines), style="dim")]
    return Group(*parts)


# -- one-line forms -----------------------------------------------------------------------------------

_VERBS = {
    "incident.opened": "opened", "incident.decided": "decided", "incident.retried": "retrying",
    "incident.succeeded": "succeeded", "incident.failed": "failed", "incident.ignored": "ignored",
    "incident.timed_out": "timed out", "incident.superseded": "superseded",
}


def event_line(event: dict[str, Any], *, full_ids: bool = True) -> str:
    """One stream message as one line of text (the plain ``watch`` output and the console log)."""
    kind = event.get("type", "?")
    verb = _VERBS.get(kind, kind)
    task_id = event.get("id") if full_ids else short(event.get("id"))
    head = f"{event.get('at') if full_ids else clock(event.get('at'))[11:]} {verb} {task_id}"
    if kind == "incident.opened":
        return (f"{head} {event.get('task', '?')} try {event.get('try', '?')}: "
                f"{exception_text(event, 200)}")
    if kind == "incident.decided":
        reason = f" ({event['reason']})" if event.get("reason") else ""
        return f"{head} {event.get('decision', '?')} by {event.get('operator') or '?'}{reason}"
    tail = f" ({event['reason']})" if event.get("reason") else ""
    return f"{head} try {event.get('try', '?')}{tail}"


def incident_line(view: dict[str, Any]) -> str:
    """An open incident as one line, for the plain ``watch`` start-up listing."""
    return (f"{view.get('opened_at')} open {view.get('id')} {view.get('task', '?')} try {view.get('try', '?')}: "
            f"{exception_text(view, 200)} (left {time_left(view)})")


def decision_result_text(result: dict[str, Any]) -> str:
    what = f"{result['decision']} of {result['id']} recorded by {result['operator']}"
    if result.get("applied"):
        return f"{what}; applied by {result.get('applied_by') or '?'} (now {result.get('state')})"
    return f"{what}; no worker has applied it yet (it will be applied when a worker runs)"
