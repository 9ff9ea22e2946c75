"""The web operator console: a thin Tornado layer over :class:`interactive_celery.OperatorAPI`.

``serve(app, address, port, ...)`` runs it; ``web.command.web_command`` is the click command for
``celery -A proj interactive web``. See docs/web.md.
"""

from .server import Running, make_application, serve, start

__all__ = ["Running", "make_application", "serve", "start"]
