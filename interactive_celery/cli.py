"""The operator CLI: ``celery -A proj interactive …`` and ``interactive-celery -A proj …``.

A thin layer: parse, call :class:`~interactive_celery.api.OperatorAPI`, print. People get rich
tables; ``--json`` gives one JSON document per command (docs/json.md). Every error is an
:class:`~interactive_celery.errors.InteractiveError` whose ``exit_code`` becomes the process status:
0 done, 1 refused, 2 bad input or configuration, 3 Redis unreachable. No traceback reaches the user
unless ``INTERACTIVE_DEBUG`` is set.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable

import click
from rich.console import Console
from rich.text import Text

from . import render
from .api import OperatorAPI
from .errors import AlreadyDecided, AmbiguousIncident, BadInput, InteractiveError, NotAddressed
from .incidents import iso

EXIT_INTERRUPTED = 130


class Out:
    """Where a command's result goes: one JSON document on stdout, or rich output for people."""

    def __init__(self, as_json: bool, no_color: bool = False):
        self.as_json = as_json
        self.console = Console(no_color=no_color, highlight=False, soft_wrap=False)
        self.err = Console(stderr=True, no_color=no_color, highlight=False, soft_wrap=True)

    def say(self, text: str) -> None:
        """A sentence for people: never wrapped mid-line, so it greps and copies cleanly."""
        self.console.print(text, soft_wrap=True, markup=False)

    def json(self, doc: Any) -> None:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True))

    def error(self, code: str, message: str, **extra: Any) -> None:
        if self.as_json:
            self.json({"error": {"code": code, "message": message, **extra}})
        else:
            self.err.print(Text.assemble(("error:", "bold red"), " ", message))


def error_extra(exc: InteractiveError) -> dict[str, Any]:
    """The data an error carries, for scripts that want more than the message."""
    if isinstance(exc, AmbiguousIncident):
        return {"candidates": exc.candidates}
    if isinstance(exc, AlreadyDecided):
        d = exc.existing_decision
        return {"existing_decision": {"decision": d.get("decision"), "decided_by": d.get("decided_by"),
                                      "decided_at": d.get("decided_at_iso"), "reason": d.get("reason") or ""}}
    if isinstance(exc, NotAddressed):
        return {"addressed": exc.addressed}
    return {}


class JsonAwareCommand(click.Command):
    """A bad option under ``--json`` still answers with one JSON error document (exit 2)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        wants_json = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if not wants_json:
                raise
            Out(True).error("bad_input", exc.format_message())
            raise click.exceptions.Exit(2) from None


def _context_app(ctx: click.Context):
    app = getattr(ctx.obj, "app", None)
    if app is None:
        raise BadInput("no Celery app: run as `celery -A proj interactive …` or `interactive-celery -A proj …`")
    return app


def run_guarded(out: Out, action: Callable[[], None]) -> int:
    """Run ``action``; turn every error into a message and an exit code, never a traceback."""
    try:
        action()
        return 0
    except InteractiveError as exc:
        out.error(exc.code, str(exc), **error_extra(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except click.exceptions.Exit:
        raise
    except Exception as exc:  # a bug of ours: one line, and the traceback only on request
        if os.environ.get("INTERACTIVE_DEBUG"):
            raise
        out.error("internal_error", f"unexpected {type(exc).__name__}: {exc} "
                                    "(set INTERACTIVE_DEBUG=1 to see the traceback)")
        return 1


def operator_command(name: str, *, json_option: bool = True, **settings: Any):
    """Register a sub-command that gets an :class:`OperatorAPI` for the chosen operator and an
    :class:`Out`; the common options and the error handling live here once."""

    def decorate(fn: Callable[..., None]) -> click.Command:
        @click.pass_context
        def command(ctx: click.Context, operator: str | None, groups: tuple[str, ...],
                    as_json: bool = False, **kwargs: Any) -> None:
            out = Out(as_json, no_color=bool(getattr(ctx.obj, "no_color", False)))
            code = run_guarded(out, lambda: fn(
                OperatorAPI(_context_app(ctx), operator, _split_groups(groups)), out, **kwargs))
            ctx.exit(code)

        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        command.__click_params__ = list(getattr(fn, "__click_params__", []))  # type: ignore[attr-defined]
        params = [
            click.option("--operator", metavar="NAME", default=None,
                         help="Who is acting (default: $INTERACTIVE_OPERATOR, then the login name)."),
            click.option("--group", "groups", metavar="NAME", multiple=True,
                         help="A group you act for; repeatable (default: $INTERACTIVE_GROUPS, comma-separated)."),
        ]
        if json_option:
            params.append(click.option("--json", "as_json", is_flag=True,
                                       help="Print one JSON document (see docs/json.md)."))
        for param in reversed(params):
            command = param(command)
        return interactive.command(name, cls=JsonAwareCommand, **settings)(command)

    return decorate


def _split_groups(groups: tuple[str, ...]) -> tuple[str, ...] | None:
    names = tuple(g.strip() for value in groups for g in value.split(",") if g.strip())
    return names or None  # None lets the API read $INTERACTIVE_GROUPS


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@click.group("interactive")
@click.pass_context
def interactive(ctx: click.Context, **_preload: Any) -> None:
    """See and decide parked task failures (interactive_celery).

    ID is an exact task id or a unique prefix of at least 8 characters.
    Exit codes: 0 done, 1 refused, 2 bad input or configuration, 3 Redis unreachable.
    """


# -- presence -----------------------------------------------------------------------------------------

@operator_command("heartbeat")
@click.option("--every", "every_s", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Keep marking yourself online at this interval until interrupted.")
def heartbeat(api: OperatorAPI, out: Out, every_s: float | None) -> None:
    """Mark yourself online once, or every SECONDS until interrupted."""
    beats = 0

    def beat() -> None:
        nonlocal beats
        api.heartbeat()
        beats += 1

    beat()
    if every_s is not None:
        from .console import sigterm_as_interrupt

        if not out.as_json:
            out.say(f"{api.operator} is online; heartbeat every {every_s:g}s, Ctrl-C to stop")
        try:
            with sigterm_as_interrupt():
                while True:
                    time.sleep(every_s)
                    try:
                        beat()
                    except InteractiveError as exc:  # keep going: Redis may come back
                        out.err.print(f"heartbeat failed: {exc}", markup=False)
        except KeyboardInterrupt:
            pass
    doc = {"operator": api.operator, "groups": list(api.groups), "heartbeats": beats, "last_seen": _now_iso()}
    if out.as_json:
        out.json(doc)
    elif every_s is None:
        out.say(f"{api.operator} is online (counts as online for "
                f"{render.duration(api.settings.flow.limit_minutes * 60)})")


@operator_command("operators")
def operators(api: OperatorAPI, out: Out) -> None:
    """Who is online now, and since when."""
    ops = api.operators()
    if out.as_json:
        out.json({"operators": ops})
    else:
        out.console.print(render.operators_table(ops))


# -- reading ------------------------------------------------------------------------------------------

@operator_command("list")
@click.option("--state", type=click.Choice(["open", "active", "resolved", "any"]), default="open",
              show_default=True, help="open: waiting for a decision; active: decided, not finished.")
@click.option("--everyone", is_flag=True, help="Include incidents addressed to other operators.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def list_(api: OperatorAPI, out: Out, state: str, everyone: bool, limit: int) -> None:
    """Incidents, newest first."""
    views = api.incidents(state, limit=limit, everyone=everyone)
    if out.as_json:
        out.json({"state": state, "everyone": everyone, "count": len(views), "incidents": views})
    elif not views:
        out.say("no incidents" if state == "any" else f"no {state} incidents")
    else:
        out.console.print(render.incidents_table(views, decided=state != "open"))


@operator_command("show")
@click.argument("ref", metavar="ID")
def show(api: OperatorAPI, out: Out, ref: str) -> None:
    """One incident, whole: call, exception, traceback, decision and tries."""
    view = api.incident(ref)
    if out.as_json:
        out.json(view)
    else:
        out.console.print(render.incident_detail(view, traceback_lines=0, all_tries=True))
        for record in view["tries"]:
            if record.get("traceback"):
                # Printed as is, never re-wrapped: a traceback is copied into bug reports.
                out.say(f"\ntraceback of try {record.get('try', '?')}:")
                out.say(record["traceback"].rstrip())


@operator_command("history")
@click.argument("ref", metavar="TASK_ID")
def history(api: OperatorAPI, out: Out, ref: str) -> None:
    """The tries of a flow, archived ones included."""
    task_id = api.resolve_id(ref)
    tries = api.history(task_id)
    if out.as_json:
        out.json({"id": task_id, "tries": tries})
    else:
        out.console.print(render.tries_table(tries))


_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str | None, now: float) -> float:
    """``--since``: a duration back from now (``90s``, ``15m``, ``2h``, ``7d``) or an ISO 8601
    time (UTC when it names no zone)."""
    if not text:
        return 0.0
    match = _AGO.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT_S[match.group(2)]
    when = render.parse_iso(text.strip())
    if when is None:
        raise BadInput(f"--since must be a duration like 15m, 2h, 7d or an ISO 8601 time, not {text!r}")
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


@operator_command("audit")
@click.option("--since", metavar="WHEN", help="A duration back from now (15m, 2h, 7d) or an ISO 8601 time.")
def audit(api: OperatorAPI, out: Out, since: str | None) -> None:
    """Every decision recorded (retry, fail, ignore, timeout), oldest first."""
    since_ts = parse_since(since, time.time())
    entries = api.audit(since=since_ts)
    if out.as_json:
        out.json({"since": iso(since_ts) if since else None, "decisions": entries})
    elif not entries:
        out.say("no decisions recorded in that range")
    else:
        out.console.print(render.audit_table(entries))


# -- deciding -----------------------------------------------------------------------------------------

_WAIT = click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=5.0, show_default=True,
                     metavar="SECONDS", help="How long to wait for a worker to apply the decision.")
_REASON = click.option("--reason", metavar="TEXT", default=None, help="Why; kept with the decision.")


def _report(api: OperatorAPI, out: Out, ref: str, decision: str, reason: str | None, wait_s: float,
            result: Any = None) -> None:
    outcome = api.decide(ref, decision, reason=reason, wait=wait_s, result=result).to_json()
    if out.as_json:
        out.json(outcome)
    else:
        out.say(render.decision_result_text(outcome))


@operator_command("retry")
@click.argument("ref", metavar="ID")
@_REASON
@_WAIT
def retry(api: OperatorAPI, out: Out, ref: str, reason: str | None, wait_s: float) -> None:
    """Run the flow again as a new try under the same task id."""
    _report(api, out, ref, "retry", reason, wait_s)


@operator_command("fail")
@click.argument("ref", metavar="ID")
@_REASON
@_WAIT
def fail(api: OperatorAPI, out: Out, ref: str, reason: str | None, wait_s: float) -> None:
    """Fail the flow for good with its original exception."""
    _report(api, out, ref, "fail", reason, wait_s)


@operator_command("ignore")
@click.argument("ref", metavar="ID")
@click.option("--result", "result_json", metavar="JSON", default=None,
              help="The task's result as JSON (default: null).")
@_REASON
@_WAIT
def ignore(api: OperatorAPI, out: Out, ref: str, result_json: str | None, reason: str | None,
           wait_s: float) -> None:
    """Finish the flow as a success with the given result; a chain continues with it."""
    try:
        result = json.loads(result_json) if result_json is not None else None
    except ValueError as exc:
        raise BadInput(f"--result must be JSON: {exc}") from None
    _report(api, out, ref, "ignore", reason, wait_s, result=result)


# -- the live console -----------------------------------------------------------------------------------

@operator_command("watch", json_option=False)
@click.option("--everyone", is_flag=True, help="Include incidents addressed to other operators.")
@click.option("--heartbeat-every", "heartbeat_s", type=click.FloatRange(min=1), default=None,
              metavar="SECONDS", help="Heartbeat interval (default: a third of the activity limit, at most 5s).")
def watch(api: OperatorAPI, out: Out, everyone: bool, heartbeat_s: float | None) -> None:
    """Live console: keeps you online, shows incidents as they arrive, decides with single keys
    (r retry, f fail, i ignore, q quit). Prints plain lines when stdout is not a terminal."""
    from .console import Watch

    limit_s = api.settings.flow.limit_minutes * 60
    # Often enough for tasks whose own limit is shorter than the app-wide one.
    every = heartbeat_s or max(1.0, min(5.0, limit_s / 3 if limit_s else 5.0))
    Watch(api, out.console, everyone=everyone, heartbeat_s=every).run()


# -- the standalone script ------------------------------------------------------------------------------

class _AppContext:
    """What ``celery`` hands its sub-commands as ``ctx.obj``: the app and the colour choice."""

    def __init__(self, app, no_color: bool = False):
        self.app = app
        self.no_color = no_color


from .web.command import web_command  # noqa: E402  (the web console is one more sub-command)

interactive.add_command(web_command)


def load_app(spec: str):
    from celery.app.utils import find_app

    try:  # find_app imports from the working directory, exactly as `celery -A` does
        return find_app(spec)
    except Exception as exc:
        raise BadInput(f"cannot load the Celery app {spec!r}: {type(exc).__name__}: {exc}") from None


@click.group("interactive-celery", commands=interactive.commands, help=interactive.help)
@click.option("-A", "--app", "app_spec", metavar="MODULE[:ATTR]", envvar="CELERY_APP",
              help="The Celery app, as for `celery -A` (default: $CELERY_APP).")
@click.option("-C", "--no-color", is_flag=True, help="Plain output without colours (rich also honours $NO_COLOR).")
@click.pass_context
def main(ctx: click.Context, app_spec: str | None, no_color: bool) -> None:
    if ctx.resilient_parsing:
        return
    out = Out("--json" in sys.argv[1:], no_color)
    if not app_spec:
        out.error("bad_input", "no Celery app: pass -A/--app MODULE[:ATTR] or set CELERY_APP")
        ctx.exit(2)
    try:
        ctx.obj = _AppContext(load_app(app_spec), no_color)
    except InteractiveError as exc:
        out.error(exc.code, str(exc))
        ctx.exit(exc.exit_code)


__all__ = ["interactive", "main"]
