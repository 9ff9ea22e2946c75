"""InteractiveTask: intercept the final failure, park it, and run operator-issued tries.

No Redis call is made here directly; everything goes through :class:`~interactive_celery.store.Store`.
A first try that succeeds touches nothing of ours: the only work on that path is a ``try`` around
the body.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import socket
import time
import traceback as tb_module
from typing import Any

from celery import Task
from celery.app.task import Context
from celery.exceptions import Ignore, Reject, Retry
from kombu.serialization import dumps

from . import incidents
from .config import TASK_KEYWORDS, FlowParams, check_timeout_fits, settings_for
from .errors import InteractiveError
from .faults import crash_point
from .store import store_for
from .templates import render_message

logger = logging.getLogger("interactive_celery")

AWAITING_OPERATOR = "AWAITING_OPERATOR"
HEADER = "interactive"
#: Exceptions that are Celery's control flow, not failures.
PASS_THROUGH = (Ignore, Reject, Retry)

# Message fields and request attributes that are Celery's own, never a user's custom header.
_CELERY_FIELDS = {*Context.__dict__, "lang", "task", "argsrepr", "kwargsrepr", "compression", "redelivered",
                  "headers", "hostname", "delivery_info", "properties", "reply_to", "correlation_id",
                  "ignore_result", "stamps", "stamped_headers", "eta", "expires", "retries", "timelimit",
                  "task_name", "id", "root_id", "parent_id", "group", "group_index", "shadow", "origin",
                  "replaced_task_nesting", "args", "kwargs", "is_eager", HEADER}


def our_header(request: Any) -> dict | None:
    """Our header, wherever this Celery version put it.

    Celery 5.7 delivers custom ``apply_async(headers=...)`` entries as top-level request fields and
    also collects them in ``request.headers``; older versions keep them only in ``request.headers``.
    """
    value = getattr(request, HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(HEADER)
    return value if isinstance(value, dict) else None


def custom_headers(request: Any) -> dict:
    """A user's own headers on this request, so a re-sent message carries them again."""
    found = {k: v for k, v in (getattr(request, "headers", None) or {}).items() if k not in _CELERY_FIELDS}
    for key, value in vars(request).items():
        if key not in _CELERY_FIELDS and not key.startswith("_"):
            found.setdefault(key, value)
    found.pop(HEADER, None)
    return found


def flow_params(task: Task, call_params: dict | None = None) -> FlowParams:
    """App settings, then the task's decorator keywords, then this call's parameters."""
    cached = task.__dict__.get("_interactive_params")
    if cached is None:
        settings = settings_for(task.app)
        static = {field: getattr(task, kw) for kw, field in TASK_KEYWORDS.items()
                  if getattr(task, kw, None) is not None}
        cached = settings.flow.layered(static, f"task {task.name}")
        check_timeout_fits(settings, cached, f"task {task.name}")
        task._interactive_params = cached
    if call_params:
        layered = cached.layered(call_params, f"call of {task.name}")
        try:
            check_timeout_fits(settings_for(task.app), layered, f"call of {task.name}")
        except InteractiveError as exc:
            logger.warning("%s", exc)  # per call this is a warning, not an error (see DESIGN)
        return layered
    return cached


class InteractiveTask(Task):
    """A task whose final failure waits for an operator when one is online.

    Decorator keywords: ``interactive_limit_minutes``, ``archive_retries``,
    ``decision_timeout_minutes``, ``interactive_operators``, ``interactive_subject``,
    ``interactive_body``, ``interactive_context``. Unset ones come from the app's ``interactive_*``
    settings.
    """

    abstract = True
    interactive_limit_minutes: float | None = None
    archive_retries: bool | None = None
    decision_timeout_minutes: float | None = None
    interactive_operators: list[str] | None = None
    interactive_subject: str | None = None
    interactive_body: str | None = None
    interactive_context: Any = None

    def __call__(self, *args, **kwargs):
        request = self.request
        if not (request.called_directly or request.is_eager) and _next_call_is_celerys(type(self)):
            # In a worker the tracer has already pushed this task and its request, and it calls run()
            # directly for tasks without a custom __call__. Task.__call__ would push a copy of the
            # request again: ~30 us a task on Celery 5.7 (Context() recomputes the custom headers),
            # which was the whole success-path cost of interactive mode (make bench, issue 6).
            return interactive_call(self, self.run, args, kwargs)
        return interactive_call(self, super().__call__, args, kwargs)


@functools.lru_cache(maxsize=None)
def _next_call_is_celerys(cls: type) -> bool:
    """True unless a class after InteractiveTask in ``cls``'s MRO (a mixin) defines its own __call__,
    which must then still run."""
    mro = cls.__mro__
    for klass in mro[mro.index(InteractiveTask) + 1:]:
        if "__call__" in vars(klass):
            return vars(klass)["__call__"] is Task.__call__
    return False


def interactive_call(task: Task, call, args: tuple, kwargs: dict):
    """The interactive wrapper around one execution of ``task``'s body (``call``)."""
    request = task.request
    if request.called_directly or request.is_eager:
        return call(*args, **kwargs)
    header = our_header(request)
    if header is None or "fence" not in header:
        started = time.time()
        try:
            return call(*args, **kwargs)
        except PASS_THROUGH:
            raise
        except Exception as exc:
            _on_failure(task, exc, 1, started, header)
            raise
    return _operator_try(task, call, args, kwargs, header)


def _operator_try(task: Task, call, args: tuple, kwargs: dict, header: dict):
    request, store = task.request, store_for(task.app)
    try_no, fence, now = int(header["try"]), int(header["fence"]), time.time()
    params = flow_params(task, header.get("params"))
    delivery = request.delivery_info or {}
    verdict = store.start_try(
        request.id, try_no, fence, now=now, retries=request.retries or 0,
        redelivered=bool(delivery.get("redelivered") or getattr(request, "redelivered", False)),
        archive=params.archive_retries,
        try_record=incidents.try_record(try_no, worker=request.hostname, started_at=now, ended_at=None,
                                        outcome="running"))
    if verdict[0] == "fenced":
        # A duplicate or late copy of an operator-issued message: another copy owns this try.
        logger.info("interactive: dropping stale message for %s (try %s, incident %s)",
                    request.id, try_no, verdict[1])
        raise Ignore()
    if verdict[0] == "replay":
        return _replay(task, verdict)
    crash_point("try.started")
    try:
        result = call(*args, **kwargs)
    except PASS_THROUGH:
        raise
    except Exception as exc:
        _on_failure(task, exc, try_no, now, header)
        raise
    crash_point("try.finished")
    store.finish(request.id, try_no, fence, now=time.time(), try_record=incidents.try_record(
        try_no, worker=request.hostname, started_at=now, ended_at=time.time(), outcome="succeeded"))
    return result


def _replay(task: Task, verdict: list[str]):
    """End the flow inside Celery's tracer, so chains, chords, errbacks and signals all see it."""
    _, decision, exc_json, traceback_text, result_json = verdict
    logger.info("interactive: %s applied to %s", decision, task.request.id)
    if decision == "ignore":
        return json.loads(result_json) if result_json else None
    exc = incidents.rebuild_exception(exc_json)
    if traceback_text:
        exc.add_note(f"Original traceback (kept by interactive_celery):\n{traceback_text}")
    if decision == "timeout":
        exc.add_note("No operator decided before the deadline (interactive_celery timeout).")
    raise exc


def _on_failure(task: Task, exc: Exception, try_no: int, started: float, header: dict | None) -> None:
    """Park the failure if someone is online; return to let Celery fail it plainly otherwise."""
    params = flow_params(task, (header or {}).get("params"))
    if params.limit_minutes == 0 and try_no == 1:
        return  # never attended: no Redis at all
    settings, request = settings_for(task.app), task.request
    now = time.time()
    deadline = now + params.timeout_s
    exc_type = type(exc).__qualname__
    exc_message = incidents.clean_text(str(exc), settings.repr_max_chars)
    traceback_text = incidents.cap_traceback("".join(tb_module.format_exception(exc)),
                                             settings.traceback_max_bytes)
    args_shown, kwargs_shown = incidents.redact_call(
        request.args, request.kwargs, argsrepr=getattr(request, "argsrepr", None),
        kwargsrepr=getattr(request, "kwargsrepr", None), redact_keys=settings.redact_keys,
        max_chars=settings.repr_max_chars, celery_maxsize=task.app.amqp.argsrepr_maxsize,
        celery_maxlevels=task.app.conf.get("task_repr_maxlevels") or 3)
    subject, body = render_message(params, task_name=task.name, task_id=request.id, exc_type=exc_type,
                                   exc_message=exc_message, fail_count=try_no, worker=request.hostname,
                                   flower_url=settings.flower_url)
    delivery = request.delivery_info or {}
    fields = {
        "v": incidents.RECORD_VERSION, "id": request.id, "task": task.name, "worker": request.hostname or "",
        "exc_type": exc_type, "exc_message": exc_message, "args": args_shown, "kwargs": kwargs_shown,
        "queue": delivery.get("routing_key") or "", "addressed": json.dumps(list(params.operators)),
        "subject": subject, "body": body, "params": json.dumps((header or {}).get("params") or {}),
        "limit_minutes": params.limit_minutes, "fail_count": try_no, "host": socket.gethostname(),
    }
    record = incidents.try_record(try_no, worker=request.hostname, started_at=started, ended_at=now,
                                  outcome="failed", exc_type=exc_type, exc_message=exc_message,
                                  traceback=traceback_text)
    crash_point("park.before")
    try:
        status, detail = store_for(task.app).park(
            request.id, try_no, now=now, cutoff=now - params.limit_minutes * 60, deadline=deadline,
            fields=fields, try_record=record, message=_message(task, exc, header, (args_shown, kwargs_shown)),
            addressed=params.operators)
    except InteractiveError as err:
        # Never lose the failure because Redis is away: fail it the plain Celery way, loudly.
        logger.error("interactive: could not park %s[%s], failing it plainly: %s", task.name, request.id, err)
        return
    if status in ("unattended", "closed"):
        logger.info("interactive: %s[%s] failed with no operator online", task.name, request.id)
        return
    if status == "stale":
        logger.info("interactive: dropping a stale failure of %s (incident is %s)", request.id, detail)
        raise Ignore()
    crash_point("park.after")
    task.update_state(state=AWAITING_OPERATOR, meta=parked_meta({**fields, "try": try_no, "deadline": deadline}))
    task.send_event("task-awaiting_operator", incident=request.id, try_no=try_no, exc_type=exc_type,
                    exc_message=exc_message, deadline=deadline, subject=subject)
    logger.info("interactive: parked %s[%s] try %s (%s: %s); waiting for an operator until %s",
                task.name, request.id, try_no, exc_type, exc_message, incidents.iso(deadline))
    # Ignore makes the worker ack the message and store nothing more: the flow holds no worker
    # slot and no broker message while it waits, and AsyncResult.get() keeps waiting.
    raise Ignore()


def parked_meta(incident: dict) -> dict:
    """What ``AsyncResult.info`` shows while a flow waits for an operator."""
    return {"incident": incident["id"], "try": int(incident["try"]), "exc_type": incident["exc_type"],
            "exc_message": incident["exc_message"], "deadline": incidents.iso(incident["deadline"]),
            "operators": json.loads(incident.get("addressed") or "[]"), "subject": incident.get("subject", "")}


def _message(task: Task, exc: Exception, header: dict | None,
             shown: tuple[str, str] | None = None) -> dict[str, str]:
    """The private record needed to re-send this flow: never shown to operators. The traceback is
    not repeated here: the try record keeps it, and the scripts read it from there (2 KB less per
    incident with a 2 KB traceback; make bench, issue 6). ``shown`` is what operators see of the
    args and kwargs; the re-sent message carries it as its argsrepr/kwargsrepr."""
    request = task.request
    options = dict(task.signature_from_request(request, request.args, request.kwargs).options)
    # expires is absolute: an operator retry after it would be stored as REVOKED.
    for key in ("expires", "task_id", "retries", "countdown", "eta", "headers"):
        options.pop(key, None)
    # Without these, Celery would compute its default repr of the real arguments for the re-sent
    # message: a caller's explicit argsrepr would be lost, and the next try would show the secret.
    if shown is not None:
        options["argsrepr"], options["kwargsrepr"] = shown
    payload = {"task": task.name, "args": list(request.args or ()), "kwargs": dict(request.kwargs or {}),
               "options": options, "headers": custom_headers(request),
               "params": (header or {}).get("params") or {}}
    content_type, encoding, data = dumps(payload, serializer=task.serializer or task.app.conf.task_serializer)
    if isinstance(data, str):
        data = data.encode(encoding if encoding != "binary" else "utf-8")
    settings = settings_for(task.app)
    return {"v": str(incidents.RECORD_VERSION), "body": base64.b64encode(data).decode(),
            "content_type": content_type, "content_encoding": encoding,
            "exc": incidents.serialize_exception(exc, settings.repr_max_chars)}
