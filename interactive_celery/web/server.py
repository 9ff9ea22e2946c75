"""Routes, the Tornado application, and running it: :func:`serve` blocks, :func:`start` does not."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import tornado.httpserver
import tornado.netutil
import tornado.web

from ..errors import ConfigurationError
from .auth import Auth
from .base import BaseHandler
from .console import LOOPBACK_NAMES, Console, is_loopback
from .jsonapi import (AuditHandler, DecideHandler, HistoryHandler, IncidentHandler, IncidentsHandler, MeHandler,
                      OperatorsHandler)
from .live import EventsHandler
from .pages import DecidePage, DetailPage, HistoryPage, ListPage, LoginPage, LogoutHandler, OperatorsPage

HERE = Path(__file__).parent
ID = r"([^/]+)"
DECISION = r"(retry|fail|ignore)"


class NotFound(BaseHandler):
    def prepare(self):  # type: ignore[override]
        raise tornado.web.HTTPError(404, "no such page")


def routes() -> list:
    return [
        (r"/", ListPage),
        (r"/partials/incidents", ListPage, {"partial": True}),
        (rf"/incident/{ID}", DetailPage),
        (rf"/partials/incident/{ID}", DetailPage, {"partial": True}),
        (rf"/incident/{ID}/{DECISION}", DecidePage),
        (r"/operators", OperatorsPage),
        (r"/history", HistoryPage),
        (r"/login", LoginPage),
        (r"/logout", LogoutHandler),
        (r"/events", EventsHandler),
        (r"/api/events", EventsHandler),
        (r"/api/me", MeHandler),
        (r"/api/incidents", IncidentsHandler),
        (rf"/api/incidents/{ID}", IncidentHandler),
        (rf"/api/incidents/{ID}/history", HistoryHandler),
        (rf"/api/incidents/{ID}/{DECISION}", DecideHandler),
        (r"/api/operators", OperatorsHandler),
        (r"/api/audit", AuditHandler),
    ]


def make_application(console: Console, *, cookie_secret: str | None = None) -> tornado.web.Application:
    return tornado.web.Application(
        routes(), console=console, default_handler_class=NotFound,
        template_path=str(HERE / "templates"), static_path=str(HERE / "static"),
        # Without a configured secret, sessions last until the console restarts.
        cookie_secret=cookie_secret or secrets.token_urlsafe(32),
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Lax", "secure": console.secure_cookies},
    )


def build_console(app, *, address: str = "127.0.0.1", no_auth: bool = False, read_only: bool = False,
                  allowed_hosts: Iterable[str] | None = None, secure_cookies: bool = False,
                  environ: Mapping[str, str] = os.environ) -> Console:
    """Check the security options against the address, load the credentials, build the console."""
    loopback = is_loopback(address)
    if no_auth and not loopback:
        raise ConfigurationError(f"--no-auth is only allowed on a loopback address, not {address!r}")
    auth = Auth.from_app(app, no_auth=no_auth, environ=environ)
    if not no_auth and not auth.configured:
        raise ConfigurationError(
            "the web console needs credentials: set interactive_web_tokens (or a tokens file in "
            "$INTERACTIVE_WEB_TOKENS_FILE) or interactive_web_users, or pass --no-auth on loopback")
    hosts = list(allowed_hosts or app.conf.get("interactive_web_allowed_hosts") or [])
    if not hosts and loopback:
        hosts = list(LOOPBACK_NAMES)
        if address not in hosts:
            hosts.append(address)
    return Console(app, auth=auth, read_only=read_only, allowed_hosts=hosts or None,
                   session_hours=float(app.conf.get("interactive_web_session_hours") or 12),
                   secure_cookies=secure_cookies or bool(app.conf.get("interactive_web_secure_cookies")))


@dataclass
class Running:
    """A started console; ``await stop()`` ends it."""

    console: Console
    server: tornado.httpserver.HTTPServer
    address: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def stop(self) -> None:
        self.server.stop()
        self.console.close()
        await self.server.close_all_connections()


async def start(app, address: str = "127.0.0.1", port: int = 5556, *, no_auth: bool = False,
                read_only: bool = False, certfile: str | None = None, keyfile: str | None = None,
                allowed_hosts: Iterable[str] | None = None) -> Running:
    """Listen on ``address:port`` (0 picks a free port) in the running event loop."""
    if keyfile and not certfile:
        raise ConfigurationError("--keyfile needs --certfile")
    console = build_console(app, address=address, no_auth=no_auth, read_only=read_only,
                            allowed_hosts=allowed_hosts, secure_cookies=bool(certfile))
    try:
        await console.run(console.reader().stream_position)  # Redis reachable? Fail now, not per page.
        ssl_context = None
        if certfile:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(certfile, keyfile)
        application = make_application(console, cookie_secret=app.conf.get("interactive_web_cookie_secret"))
        sockets = tornado.netutil.bind_sockets(port, address)
    except BaseException:
        console.close()
        raise
    server = tornado.httpserver.HTTPServer(application, ssl_options=ssl_context)
    server.add_sockets(sockets)
    return Running(console, server, address, sockets[0].getsockname()[1], tls=ssl_context is not None)


def serve(app, address: str = "127.0.0.1", port: int = 5556, *, no_auth: bool = False, read_only: bool = False,
          certfile: str | None = None, keyfile: str | None = None,
          allowed_hosts: Iterable[str] | None = None) -> None:
    """Serve the operator console until SIGINT or SIGTERM."""

    async def main() -> None:
        running = await start(app, address, port, no_auth=no_auth, read_only=read_only, certfile=certfile,
                              keyfile=keyfile, allowed_hosts=allowed_hosts)
        mode = "no auth (loopback)" if no_auth else "auth required"
        print(f"interactive web console on {running.url}/ ({mode}{', read-only' if read_only else ''})",
              file=sys.stderr, flush=True)
        if not running.tls and not is_loopback(address):
            print("warning: serving plain HTTP on a non-loopback address; put TLS in front of it "
                  "(or pass --certfile/--keyfile)", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or not POSIX
                pass
        try:
            await stop.wait()
        finally:
            await running.stop()

    asyncio.run(main())
