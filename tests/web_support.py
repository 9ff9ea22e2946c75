"""Shared pieces of the web console tests: credentials, a failing task, a cookie-keeping client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import re
import threading
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from tornado.testing import AsyncHTTPTestCase

from interactive_celery import InteractiveTask
from interactive_celery.keys import Keys
from interactive_celery.web.passwords import hash_password
from interactive_celery.web.server import build_console, make_application, start
from tests.conftest import cleanup, make_app

ALICE_TOKEN = "alice-token-0123456789abcdef"
BOB_TOKEN = "bob-token-0123456789abcdef"
CAROL_PASSWORD = "carol's passphrase"
CAROL_HASH = hash_password(CAROL_PASSWORD)
WEB_CONF = {
    "interactive_web_tokens": {ALICE_TOKEN: "alice", BOB_TOKEN: {"operator": "bob", "groups": ["ops"]}},
    "interactive_web_users": {"carol": CAROL_HASH},
}


class PartnerDown(Exception):
    pass


def failing_task(app, state: dict):
    """A task that fails with ``message`` until ``state["fixed"]`` is set."""

    @app.task(base=InteractiveTask, name=f"{app.main}.sync_partner")
    def sync_partner(batch, message="partner API is down"):
        state["runs"] = state.get("runs", 0) + 1
        if not state.get("fixed"):
            raise PartnerDown(message)
        return f"synced {batch}"

    return sync_partner


_XSRF_FIELD = re.compile(r'name="_xsrf" value="([^"]+)"')


def xsrf_from(html: str) -> str:
    found = _XSRF_FIELD.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


class Browser:
    """Keeps cookies across ``AsyncHTTPTestCase.fetch`` calls, like a browser would."""

    def __init__(self, case):
        self.case = case
        self.cookies: dict[str, str] = {}

    def fetch(self, path: str, *, method: str = "GET", form: dict | None = None, headers: dict | None = None):
        all_headers = dict(headers or {})
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = urlencode(form or {}) if method == "POST" else None
        response = self.case.fetch(path, method=method, body=body, headers=all_headers, follow_redirects=False,
                                   raise_error=False)
        for header in response.headers.get_list("Set-Cookie"):
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel.value and morsel["expires"] != "Thu, 01 Jan 1970 00:00:00 GMT" and morsel["max-age"] != "0":
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return response

    def login(self, username: str = "carol", password: str = CAROL_PASSWORD):
        page = self.fetch("/login")
        return self.fetch("/login", method="POST", form={
            "_xsrf": xsrf_from(page.body.decode()), "username": username, "password": password, "next": "/"})


@contextlib.contextmanager
def console_in_thread(app, **options):
    """A real console on a free loopback port, served by its own event loop in a thread."""
    started: queue.Queue = queue.Queue()

    def run() -> None:
        async def main() -> None:
            try:
                running = await start(app, "127.0.0.1", 0, **options)
            except BaseException as exc:
                started.put(exc)
                return
            stop = asyncio.Event()
            started.put((running, asyncio.get_running_loop(), stop))
            await stop.wait()
            await running.stop()

        asyncio.run(main())

    thread = threading.Thread(target=run, name="web-console", daemon=True)
    thread.start()
    got = started.get(timeout=30)
    if isinstance(got, BaseException):
        raise got
    running, loop, stop = got
    try:
        yield running
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)


class WebCase(AsyncHTTPTestCase):
    """A console over a per-test Celery app (own key prefix and queue) on the session's real Redis."""

    no_auth = False
    read_only = False
    conf: dict = {}

    @pytest.fixture(autouse=True)
    def _celery_app(self, redis_url, rclient):
        # pytest fills fixtures before unittest's setUp, which calls get_app().
        self.celery = make_app(redis_url, **WEB_CONF, **self.conf)
        self.rclient = rclient
        self.keys = Keys(self.celery.conf.interactive_key_prefix)
        yield
        cleanup(self.celery, rclient)

    def get_app(self):
        self.console = build_console(self.celery, no_auth=self.no_auth, read_only=self.read_only)
        return make_application(self.console)

    def tearDown(self):
        self.console.close()
        super().tearDown()

    def api_get(self, path: str, token: str = ALICE_TOKEN):
        response = self.fetch(path, headers={"Authorization": f"Bearer {token}"}, raise_error=False)
        return response, (json.loads(response.body) if response.body else None)

    def api_post(self, path: str, body: dict | None = None, token: str = ALICE_TOKEN):
        response = self.fetch(path, method="POST", body=json.dumps(body or {}), raise_error=False,
                              headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        return response, (json.loads(response.body) if response.body else None)
