"""Every error this library raises descends from :class:`InteractiveError`.

Redis errors are translated once, at the boundary in :mod:`interactive_celery.store`, so callers
(the CLI, the web console, users' own code) catch one family and map it to an exit code.
"""

from __future__ import annotations

from typing import Any, Sequence


class InteractiveError(Exception):
    """Root of every error raised by interactive_celery."""

    #: CLI exit code: 1 refused, 2 bad input or configuration, 3 Redis unreachable.
    exit_code = 1
    #: Stable machine-readable code used in ``--json`` error output.
    code = "error"


class ConfigurationError(InteractiveError, ValueError):
    """A setting has the wrong type or an impossible value."""

    exit_code = 2
    code = "bad_config"


class BadInput(InteractiveError, ValueError):
    """An operator command got input it cannot act on."""

    exit_code = 2
    code = "bad_input"


class UnknownIncident(BadInput):
    code = "unknown_id"

    def __init__(self, incident_id: str):
        self.incident_id = incident_id
        super().__init__(f"no incident matches {incident_id!r}")


class AmbiguousIncident(BadInput):
    code = "ambiguous_id"

    def __init__(self, prefix: str, candidates: Sequence[str]):
        self.incident_id = prefix
        self.candidates = list(candidates)
        shown = ", ".join(self.candidates[:10])
        more = f" and {len(self.candidates) - 10} more" if len(self.candidates) > 10 else ""
        super().__init__(f"prefix {prefix!r} matches several incidents: {shown}{more}")


class DecisionRefused(InteractiveError):
    """The incident cannot take this decision; nothing was changed."""

    exit_code = 1
    code = "refused"

    def __init__(self, incident_id: str, message: str):
        self.incident_id = incident_id
        super().__init__(message)


class AlreadyDecided(DecisionRefused):
    code = "already_decided"

    def __init__(self, incident_id: str, existing_decision: dict[str, Any]):
        self.existing_decision = existing_decision
        d = existing_decision
        who = d.get("decided_by") or "?"
        reason = f" ({d['reason']})" if d.get("reason") else ""
        super().__init__(
            incident_id,
            f"incident {incident_id} was already decided: {d.get('decision')} by {who} "
            f"at {d.get('decided_at_iso', '?')}{reason}",
        )


class NotWaiting(DecisionRefused):
    code = "not_waiting"

    def __init__(self, incident_id: str, state: str):
        self.state = state
        super().__init__(incident_id, f"incident {incident_id} is not waiting for a decision (state: {state})")


class Superseded(DecisionRefused):
    code = "superseded"

    def __init__(self, incident_id: str, why: str = ""):
        self.why = why
        tail = f": {why}" if why else ""
        super().__init__(incident_id, f"incident {incident_id} was superseded by Celery{tail}")


class NotAddressed(DecisionRefused):
    code = "not_addressed"

    def __init__(self, incident_id: str, operator: str, addressed: Sequence[str]):
        self.operator = operator
        self.addressed = list(addressed)
        super().__init__(
            incident_id,
            f"operator {operator!r} is not addressed by incident {incident_id} "
            f"(addressed: {', '.join(self.addressed)})",
        )


class RedisUnavailable(InteractiveError):
    """Redis could not be reached, or refused our credentials."""

    exit_code = 3
    code = "redis_unavailable"

    def __init__(self, url: str, cause: BaseException):
        self.url = url
        super().__init__(f"cannot use Redis at {url}: {cause}")


class IncompatibleRedis(InteractiveError):
    """The Redis server is too old for the scripts we run."""

    exit_code = 3
    code = "incompatible_redis"


class CorruptData(InteractiveError):
    """A key under our prefix holds something we did not write (edited by hand, or a foreign type)."""

    exit_code = 2
    code = "corrupt_data"
