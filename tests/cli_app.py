"""A Celery app for the CLI subprocess tests: ``celery -A tests.cli_app interactive …``.

It is configured from the environment so that a subprocess shares Redis, key prefix and queue with
the test's own app (tests/conftest.py ``make_app``):
``REDIS_URL``, ``INTERACTIVE_TEST_PREFIX`` and optionally ``INTERACTIVE_TEST_RESULT_BACKEND``.
It also defines the one task the tests park, so a worker built from this module can run it.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

from interactive_celery import InteractiveTask


class FileMissing(Exception):
    """The input file has not arrived yet: the kind of failure an operator fixes, then retries."""


def configure(app: Celery, prefix: str) -> Celery:
    """The test configuration shared by this module and tests/conftest.py ``make_app``."""
    app.conf.update(
        interactive_key_prefix=prefix,
        task_default_queue=f"q-{prefix}",
        result_expires=3600,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        interactive_sweep_interval_seconds=0.2,
        interactive_replay_fallback_seconds=5,
    )
    return app


def add_tasks(app: Celery):
    """``import_file(path)`` fails until ``path`` exists, then returns the file's text."""

    # shared=False: Celery would otherwise attach the task to every app created afterwards.
    @app.task(base=InteractiveTask, name="cli_app.import_file", shared=False)
    def import_file(path: str, api_key: str | None = None) -> str:
        file = Path(path)
        if not file.exists():
            raise FileMissing(f"{path} has not arrived")
        return file.read_text()

    return import_file


_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
app = configure(Celery("cli_app", broker=_url,
                       backend=os.environ.get("INTERACTIVE_TEST_RESULT_BACKEND") or _url),
                os.environ.get("INTERACTIVE_TEST_PREFIX", "cli_app"))
import_file = add_tasks(app)
