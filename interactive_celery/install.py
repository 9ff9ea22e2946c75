"""Opting an app in: the worker bootstep that applies decisions and sweeps deadlines."""

from __future__ import annotations

from celery import signals


def install(app) -> None:
    """Give ``app``'s workers the interactive bootstep. Idempotent.

    Apps with a ``base=InteractiveTask`` task get it automatically when a worker starts; call this
    when you only use :func:`interactive_celery.interactive` on plain tasks, or to be explicit.
    """
    from .worker import InteractiveStep

    app.steps["worker"].add(InteractiveStep)


@signals.worker_init.connect
def _auto_install(sender=None, **_kwargs) -> None:
    # worker_init fires before the worker builds its blueprint from app.steps["worker"].
    from .task import InteractiveTask

    app = getattr(sender, "app", None)
    if app is not None and any(isinstance(t, InteractiveTask) for t in app.tasks.values()):
        install(app)
