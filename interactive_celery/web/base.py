"""What every handler shares: who is asking, CSRF, security headers, and error responses.

Order of checks for every request: the Host header (loopback consoles), then the identity (401, or
the login form for pages), then, for a state-changing request from a browser-style identity
(session cookie, basic auth, ``--no-auth``), the CSRF token (403). Bearer-token calls are exempt.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import tornado.web

from .. import errors
from .auth import Identity

if TYPE_CHECKING:
    from .console import Console

SESSION_COOKIE = "interactive_session"
FLASH_COOKIE = "interactive_flash"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

_STATUS = ((errors.UnknownIncident, 404), (errors.BadInput, 400), (errors.DecisionRefused, 409),
           (errors.RedisUnavailable, 503), (errors.IncompatibleRedis, 503))


def status_for(exc: errors.InteractiveError) -> int:
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 500)


def error_body(exc: errors.InteractiveError) -> dict[str, Any]:
    """The CLI's ``--json`` error document (docs/json.md), so scripts handle both the same way."""
    detail: dict[str, Any] = {"code": exc.code, "message": str(exc)}
    if isinstance(exc, errors.AmbiguousIncident):
        detail["candidates"] = exc.candidates
    elif isinstance(exc, errors.AlreadyDecided):
        d = exc.existing_decision
        detail["existing_decision"] = {"decision": d.get("decision"), "decided_by": d.get("decided_by"),
                                       "decided_at": d.get("decided_at_iso"), "reason": d.get("reason") or ""}
    elif isinstance(exc, errors.NotAddressed):
        detail["addressed"] = exc.addressed
    return {"error": detail}


def http_error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class ApiError(tornado.web.HTTPError):
    """An operator API refusal on its way to the client, with its status and JSON body."""

    def __init__(self, exc: errors.InteractiveError):
        super().__init__(status_for(exc))
        self.error = exc


def incident_url(task_id: str) -> str:
    return "/incident/" + quote(task_id, safe="")


def _seconds_from_now(when: str | None) -> float | None:
    if not when:
        return None
    try:
        return (datetime.fromisoformat(when) - datetime.now(timezone.utc)).total_seconds()
    except ValueError:
        return None


def human(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(abs(seconds))
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            rest = (s % size) // subsize
            return f"{s // size}{unit} {rest}{sub}" if rest else f"{s // size}{unit}"
    return f"{s}s"


def when(iso_time: str | None) -> str:
    """``2024-06-01 14:03:07 UTC`` from the API's ISO times (the full value stays in a title)."""
    if not iso_time:
        return "–"
    try:
        return datetime.fromisoformat(iso_time).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return iso_time


def ago(when: str | None) -> str:
    delta = _seconds_from_now(when)
    return "–" if delta is None else human(-delta)


def left(when: str | None) -> str:
    delta = _seconds_from_now(when)
    return "–" if delta is None else ("due" if delta <= 0 else human(delta))


class BaseHandler(tornado.web.RequestHandler):
    #: API handlers answer with JSON (401 for a missing identity); pages send people to the login form.
    json_api = False
    identity: Identity | None = None

    @property
    def console(self) -> "Console":
        return self.application.settings["console"]

    @property
    def api(self):
        assert self.identity is not None
        return self.console.api_for(self.identity)

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")

    async def prepare(self) -> None:
        if not self.console.host_allowed(self.request.host_name):
            raise tornado.web.HTTPError(421, "this console does not answer to host %r", self.request.host_name)
        self.identity = await self.identify()
        if self.identity is None:
            if self.json_api or self.request.method not in SAFE_METHODS:
                raise tornado.web.HTTPError(401, "authentication required")
            self.redirect("/login?next=" + quote(self.request.uri or "/", safe=""))
            return
        if self.request.method not in SAFE_METHODS and self.identity.needs_csrf:
            self.check_xsrf_cookie()

    async def identify(self) -> Identity | None:
        """The identity from the Authorization header alone if there is one, else the session."""
        auth = self.console.auth
        header = self.request.headers.get("Authorization")
        if header:
            scheme, _, value = header.partition(" ")
            identity = None
            if scheme.lower() == "bearer":
                identity = auth.bearer(value)
            elif scheme.lower() == "basic":
                identity = await self.console.run(auth.basic, value)
            if identity is None:
                raise tornado.web.HTTPError(401, "invalid credentials")
            return identity
        if auth.no_auth:
            return auth.local
        cookie = self.get_signed_cookie(SESSION_COOKIE, max_age_days=self.console.session_days)
        return auth.from_session(cookie)

    async def call(self, fn, *args, **kwargs):
        """Run an operator API call in the console's threads; refusals become ApiError."""
        try:
            return await self.console.run(fn, *args, **kwargs)
        except errors.InteractiveError as exc:
            raise ApiError(exc) from None

    def require_writable(self) -> None:
        if self.console.read_only:
            raise tornado.web.HTTPError(403, "this console is read-only")

    # -- flash messages (one request to the next, in a signed cookie) -----------------------------

    def set_flash(self, kind: str, text: str) -> None:
        self.set_signed_cookie(FLASH_COOKIE, json.dumps({"kind": kind, "text": text}), expires_days=None,
                               httponly=True, samesite="Strict", secure=self.console.secure_cookies)

    def pop_flash(self) -> dict[str, str] | None:
        raw = self.get_signed_cookie(FLASH_COOKIE, max_age_days=0.01)
        if self.get_cookie(FLASH_COOKIE) is not None:
            self.clear_cookie(FLASH_COOKIE)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    # -- rendering --------------------------------------------------------------------------------

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(identity=self.identity, read_only=self.console.read_only, flash=None,
                         flower_url=self.console.flower_url, page="", incident_id="", position="",
                         incident_url=incident_url, ago=ago, left=left, human=human, when=when)
        return namespace

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        # Tornado's json_encode writes "</" as "<\/", so the JSON is safe even if sniffed as HTML.
        self.finish(tornado.escape.json_encode(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="interactive_celery"')
        if isinstance(exc, ApiError):
            body = error_body(exc.error)
        elif isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
            code = {400: "bad_input", 401: "unauthorized", 403: "forbidden", 421: "wrong_host"}
            body = http_error_body(code.get(status_code, "http_error"), message)
        else:
            body = http_error_body("http_error", self._reason)
        if self.json_api:
            self.write_json(body, status_code)
        else:
            self.render("error.html", status=status_code, message=body["error"]["message"], error=body["error"])
