"""Settings: defaults, ``interactive_*`` keys from the Celery config, validation.

Defaults are written once, here. :func:`settings_for` validates an app's configuration once and caches
the result on the app, so a bad value fails loudly at the first use instead of in the middle of a
failure path. Per-flow parameters are layered: app, then task (decorator keywords), then call
(:func:`interactive_celery.interactive`), then decision.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Mapping

from .errors import ConfigurationError

DEFAULT_REDACT_KEYS = (
    "password", "passwd", "pwd", "token", "secret", "authorization", "api_key", "apikey",
    "access_key", "private_key", "credential", "cookie", "session",
)
DEFAULT_SUBJECT = "{task_name} failed {times}"
DEFAULT_BODY = "{exc_type}: {exc_message}"


@dataclass(frozen=True)
class FlowParams:
    """Parameters that can be set per app, per task and per call."""

    limit_minutes: float = 30.0
    archive_retries: bool = True
    decision_timeout_minutes: float | None = None
    operators: tuple[str, ...] = ()
    subject: str = DEFAULT_SUBJECT
    body: str = DEFAULT_BODY
    context: Any = None

    @property
    def timeout_s(self) -> float:
        minutes = self.limit_minutes if self.decision_timeout_minutes is None else self.decision_timeout_minutes
        return minutes * 60.0

    def layered(self, overrides: Mapping[str, Any], where: str) -> "FlowParams":
        """Return a copy with ``overrides`` (already stripped of None) validated and applied."""
        if not overrides:
            return self
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigurationError(f"{where}: unknown interactive parameter(s): {', '.join(sorted(unknown))}")
        values = {k: _check_param(k, v, where) for k, v in overrides.items()}
        return dataclasses.replace(self, **values)


# Task keyword (decorator) name -> FlowParams field.
TASK_KEYWORDS = {
    "interactive_limit_minutes": "limit_minutes",
    "archive_retries": "archive_retries",
    "decision_timeout_minutes": "decision_timeout_minutes",
    "interactive_operators": "operators",
    "interactive_subject": "subject",
    "interactive_body": "body",
    "interactive_context": "context",
}


def keyword_params(keywords: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Task keywords given per call or per decision, validated, as JSON-ready FlowParams fields."""
    unknown = set(keywords) - set(TASK_KEYWORDS)
    if unknown:
        raise ConfigurationError(f"{where}: unknown parameter(s): {', '.join(sorted(unknown))}")
    fields = {TASK_KEYWORDS[k]: v for k, v in keywords.items() if v is not None}
    checked = FlowParams().layered(fields, where)
    return {name: list(value) if isinstance(value := getattr(checked, name), tuple) else value
            for name in fields}


@dataclass(frozen=True)
class Settings:
    """Validated, app-wide settings."""

    redis_url: str
    key_prefix: str = "interactive"
    stream_maxlen: int = 10000
    retention_days: float = 14.0
    redact_keys: tuple[str, ...] = DEFAULT_REDACT_KEYS
    repr_max_chars: int = 2000
    traceback_max_bytes: int = 16384
    allow_any_operator: bool = False
    flower_url: str | None = None
    # How long an applier waits for a worker to replay a fail/timeout before it
    # stores FAILURE directly from the result backend (see docs/decisions.md).
    replay_fallback_s: float = 30.0
    sweep_interval_s: float = 1.0
    # A decision entry read by a worker that died unacked is claimed by another after this long.
    claim_idle_s: float = 30.0
    result_expires_s: float | None = None
    flow: FlowParams = field(default_factory=FlowParams)

    @property
    def retention_s(self) -> int:
        return int(self.retention_days * 86400)


# App config key -> (Settings field, default) for the scalar app-wide settings.
_APP_KEYS = {
    "interactive_key_prefix": "key_prefix",
    "interactive_stream_maxlen": "stream_maxlen",
    "interactive_retention_days": "retention_days",
    "interactive_redact_keys": "redact_keys",
    "interactive_repr_max_chars": "repr_max_chars",
    "interactive_traceback_max_bytes": "traceback_max_bytes",
    "interactive_allow_any_operator": "allow_any_operator",
    "interactive_flower_url": "flower_url",
    "interactive_replay_fallback_seconds": "replay_fallback_s",
    "interactive_sweep_interval_seconds": "sweep_interval_s",
    "interactive_claim_idle_seconds": "claim_idle_s",
}
_APP_FLOW_KEYS = {
    "interactive_limit_minutes": "limit_minutes",
    "interactive_archive_retries": "archive_retries",
    "interactive_decision_timeout_minutes": "decision_timeout_minutes",
    "interactive_operators": "operators",
    "interactive_subject": "subject",
    "interactive_body": "body",
    "interactive_context": "context",
}


def _is_number(value: Any) -> bool:
    """A finite int or float: NaN would pass every comparison and infinity overflows int()."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _minutes(name: str, value: Any, where: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not _is_number(value) or value != value or value < 0:
        raise ConfigurationError(f"{where}: {name} must be a number of minutes >= 0, got {value!r}")
    return float(value)


def _check_param(name: str, value: Any, where: str) -> Any:
    if name == "limit_minutes":
        return _minutes("interactive_limit_minutes", value, where)
    if name == "decision_timeout_minutes":
        minutes = _minutes("decision_timeout_minutes", value, where, optional=True)
        if minutes == 0:
            raise ConfigurationError(f"{where}: decision_timeout_minutes must be > 0 (or None for the limit)")
        return minutes
    if name == "archive_retries":
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where}: archive_retries must be True or False, got {value!r}")
        return value
    if name == "operators":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigurationError(f"{where}: interactive_operators must be a list of names, got {value!r}")
        return tuple(v.strip() for v in value)
    if name in ("subject", "body"):
        if not isinstance(value, str):
            raise ConfigurationError(f"{where}: interactive_{name} must be a string, got {value!r}")
        return value
    return value


def _redis_like(url: Any) -> bool:
    return isinstance(url, str) and url.split("://", 1)[0] in ("redis", "rediss", "unix", "redis+socket")


def _expires_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if _is_number(value):
        return float(value)
    raise ConfigurationError(f"result_expires must be seconds or a timedelta, got {value!r}")


def _backend_can_hold_state(app) -> str | None:
    """Return why the result backend cannot hold AWAITING_OPERATOR, or None if it can."""
    url = app.conf.result_backend
    if not url or str(url).startswith("disabled"):
        return "the result backend is disabled; set result_backend (e.g. to Redis)"
    if str(url).split(":", 1)[0] in ("rpc", "amqp"):
        return f"the {url.split(':', 1)[0]}:// result backend cannot store a custom state; use Redis or a database"
    return None


def load_settings(app) -> Settings:
    """Read and validate every ``interactive_*`` key of ``app``'s configuration."""
    conf = app.conf
    where = "celery config"
    problem = _backend_can_hold_state(app)
    if problem:
        raise ConfigurationError(f"{where}: {problem}")

    url = conf.get("interactive_redis_url")
    if url is None:
        broker, backend = conf.broker_url, conf.result_backend
        url = broker if _redis_like(broker) else backend if _redis_like(backend) else None
        if url is None:
            raise ConfigurationError(
                f"{where}: interactive_redis_url is not set and neither the broker nor the result backend is Redis"
            )
    elif not _redis_like(url):
        raise ConfigurationError(f"{where}: interactive_redis_url must be a redis:// URL, got {url!r}")

    values: dict[str, Any] = {"redis_url": url}
    defaults = Settings(redis_url=url)
    for key, name in _APP_KEYS.items():
        if key in conf and conf.get(key) is not None:
            values[name] = conf.get(key)
    _validate_scalars(values, defaults, where)
    values["result_expires_s"] = _expires_seconds(conf.result_expires)

    flow_overrides = {name: conf.get(key) for key, name in _APP_FLOW_KEYS.items() if conf.get(key) is not None}
    values["flow"] = FlowParams().layered(flow_overrides, where)
    settings = Settings(**values)
    check_timeout_fits(settings, settings.flow, where)
    return settings


def _validate_scalars(values: dict[str, Any], defaults: Settings, where: str) -> None:
    prefix = values.get("key_prefix", defaults.key_prefix)
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{}: \t\n"):
        raise ConfigurationError(f"{where}: interactive_key_prefix must be a non-empty word without braces, colons or spaces, got {prefix!r}")
    for name in ("stream_maxlen", "repr_max_chars", "traceback_max_bytes"):
        value = values.get(name, getattr(defaults, name))
        if not isinstance(value, int) or isinstance(value, bool) or value < 64:
            raise ConfigurationError(f"{where}: interactive_{name} must be an integer >= 64, got {value!r}")
    for name in ("retention_days", "replay_fallback_s", "sweep_interval_s", "claim_idle_s"):
        value = values.get(name, getattr(defaults, name))
        if not _is_number(value) or value <= 0:
            raise ConfigurationError(f"{where}: {name} must be a positive number, got {value!r}")
    keys = values.get("redact_keys", defaults.redact_keys)
    if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
        raise ConfigurationError(f"{where}: interactive_redact_keys must be a list of strings, got {keys!r}")
    values["redact_keys"] = tuple(k.lower() for k in keys)
    if not isinstance(values.get("allow_any_operator", False), bool):
        raise ConfigurationError(f"{where}: interactive_allow_any_operator must be True or False")
    if not isinstance(values.get("flower_url", ""), str):
        raise ConfigurationError(f"{where}: interactive_flower_url must be a URL string, got {values['flower_url']!r}")


def check_timeout_fits(settings: Settings, flow: FlowParams, where: str) -> None:
    """A decision deadline past ``result_expires`` would let Celery drop the parked state first."""
    expires = settings.result_expires_s
    if expires and flow.limit_minutes and flow.timeout_s > expires:
        raise ConfigurationError(
            f"{where}: the decision timeout ({flow.timeout_s:.0f}s) is longer than result_expires "
            f"({expires:.0f}s); the parked state would expire before the deadline"
        )


def settings_for(app) -> Settings:
    """Validated settings of ``app``, computed once and cached on the app itself."""
    cached = app.__dict__.get("_interactive_settings")
    if cached is None:
        cached = load_settings(app)
        app._interactive_settings = cached
    return cached
