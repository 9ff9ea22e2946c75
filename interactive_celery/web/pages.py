"""HTML pages. Every value reaches the page through Tornado's autoescaping templates; the parts
that live updates refresh (``/partials/...``) are rendered by the very same templates."""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from .. import errors
from ..api import DecisionResult
from .base import SESSION_COOKIE, ApiError, BaseHandler, incident_url, when

REASON_MAX_CHARS = 1000


def parse_result(text: str) -> Any:
    """The optional JSON result of an ``ignore``; empty means None."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise errors.BadInput(f"the result must be JSON (for text, quote it): {exc}") from None


def describe(outcome: DecisionResult) -> str:
    done = f"{outcome.decision.capitalize()} recorded by {outcome.operator}"
    if outcome.applied:
        return f"{done}; applied by {outcome.applied_by} (now {outcome.state})."
    return f"{done}; not applied yet: no worker has picked it up. It is applied as soon as one runs."


def describe_refusal(exc: errors.DecisionRefused) -> str:
    if isinstance(exc, errors.AlreadyDecided):
        d = exc.existing_decision
        reason = f" (“{d['reason']}”)" if d.get("reason") else ""
        return (f"Too late: this incident was already decided — {d.get('decision')} by "
                f"{d.get('decided_by') or '?'} at {when(d.get('decided_at_iso'))}{reason}.")
    return str(exc)


def audit_trail(tries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What happened to a flow, oldest first, from its try history (which keeps every decision)."""
    events = []
    for t in tries:
        number = t.get("try")
        if t.get("started_at"):
            events.append({"at": t["started_at"], "what": f"try {number} started", "who": t.get("worker") or "",
                           "detail": ""})
        if t.get("ended_at") and t.get("outcome") not in (None, "running"):
            detail = f"{t.get('exc_type')}: {t.get('exc_message')}" if t.get("exc_type") else ""
            events.append({"at": t["ended_at"], "what": f"try {number} {t['outcome']}", "who": t.get("worker") or "",
                           "detail": detail})
        if t.get("decision"):
            who = t.get("decided_by") or ""
            if t.get("decided_host"):
                who = f"{who} ({t['decided_host']})"
            events.append({"at": t.get("decided_at") or "", "what": f"decision: {t['decision']}", "who": who,
                           "detail": t.get("reason") or ""})
    return sorted(events, key=lambda e: e["at"] or "")


def safe_next(target: str | None) -> str:
    """Only a local path: never another site, and never a scheme-relative ``//host`` URL."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


class ListPage(BaseHandler):
    """``/``: open incidents, and decided ones a worker is still applying."""

    def initialize(self, partial: bool = False) -> None:
        self.partial = partial

    async def get(self) -> None:
        api = self.api

        def load():
            # The stream position first: the page's event stream resumes from it, so a change made
            # while this page loads still reaches it.
            position = api.stream_position()
            return position, api.incidents("open", limit=200), api.incidents("active", limit=200)

        position, open_, active = await self.call(load)
        if self.partial:
            self.render("_rows.html", open=open_, active=active)
        else:
            self.render("list.html", open=open_, active=active, page="list", flash=self.pop_flash(),
                        position=position)


class DetailPage(BaseHandler):
    """``/incident/<id or unique prefix>``."""

    def initialize(self, partial: bool = False) -> None:
        self.partial = partial

    async def get(self, ref: str) -> None:
        api = self.api

        def load():
            return api.stream_position(), api.incident(ref)

        position, incident = await self.call(load)
        trail = audit_trail(incident.get("tries") or [])
        if self.partial:
            self.render("_incident.html", incident=incident, trail=trail)
        else:
            self.render("detail.html", incident=incident, trail=trail, page="detail", incident_id=incident["id"],
                        flash=self.pop_flash(), position=position)


class DecidePage(BaseHandler):
    """``POST /incident/<id>/(retry|fail|ignore)``: confirm first, then decide and show the outcome.

    The page script confirms in a dialog and sends ``confirm=yes``; without it (no script) the
    answer is a confirmation page. A decision that lost a race is shown as who won it.
    """

    async def post(self, ref: str, decision: str) -> None:
        self.require_writable()
        reason = self.get_body_argument("reason", "").strip()[:REASON_MAX_CHARS]
        result_text = self.get_body_argument("result", "")
        if self.get_body_argument("confirm", "") != "yes":
            incident = await self.call(self.api.incident, ref)
            self.render("confirm.html", incident=incident, decision=decision, reason=reason,
                        result=result_text)
            return
        target = ref
        try:
            result = parse_result(result_text) if decision == "ignore" else None
            outcome = await self.console.run(self.api.decide, ref, decision, reason=reason or None,
                                             wait=self.console.decision_wait_s, result=result)
        except errors.DecisionRefused as exc:
            target = exc.incident_id
            self.set_flash("lost" if isinstance(exc, errors.AlreadyDecided) else "refused",
                           describe_refusal(exc))
        except (errors.UnknownIncident, errors.AmbiguousIncident) as exc:
            raise ApiError(exc) from None
        except errors.BadInput as exc:
            self.set_flash("refused", str(exc))
        except errors.InteractiveError as exc:
            raise ApiError(exc) from None
        else:
            target = outcome.id
            self.set_flash("ok" if outcome.applied else "pending", describe(outcome))
        self.redirect(incident_url(target), status=303)


class OperatorsPage(BaseHandler):
    async def get(self) -> None:
        operators = await self.call(self.api.operators)
        self.render("operators.html", operators=operators, page="operators")


class HistoryPage(BaseHandler):
    """``/history``: resolved incidents, newest first, and a search by task id or prefix."""

    PAGE = 50

    async def get(self) -> None:
        query = self.get_argument("q", "").strip()
        error, candidates = None, []
        if query:
            try:
                task_id = await self.console.run(self.api.resolve_id, query)
            except errors.AmbiguousIncident as exc:
                error, candidates = str(exc), exc.candidates
            except errors.BadInput as exc:
                error = str(exc)
            else:
                self.redirect(incident_url(task_id))
                return
        try:
            offset = max(0, int(self.get_argument("offset", "0")))
        except ValueError:
            offset = 0
        rows = await self.call(self.api.incidents, "resolved", limit=self.PAGE, offset=offset)
        self.render("history.html", rows=rows, query=query, error=error, candidates=candidates,
                    offset=offset, page_size=self.PAGE, page="history")


class LoginPage(BaseHandler):
    """Sign in with a user name and password, or with an API token, for a session cookie."""

    async def prepare(self) -> None:
        if not self.console.host_allowed(self.request.host_name):
            raise tornado.web.HTTPError(421, "this console does not answer to host %r", self.request.host_name)
        if self.request.method == "POST":
            self.check_xsrf_cookie()  # login CSRF: nobody may sign a browser in as someone else

    def get(self) -> None:
        if self.console.auth.no_auth:
            self.redirect("/")
            return
        self.render("login.html", error=None, next=safe_next(self.get_argument("next", "/")), username="",
                    page="login")

    async def post(self) -> None:
        auth = self.console.auth
        username = self.get_body_argument("username", "").strip()
        token = self.get_body_argument("token", "").strip()
        target = safe_next(self.get_body_argument("next", "/"))
        if token:
            identity = auth.bearer(token)
            value = auth.session_for(identity, token=token) if identity else None
        else:
            identity = await self.console.run(auth.password, username, self.get_body_argument("password", ""),
                                              "session")
            value = auth.session_for(identity) if identity else None
        if value is None:
            self.set_status(401)
            self.render("login.html", error="Wrong user name, password or token.", next=target,
                        username=username, page="login")
            return
        self.set_signed_cookie(SESSION_COOKIE, value, expires_days=self.console.session_days, httponly=True,
                               samesite="Lax", secure=self.console.secure_cookies)
        self.redirect(target, status=303)


class LogoutHandler(BaseHandler):
    def post(self) -> None:
        self.clear_cookie(SESSION_COOKIE)
        self.redirect("/login", status=303)
