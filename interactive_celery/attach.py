"""Dynamic attachment: interactive mode for one call of any registered task.

``interactive(sig, interactive_limit_minutes=5)`` returns a copy of the signature that carries our
header with the per-call parameters. Workers of an app that called :func:`interactive_celery.install`
honour it on plain tasks too. The parameters are stored with the incident and re-attached on every
re-send, so they survive retries on every Celery version.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.canvas import Signature

from .config import keyword_params
from .errors import ConfigurationError
from .task import HEADER, InteractiveTask, interactive_call, our_header


def interactive(sig: Signature, **params: Any) -> Signature:
    """A copy of ``sig`` whose call runs in interactive mode with these parameters.

    Keywords are the task decorator's: ``interactive_limit_minutes``, ``archive_retries``,
    ``decision_timeout_minutes``, ``interactive_operators``, ``interactive_subject``,
    ``interactive_body``, ``interactive_context``.
    """
    if not isinstance(sig, Signature):
        raise ConfigurationError(f"interactive() takes a signature (task.s(...)), not {type(sig).__name__}")
    fields = keyword_params(params, f"interactive({sig.task})")  # validated now, in the caller
    copy = sig.clone()
    headers = dict(copy.options.get("headers") or {})
    headers[HEADER] = {"v": 1, "params": fields}
    copy.set(headers=headers)
    return copy


def _plain_call(self: Task, *args, **kwargs):
    # Without our header a plain task runs exactly as before: one attribute lookup, no Redis.
    if our_header(self.request) is None:
        return Task.__call__(self, *args, **kwargs)
    return interactive_call(self, lambda *a, **kw: Task.__call__(self, *a, **kw), args, kwargs)


def enable_plain_tasks(app) -> None:
    """Let every plain task of ``app`` honour a per-call ``interactive(...)`` header.

    Celery builds each task's tracer from its class: a class that defines ``__call__`` is called
    through it (``task_has_custom``), so we set it on the task's own class, which ``app.task``
    creates per task. Celery's built-in tasks are left alone.
    """
    for task in app.tasks.values():
        cls = type(task)
        if isinstance(task, InteractiveTask) or task.name.startswith("celery.") or "__call__" in cls.__dict__:
            continue
        cls.__call__ = _plain_call
