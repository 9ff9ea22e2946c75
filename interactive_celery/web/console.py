"""The console's shared state: the app, the credentials, one operator API per identity, and the
thread pool that runs the (blocking) operator API off Tornado's event loop."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

from ..api import OperatorAPI
from ..config import settings_for
from ..store import store_for
from .auth import Auth, Identity

T = TypeVar("T")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(address: str) -> bool:
    if address in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


class ViewerAPI(OperatorAPI):
    """The operator API of a ``--read-only`` console.

    A read-only page is a wallboard: someone looking at it cannot press Retry, so it must not make
    failures park and wait for them. Viewing therefore never counts as presence.
    """

    def heartbeat(self) -> int:
        return 0


class Console:
    def __init__(self, app, *, auth: Auth, read_only: bool = False,
                 allowed_hosts: Iterable[str] | None = None, decision_wait_s: float = 3.0,
                 session_hours: float = 12.0, secure_cookies: bool = False, max_threads: int = 16):
        self.app = app
        self.settings = settings_for(app)  # validates the app's interactive_* configuration once
        self.store = store_for(app)
        self.auth = auth
        self.read_only = read_only
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None
        self.decision_wait_s = decision_wait_s
        self.session_days = session_hours / 24.0
        self.secure_cookies = secure_cookies
        flower = self.settings.flower_url or ""
        self.flower_url = flower.rstrip("/") if flower.startswith(("http://", "https://")) else None
        limit_s = self.settings.flow.limit_minutes * 60
        # An open page heartbeats often enough that its operator never drops out of presence.
        # Often enough for tasks whose own limit is shorter than the app-wide one.
        self.presence_interval_s = min(5.0, max(1.0, limit_s / 3)) if limit_s else 5.0
        self.executor = ThreadPoolExecutor(max_threads, thread_name_prefix="interactive-web")
        self._apis: dict[tuple[str, tuple[str, ...]], OperatorAPI] = {}
        from .live import StreamHub  # live imports the handlers' base, which imports this module

        self.hub = StreamHub(self)

    def api_for(self, identity: Identity) -> OperatorAPI:
        key = (identity.operator, identity.groups)
        api = self._apis.get(key)
        if api is None:
            cls = ViewerAPI if self.read_only else OperatorAPI
            api = cls(self.app, identity.operator, identity.groups, store=self.store)
            api.host = f"{api.host} (web)"
            self._apis[key] = api
        return api

    def reader(self) -> OperatorAPI:
        """An API used only to follow the stream, which is nobody's activity."""
        return ViewerAPI(self.app, "interactive-web", (), store=self.store)

    def host_allowed(self, host_name: str) -> bool:
        # On loopback this stops DNS rebinding: a hostile page whose name resolves to 127.0.0.1
        # would otherwise be same-origin with the console.
        return self.allowed_hosts is None or host_name.lower() in self.allowed_hosts

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.hub.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
