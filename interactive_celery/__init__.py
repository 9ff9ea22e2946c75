"""interactive_celery: an interactive mode for Celery.

A task declared with ``base=InteractiveTask`` fails like any Celery task when nobody is online; when
an operator is online its final failure is parked until the operator retries or fails it.
"""

from .api import DecisionResult, OperatorAPI
from .attach import interactive
from .errors import (
    AlreadyDecided, AmbiguousIncident, BadInput, ConfigurationError, CorruptData, DecisionRefused, IncompatibleRedis,
    InteractiveError, NotAddressed, NotWaiting, RedisUnavailable, Superseded, UnknownIncident,
)
from .install import install
from .task import AWAITING_OPERATOR, InteractiveTask

__all__ = [
    "AWAITING_OPERATOR", "AlreadyDecided", "AmbiguousIncident", "BadInput", "ConfigurationError", "CorruptData",
    "DecisionRefused", "DecisionResult", "IncompatibleRedis", "InteractiveError", "InteractiveTask",
    "NotAddressed", "NotWaiting", "OperatorAPI", "RedisUnavailable", "Superseded", "UnknownIncident",
    "install", "interactive",
]
