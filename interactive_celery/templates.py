"""Operator message templates: ``interactive_subject`` and ``interactive_body``.

Deliberately not ``str.format``: that would let a template reach attributes (``{x.__class__}``).
A placeholder is ``{name}`` or ``{context.key}``; values are inserted as plain text once, never
re-parsed, so a template, an argument or an exception message can never run code. Unknown
placeholders stay as written.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .config import FlowParams

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)?)\}")


def render(template: str, values: Mapping[str, Any]) -> str:
    def one(match: re.Match) -> str:
        name = match.group(1)
        head, _, key = name.partition(".")
        if head not in values:
            return match.group(0)
        value = values[head]
        if key:
            if not isinstance(value, Mapping) or key not in value:
                return match.group(0)
            value = value[key]
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(one, template)


def render_message(params: FlowParams, *, task_name: str, task_id: str, exc_type: str, exc_message: str,
                   fail_count: int, worker: str | None, flower_url: str | None) -> tuple[str, str]:
    values = {
        "task_name": task_name.rsplit(".", 1)[-1], "task_full_name": task_name, "task_id": task_id,
        "exc_type": exc_type, "exc_message": exc_message, "fail_count": fail_count,
        "times": {1: "once", 2: "twice"}.get(fail_count, f"{fail_count} times"),
        "is_retry": fail_count > 1, "worker": worker or "", "context": params.context,
        "flower_link": f"{flower_url.rstrip('/')}/task/{task_id}" if flower_url else "",
    }
    return render(params.subject, values), render(params.body, values)
