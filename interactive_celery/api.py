"""The operator API: what the CLI, the web console and users' scripts call.

Operators decide; workers apply. A decision is one compare-and-set in Redis; the call can then wait
a bounded time to see a worker apply it. Every call counts as the operator's activity.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
import time
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from . import errors
from .config import keyword_params, settings_for
from .incidents import escape_controls, implied_decision, incident_view, iso, tries_view, with_timeout
from .store import Store, store_for

logger = logging.getLogger("interactive_celery")

MIN_PREFIX = 8
_EVENT_TYPE = re.compile(r"incident\.[a-z_]+")
DECISIONS = ("retry", "fail", "ignore")
_UNAPPLIED = ("decided",)


def default_operator() -> str:
    return os.environ.get("INTERACTIVE_OPERATOR") or getpass.getuser()


def default_groups() -> tuple[str, ...]:
    return tuple(g.strip() for g in os.environ.get("INTERACTIVE_GROUPS", "").split(",") if g.strip())


def has_control(text: str, allowed: str = "") -> bool:
    """True if ``text`` holds a control character (Unicode category Cc) other than ``allowed``:
    shown to other operators, it could move their terminal's cursor or rewrite their screen."""
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in text)


def parse_stream_entry(entry_id: str, fields: dict[str, str]) -> dict[str, Any] | None:
    """:func:`stream_entry`, or None for an entry this library did not write (no ``incident.*``
    type or no id) or cannot read. Its strings are made inert: control characters are escaped."""
    task_id = fields.get("id") or ""
    if not _EVENT_TYPE.fullmatch(fields.get("type", "")) or not task_id or "\ufffd" in task_id:
        return None  # U+FFFD: bytes that were not UTF-8 (see Store)
    try:
        return stream_entry(entry_id, {k: escape_controls(v) for k, v in fields.items()})
    except (ValueError, TypeError, OverflowError):
        return None


def stream_entry(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A stream message as a typed dict: ``at`` from the entry id, numbers as numbers, ISO times."""
    out: dict[str, Any] = {"stream_id": entry_id, "at": iso(int(entry_id.split("-")[0]) / 1000), **fields}
    for key in ("v", "try"):
        if str(out.get(key, "")).isdigit():
            out[key] = int(out[key])
    if out.get("deadline"):
        out["deadline"] = iso(out["deadline"])
    if "addressed" in out:
        try:
            out["addressed"] = json.loads(out["addressed"])
        except ValueError:
            pass
    return out


@dataclass
class DecisionResult:
    id: str
    decision: str
    operator: str
    recorded: bool
    applied: bool
    applied_by: str | None
    state: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class OperatorAPI:
    def __init__(self, app, operator: str | None = None, groups: Sequence[str] | None = None,
                 store: Store | None = None):
        name = (operator or default_operator()).strip()
        if not name or has_control(name) or name.startswith("team:"):
            raise errors.BadInput(f"invalid operator name {operator!r}")
        self.app = app
        self.operator = name
        self.groups = tuple(groups if groups is not None else default_groups())
        if any(not isinstance(g, str) or not g.strip() or has_control(g) for g in self.groups):
            raise errors.BadInput(f"invalid group names {list(self.groups)!r}")
        self.settings = settings_for(app)
        self.store = store or store_for(app)
        self.host = socket.gethostname()
        self._skipped_ids: set[str] = set()

    # -- presence ---------------------------------------------------------------------------------

    def heartbeat(self) -> int:
        """Mark this operator online now; returns how many presence entries are fresh."""
        now = time.time()
        return self.store.heartbeat(self.operator, self.groups, now=now, host=self.host,
                                    cutoff=now - self.settings.flow.limit_minutes * 60)

    def operators(self) -> list[dict[str, Any]]:
        self.heartbeat()
        cutoff = time.time() - self.settings.flow.limit_minutes * 60
        seen = [(name, ts) for name, ts in self.store.presence(cutoff) if not name.startswith("team:")]
        infos = self.store.operator_info([name for name, _ in seen])
        return [{"operator": name, "last_seen": iso(ts), "since": iso(info.get("since")),
                 "groups": json.loads(info.get("groups") or "[]"), "host": info.get("host")}
                for (name, ts), info in zip(seen, infos)]

    # -- reading ----------------------------------------------------------------------------------

    def resolve_id(self, ref: str) -> str:
        """An exact task id wins; otherwise a unique prefix of at least 8 characters."""
        ref = (ref or "").strip()
        if not ref:
            raise errors.BadInput("an incident id is required")
        if self.store.exists(ref):
            return ref
        if len(ref) < MIN_PREFIX:
            raise errors.BadInput(f"no incident has id {ref!r}, and a prefix needs at least {MIN_PREFIX} characters")
        matches = [m for m in self.store.ids_with_prefix(ref) if self.store.exists(m)]
        if not matches:
            raise errors.UnknownIncident(ref)
        if len(matches) > 1:
            raise errors.AmbiguousIncident(ref, matches)
        return matches[0]

    def incident(self, ref: str) -> dict[str, Any]:
        self.heartbeat()
        task_id = self.resolve_id(ref)
        raw = self.store.incident(task_id)
        view = incident_view(raw)
        view["tries"] = tries_view(self.store.tries(task_id), raw)
        return view

    def history(self, ref: str) -> list[dict[str, Any]]:
        self.heartbeat()
        task_id = self.resolve_id(ref)
        return tries_view(self.store.tries(task_id), self.store.incident(task_id))

    def incidents(self, state: str = "open", *, limit: int = 50, offset: int = 0,
                  everyone: bool = True) -> list[dict[str, Any]]:
        """Incidents by state: ``open`` (waiting), ``active`` (decided, not finished), ``resolved``
        or ``any``; newest first."""
        if state not in ("open", "active", "resolved", "any"):
            raise errors.BadInput(f"state must be open, active, resolved or any, not {state!r}")
        self.heartbeat()
        which = ("open", "active", "resolved") if state == "any" else (state,)
        ids = [task_id for w in which for task_id, _ in self.store.index(w, offset=0, limit=offset + limit)]
        views = [incident_view(raw) for raw in self.store.incidents(ids) if raw]
        if state == "any":
            views.sort(key=lambda v: v.get("opened_at") or "", reverse=True)
        if not everyone:
            views = [v for v in views if self.addressed_to_me(v)]
        return views[offset: offset + limit]

    def addressed_to_me(self, view: dict[str, Any]) -> bool:
        addressed = view.get("addressed") or []
        mine = {self.operator, *(f"team:{g}" for g in self.groups)}
        return not addressed or bool(mine & set(addressed))

    def audit(self, since: float = 0.0, until: float | None = None) -> list[dict[str, Any]]:
        """Every decision made in a time range (unix seconds), oldest first."""
        self.heartbeat()
        rows = []
        for member, record, incident in self.store.audit(since, time.time() if until is None else until):
            task_id, _, try_no = member.rpartition(":")
            data = with_timeout(json.loads(record) if record else {}, try_no, incident)
            rows.append({"id": task_id, "try": int(try_no), "decision": data.get("decision"),
                         "operator": data.get("decided_by"), "reason": data.get("reason") or None,
                         "host": data.get("decided_host"), "at": iso(data.get("decided_at"))})
        return rows

    # -- following the stream ---------------------------------------------------------------------

    def stream_position(self) -> str:
        """The stream id to pass to :meth:`events` to see only messages written from now on."""
        return self.store.stream_last_id()

    def events(self, after: str, *, block_s: float | None = None, count: int = 100) -> list[dict[str, Any]]:
        """Operator messages written after stream id ``after``, oldest first; each carries its
        ``stream_id`` for the next call. Blocks up to ``block_s`` when there are none yet.

        Unlike the other calls this is no heartbeat: a console polls it every second, and its
        owner heartbeats on its own schedule.

        Entries another program wrote on the stream, or that cannot be read, are skipped with a
        warning in the ``interactive_celery`` log; reading goes on past them.
        """
        block_ms = None if block_s is None else max(1, int(block_s * 1000))
        while True:
            entries = self.store.read_stream(after, block_ms=block_ms, count=count)
            events = []
            for entry_id, fields in entries:
                event = parse_stream_entry(entry_id, fields)
                if event is None:
                    self._skipped(entry_id, fields)
                else:
                    events.append(event)
            if events or not entries:
                return events
            after = entries[-1][0]  # only foreign entries in this batch: read on past them

    def _skipped(self, entry_id: str, fields: dict[str, str]) -> None:
        # A reader that lags behind a foreign entry reads it again on its next call: say it once.
        if entry_id not in self._skipped_ids:
            if len(self._skipped_ids) > 10000:
                self._skipped_ids.clear()
            self._skipped_ids.add(entry_id)
            logger.warning("interactive: skipping a foreign or malformed operator-stream entry %s: %.200r",
                           entry_id, fields)

    # -- deciding ---------------------------------------------------------------------------------

    def retry(self, ref: str, reason: str | None = None, *, wait: float = 5.0,
              **overrides: Any) -> DecisionResult:
        """Retry; ``overrides`` are task keywords (e.g. ``decision_timeout_minutes=60``) that apply
        from the new try on: the top layer over app, task and call."""
        return self.decide(ref, "retry", reason=reason, wait=wait, overrides=overrides)

    def fail(self, ref: str, reason: str | None = None, *, wait: float = 5.0) -> DecisionResult:
        return self.decide(ref, "fail", reason=reason, wait=wait)

    def ignore(self, ref: str, result: Any = None, reason: str | None = None, *,
               wait: float = 5.0) -> DecisionResult:
        return self.decide(ref, "ignore", reason=reason, wait=wait, result=result)

    def decide(self, ref: str, decision: str, *, reason: str | None = None, wait: float = 5.0,
               result: Any = None, overrides: dict[str, Any] | None = None) -> DecisionResult:
        if decision not in DECISIONS:
            raise errors.BadInput(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        options_json = self._decision_options(decision, overrides or {})
        if not isinstance(wait, (int, float)) or wait < 0:
            raise errors.BadInput(f"wait must be a number of seconds >= 0, not {wait!r}")
        if reason is not None and (not isinstance(reason, str) or has_control(reason, "\n\r\t")):
            raise errors.BadInput(f"the reason must be text without control characters, not {reason!r}")
        try:
            result_json = json.dumps(result) if decision == "ignore" else ""
        except (TypeError, ValueError) as exc:
            raise errors.BadInput(f"the ignore result must be JSON-serialisable: {exc}") from None
        ref = (ref or "").strip()
        if not ref:
            raise errors.BadInput("an incident id is required")

        def record(task_id: str) -> list[str]:
            now = time.time()
            return self.store.decide(task_id, decision, now=now, operator=self.operator, reason=reason or "",
                                     host=self.host, result_json=result_json,
                                     allow_any=self.settings.allow_any_operator, options_json=options_json,
                                     groups=self.groups, cutoff=now - self.settings.flow.limit_minutes * 60)

        # An exact id takes one round trip (the script is the heartbeat too); only a reference that
        # is not one goes through the prefix lookup.
        task_id, reply = ref, record(ref)
        if reply[0] == "unknown":
            task_id = self.resolve_id(ref)
            reply = record(task_id)
        self._raise_refusal(task_id, reply)
        return self._await_application(task_id, decision, wait)

    @staticmethod
    def _decision_options(decision: str, overrides: dict[str, Any]) -> str:
        if not overrides:
            return ""
        if decision != "retry":
            raise errors.BadInput("parameter overrides only apply to a retry")
        try:
            return json.dumps(keyword_params(overrides, "retry"))
        except errors.ConfigurationError as exc:
            raise errors.BadInput(str(exc)) from None

    def _raise_refusal(self, task_id: str, reply: list[str]) -> None:
        status = reply[0]
        if status == "ok":
            return
        if status == "unknown":
            raise errors.UnknownIncident(task_id)
        if status == "superseded":
            raise errors.Superseded(task_id, reply[1])
        if status == "not_waiting":
            raise errors.NotWaiting(task_id, reply[1])
        if status == "decided":
            d = implied_decision({"decision": reply[1], "decided_by": reply[2], "reason": reply[4]})
            raise errors.AlreadyDecided(task_id, {"decision": d["decision"], "decided_by": d["decided_by"],
                                                  "decided_at_iso": iso(reply[3]), "reason": d["reason"]})
        if status == "not_addressed":
            raise errors.NotAddressed(task_id, self.operator, json.loads(reply[1]))
        raise errors.InteractiveError(f"unexpected reply from Redis: {reply!r}")

    def _await_application(self, task_id: str, decision: str, wait: float) -> DecisionResult:
        deadline = time.monotonic() + wait
        while True:
            raw = self.store.incident(task_id)
            state = raw.get("state", "gone")
            if state not in _UNAPPLIED or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        applied = state not in _UNAPPLIED
        return DecisionResult(task_id, decision, self.operator, True, applied,
                              raw.get("applied_by") if applied else None, state)
