"""Incident and try records: what they hold, how they are (de)serialised, and redaction.

Everything an operator can read passes through :func:`redact_call` first. The real arguments live
only in the private message key, which operators never read.
"""

from __future__ import annotations

import importlib
import json
import reprlib
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from celery.utils.saferepr import saferepr

RECORD_VERSION = 1
REDACTED = "***"
_TRUNCATED = "…[truncated]"


def iso(ts: float | str | None) -> str | None:
    if ts in (None, ""):
        return None
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cap_text(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max_chars - len(_TRUNCATED)] + _TRUNCATED


def cap_traceback(text: str, max_bytes: int) -> str:
    """Keep the tail of a traceback (the failing frames and the exception) within ``max_bytes``;
    a line longer than an eighth of that is cut first, so one huge message keeps its frames.
    Control characters other than newline and tab are escaped, as in :func:`clean_text`: the
    traceback holds the exception message, and the CLI prints it as is to operators' terminals."""
    marker = "…[traceback truncated]…\n"
    line_max = max(64, max_bytes // 8)
    if len(text) > line_max:  # a huge line (the message, mostly) must not push the frames out
        text = "\n".join(cap_text(line, line_max) for line in text.split("\n"))
    for _ in range(2):  # escaping can lengthen the text; then cap the escaped tail once more
        data = text.encode("utf-8", "replace")
        if len(data) > max_bytes:
            text = marker + data[-(max_bytes - len(marker.encode())):].decode("utf-8", "ignore")
        text = escape_controls(text)
    return text


def escape_controls(text: str) -> str:
    """Show control characters as escapes (newlines and tabs stay): shown to an operator, they could
    move the terminal's cursor or rewrite the screen."""
    if text.replace("\n", "").replace("\t", "").isprintable():  # the usual case: C-level passes only
        return text
    return "".join(ch if ch.isprintable() or ch in "\n\t" else repr(ch)[1:-1] for ch in text)


def _sensitive(key: Any, redact_keys: Iterable[str]) -> bool:
    k = str(key).lower()
    return any(word in k for word in redact_keys)


def redact(value: Any, redact_keys: tuple[str, ...], _depth: int = 0) -> Any:
    """Replace the values of sensitive keys, at any depth, with ``***``."""
    if _depth > 20:
        return "…"
    if isinstance(value, Mapping):
        return {k: REDACTED if _sensitive(k, redact_keys) else redact(v, redact_keys, _depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, redact_keys, _depth + 1) for v in value) if isinstance(value, list) \
            else tuple(redact(v, redact_keys, _depth + 1) for v in value)
    return value


def redact_call(args: Any, kwargs: Any, *, argsrepr: str | None, kwargsrepr: str | None,
                redact_keys: tuple[str, ...], max_chars: int, celery_maxsize: int = 1024,
                celery_maxlevels: int = 3) -> tuple[str, str]:
    """The args and kwargs an operator may see.

    A caller who set ``argsrepr``/``kwargsrepr`` explicitly decided what is safe to show, so that wins.
    Celery fills both with ``saferepr`` by default, which would show secrets; we tell the two apart by
    comparing with every form of the default (see :func:`celery_default_reprs`).
    """
    shown = []
    for value, given in ((args, argsrepr), (kwargs, kwargsrepr)):
        if given is not None and given not in celery_default_reprs(value, celery_maxsize, celery_maxlevels):
            text = given
        else:
            text = saferepr(redact(value if value is not None else (), redact_keys), maxlen=max_chars)
        shown.append(cap_text(str(text), max_chars))
    return shown[0], shown[1]


def celery_default_reprs(value: Any, maxsize: int, maxlevels: int) -> set[str]:
    """What Celery may have put in ``argsrepr``/``kwargsrepr`` when the caller set nothing:
    ``saferepr`` cut at ``AMQP.argsrepr_maxsize`` (1024; a longer call looks "explicit" to a plain
    comparison and its secrets would show), of args sent as a tuple but delivered as a list."""
    if value is None:
        return set()
    forms = [value, tuple(value), list(value)] if isinstance(value, (list, tuple)) else [value]
    return {saferepr(form, size, maxlevels=levels) for form in forms
            for size in (maxsize, None) for levels in (maxlevels, 3)}


def clean_text(text: str, max_chars: int) -> str:
    """Exception messages may hold anything: cap them, and keep control characters visible."""
    return cap_text(escape_controls(text[: max_chars * 2]), max_chars)


# -- exceptions -------------------------------------------------------------------------------------

def serialize_exception(exc: BaseException, max_chars: int) -> str:
    """A JSON form that can be rebuilt into the same exception type in any worker."""
    try:
        args = json.loads(json.dumps(list(exc.args)))
    except (TypeError, ValueError):
        args = [reprlib.repr(exc.args)]
    data = {"v": RECORD_VERSION, "module": type(exc).__module__, "type": type(exc).__qualname__,
            "args": args}
    text = json.dumps(data)
    if len(text) > max_chars * 4:
        data["args"] = [cap_text(str(exc), max_chars)]
        text = json.dumps(data)
    return text


def rebuild_exception(text: str) -> BaseException:
    """Rebuild a stored exception; the original type if it can be imported, else a stand-in."""
    from celery.utils.serialization import create_exception_cls

    data = json.loads(text)
    args = data.get("args") or []
    cls: Any = None
    try:
        obj: Any = importlib.import_module(data["module"])
        for part in data["type"].split("."):
            obj = getattr(obj, part)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            cls = obj
    except (ImportError, AttributeError, KeyError):
        cls = None
    if cls is not None:
        try:
            return cls(*args)
        except Exception:  # a constructor with another signature
            pass
    return create_exception_cls(str(data.get("type", "Exception")), str(data.get("module", __name__)))(*args)


# -- records ----------------------------------------------------------------------------------------

def try_record(number: int, *, worker: str | None, started_at: float | None, ended_at: float | None,
               outcome: str, exc_type: str | None = None, exc_message: str | None = None,
               traceback: str | None = None) -> dict[str, Any]:
    return {"v": RECORD_VERSION, "try": number, "worker": worker, "started_at": started_at,
            "ended_at": ended_at, "outcome": outcome, "exc_type": exc_type, "exc_message": exc_message,
            "traceback": traceback}


_FLOATS = ("opened_at", "deadline", "decided_at", "applied_at", "resolved_at", "created_at", "started_at")
_INTS = ("try", "fence", "celery_retries", "v", "fail_count")
_NUMBERS = ("limit_minutes",)


def incident_view(raw: Mapping[str, str]) -> dict[str, Any]:
    """Typed, stable view of an incident hash (the ``--json`` shape; see docs/json.md)."""
    if raw.get("decision") == "timeout":
        raw = {**raw, **{k: v for k, v in implied_decision(raw).items() if v is not None}}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _FLOATS:
            try:
                out[key] = iso(value)
            except (ValueError, OverflowError):  # edited by hand: show what is there
                out[key] = value
        elif key in _INTS or key in _NUMBERS:
            try:
                out[key] = int(value) if key in _INTS else float(value)
            except ValueError:
                out[key] = value
        elif key in ("addressed", "params", "result", "decision_options"):
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        else:
            out[key] = value
    out.setdefault("addressed", [])
    return out


DECISION_FIELDS = ("decision", "decided_by", "decided_at", "reason", "decided_host")
TIMEOUT_REASON = "no decision before the deadline"


def implied_decision(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The decision fields of an incident hash (or a refusal). For a timeout ``expire.lua`` stores
    only the decision and its time; who and why are implied."""
    fields = {key: raw.get(key) for key in DECISION_FIELDS}
    if fields["decision"] == "timeout":
        fields["decided_by"] = fields["decided_by"] or "timeout"
        fields["reason"] = fields["reason"] or TIMEOUT_REASON
    return fields


def with_timeout(record: dict[str, Any], try_no: str, incident: Mapping[str, str]) -> dict[str, Any]:
    """The try record with the incident's timeout in it. ``expire.lua`` keeps a timeout in the
    incident hash only (rewriting each try record, 2 KB of traceback, halved the sweeper's rate;
    make bench, issue 6). A timeout starts no further try, so it belongs to the incident's current one."""
    if record.get("decision") or incident.get("decision") != "timeout" or incident.get("try") != str(try_no):
        return record
    merged = {**record, **implied_decision(incident)}
    try:
        merged["decided_at"] = float(merged["decided_at"])
    except (TypeError, ValueError):  # edited by hand: show what is there
        pass
    return merged


def tries_view(raw: Mapping[str, str], incident: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The try records, oldest first; ``incident`` (its hash) supplies a timeout's decision."""
    tries = []
    for number in sorted(raw, key=lambda n: int(n) if n.isdigit() else 0):
        try:
            record = with_timeout(json.loads(raw[number]), number, incident or {})
        except ValueError:
            record = {"try": number, "corrupt": True}
        for key in ("started_at", "ended_at", "decided_at"):
            if isinstance(record.get(key), (int, float)):
                record[key] = iso(record[key])
        tries.append(record)
    return tries
