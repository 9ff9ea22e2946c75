"""The JSON API under ``/api``, mirroring the pages (see docs/web.md).

Bodies are the operator API's own ``--json`` shapes. Errors are ``{"error": code, "message": ...}``
plus the refusal's data, e.g. ``existing_decision`` when a decision lost a race (409).
"""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from ..incidents import iso
from .base import BaseHandler, http_error_body
from .pages import REASON_MAX_CHARS

MAX_LIMIT = 500
MAX_WAIT_S = 30.0


class ApiHandler(BaseHandler):
    json_api = True

    def int_argument(self, name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
        raw = self.get_argument(name, None)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            raise tornado.web.HTTPError(400, "%s must be an integer", name) from None
        return max(low, value if high is None else min(high, value))

    def float_argument(self, name: str) -> float | None:
        raw = self.get_argument(name, None)
        try:
            return None if raw in (None, "") else float(raw)
        except ValueError:
            raise tornado.web.HTTPError(400, "%s must be a number (unix seconds)", name) from None

    def body(self) -> dict[str, Any]:
        """A JSON object body, or form fields for clients that post forms."""
        if not self.request.body:
            return {}
        if self.request.headers.get("Content-Type", "").split(";")[0].strip() == "application/json":
            try:
                data = json.loads(self.request.body)
            except ValueError:
                raise tornado.web.HTTPError(400, "the body is not valid JSON") from None
            if not isinstance(data, dict):
                raise tornado.web.HTTPError(400, "the body must be a JSON object")
            return data
        return {k: self.get_body_argument(k) for k in self.request.body_arguments}


class MeHandler(ApiHandler):
    def get(self) -> None:
        self.write_json({"operator": self.identity.operator, "groups": list(self.identity.groups),
                         "via": self.identity.via, "read_only": self.console.read_only,
                         "flower_url": self.console.flower_url})


class IncidentsHandler(ApiHandler):
    async def get(self) -> None:
        state = self.get_argument("state", "open")
        limit = self.int_argument("limit", 50, low=1, high=MAX_LIMIT)
        offset = self.int_argument("offset", 0)
        mine = self.get_argument("mine", "") in ("1", "true", "yes")
        rows = await self.call(self.api.incidents, state, limit=limit, offset=offset, everyone=not mine)
        self.write_json({"state": state, "everyone": not mine, "count": len(rows), "limit": limit,
                         "offset": offset, "incidents": rows})


class IncidentHandler(ApiHandler):
    async def get(self, ref: str) -> None:
        self.write_json(await self.call(self.api.incident, ref))


class HistoryHandler(ApiHandler):
    async def get(self, ref: str) -> None:
        task_id = await self.call(self.api.resolve_id, ref)
        self.write_json({"id": task_id, "tries": await self.call(self.api.history, task_id)})


class DecideHandler(ApiHandler):
    """``POST /api/incidents/<id>/(retry|fail|ignore)`` with ``{"reason", "result", "wait"}``."""

    async def post(self, ref: str, decision: str) -> None:
        if self.console.read_only:
            self.write_json(http_error_body("read_only", "this console is read-only"), 403)
            return
        body = self.body()
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise tornado.web.HTTPError(400, "reason must be a string")
        wait = body.get("wait", self.console.decision_wait_s)
        try:
            wait = min(MAX_WAIT_S, max(0.0, float(wait)))
        except (TypeError, ValueError):
            raise tornado.web.HTTPError(400, "wait must be a number of seconds") from None
        result = body.get("result")
        if decision != "ignore" and result is not None:
            raise tornado.web.HTTPError(400, "only ignore takes a result")
        outcome = await self.call(self.api.decide, ref, decision, reason=(reason or "")[:REASON_MAX_CHARS] or None,
                                  wait=wait, result=result)
        self.write_json(outcome.to_json())


class OperatorsHandler(ApiHandler):
    async def get(self) -> None:
        self.write_json({"operators": await self.call(self.api.operators)})


class AuditHandler(ApiHandler):
    async def get(self) -> None:
        since = self.float_argument("since")
        until = self.float_argument("until")
        decisions = await self.call(self.api.audit, since or 0.0, until)
        self.write_json({"since": iso(since) if since else None, "decisions": decisions})
