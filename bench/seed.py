"""Seed open incidents through the store's park script, as a worker's failure would, but in bulk.

Records are built with the same helpers ``task.py`` uses on a real failure (redaction, the operator
message, the try record and the private re-send record), so their size and shape are a real park's.
Only the traceback is made up: exactly ``traceback_bytes`` long.
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import Callable

from interactive_celery import incidents, task as task_module
from interactive_celery.config import settings_for
from interactive_celery.store import Store
from interactive_celery.templates import render_message

FRAME = ('  File "/srv/billing/tasks/import_invoices.py", line {n}, in fetch_statement\n'
         '    response = partner.download(account, period, timeout=30)\n')


def fake_traceback(size: int) -> str:
    """A plausible traceback of exactly ``size`` bytes (ASCII)."""
    head = "Traceback (most recent call last):\n"
    tail = "bench.app.BenchFailure: partner API is down for maintenance\n"
    body, n = "", 1
    while len(head) + len(body) + len(tail) < size:
        body += FRAME.format(n=n)
        n += 1
    text = head + body[: size - len(head) - len(tail)] + tail
    assert len(text.encode()) == size
    return text


class Seeder:
    """Builds one incident's records once, then parks copies of it under fresh task ids."""

    def __init__(self, app, store: Store, *, traceback_bytes: int = 2048, task_name: str = "bench.replay_target"):
        self.app = app
        self.store = store
        self.settings = settings_for(app)
        self.task = app.tasks[task_name]
        self.traceback = incidents.cap_traceback(fake_traceback(traceback_bytes), self.settings.traceback_max_bytes)
        from bench.app import BenchFailure

        self.exc = BenchFailure("partner API is down for maintenance")

    def parts(self, task_id: str, now: float) -> tuple[dict, dict, dict]:
        """(incident fields, try record, private message), as ``task._on_failure`` builds them."""
        s, task, exc = self.settings, self.task, self.exc
        args, kwargs = ("invoices/2026-05/acme-00042.csv",), {"account": "acme", "api_token": "s3cr3t"}
        task.push_request(id=task_id, args=args, kwargs=kwargs, hostname="seed@bench", called_directly=False,
                          delivery_info={"routing_key": self.app.conf.task_default_queue, "exchange": ""},
                          reply_to=str(uuid.uuid4()), correlation_id=task_id, retries=0)
        try:
            request = task.request
            exc_type, exc_message = type(exc).__qualname__, incidents.clean_text(str(exc), s.repr_max_chars)
            args_shown, kwargs_shown = incidents.redact_call(
                request.args, request.kwargs, argsrepr=None, kwargsrepr=None, redact_keys=s.redact_keys,
                max_chars=s.repr_max_chars)
            params = task_module.flow_params(task)
            subject, body = render_message(params, task_name=task.name, task_id=task_id, exc_type=exc_type,
                                           exc_message=exc_message, fail_count=1, worker=request.hostname,
                                           flower_url=s.flower_url)
            fields = {
                "v": incidents.RECORD_VERSION, "id": task_id, "task": task.name, "worker": request.hostname,
                "exc_type": exc_type, "exc_message": exc_message, "args": args_shown, "kwargs": kwargs_shown,
                "queue": request.delivery_info["routing_key"], "addressed": "[]", "subject": subject,
                "body": body, "params": "{}", "limit_minutes": params.limit_minutes, "fail_count": 1,
                "host": socket.gethostname(),
            }
            record = incidents.try_record(1, worker=request.hostname, started_at=now - 0.01, ended_at=now,
                                          outcome="failed", exc_type=exc_type, exc_message=exc_message,
                                          traceback=self.traceback)
            message = task_module._message(task, exc, None, (args_shown, kwargs_shown))
        finally:
            task.pop_request()
        return fields, record, message

    def seed(self, n: int, deadline_of: Callable[[int, float], float], *, batch: int = 500) -> list[str]:
        """Park ``n`` incidents (an operator must be online); ``deadline_of(i, now)`` gives each one's
        decision deadline. Returns their task ids in seeding order."""
        ids = [str(uuid.uuid4()) for _ in range(n)]
        template = None
        for start in range(0, n, batch):
            pipe = self.store.client.pipeline(transaction=False)
            now = time.time()
            for i in range(start, min(n, start + batch)):
                task_id = ids[i]
                if template is None:
                    template = self.parts(task_id, now)
                fields, record, message = _renamed(template, task_id, now)
                self.store.park(task_id, 1, now=now, cutoff=now - 1800, deadline=deadline_of(i, now),
                                fields=fields, try_record=record, message=message, addressed=(), client=pipe)
            for reply in pipe.execute():
                status = self.store.park_status(reply)[0]
                if status != "parked":
                    raise RuntimeError(f"seeding failed: park replied {status!r} (is an operator online?)")
        return ids


def _renamed(template: tuple[dict, dict, dict], task_id: str, now: float) -> tuple[dict, dict, dict]:
    """The template's records under another task id: the id appears in the fields and the subject."""
    fields, record, message = template
    old = fields["id"]
    fields = {k: (v.replace(old, task_id) if isinstance(v, str) else v) for k, v in fields.items()}
    record = dict(record, started_at=now - 0.01, ended_at=now)
    return fields, record, dict(message)  # the private record holds no task id of its own
