"""Helpers for the CLI tests: invoking the real click commands, running them as real processes, and
checking JSON output against the shapes documented in docs/json.md (parsed from the doc itself, so
the doc and the output cannot drift apart unnoticed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery.bin.base import CLIContext
from click.testing import CliRunner, Result

from interactive_celery import AWAITING_OPERATOR
from interactive_celery.cli import interactive
from tests.helpers import wait_state

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
JSON_DOC = ROOT / "docs" / "json.md"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


# -- running commands -----------------------------------------------------------------------------

def invoke(app, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``celery interactive <args>`` in-process, as Celery would: the app arrives as ``ctx.obj.app``."""
    result = CliRunner().invoke(interactive, list(args), obj=CLIContext(app=app, no_color=True, workdir=None),
                                env=env, catch_exceptions=True)
    assert_no_traceback(result.stderr)
    # Every outcome must come through an exit code, never an exception escaping the command.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def cli_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERACTIVE_", "CELERY_"))}
    env.update(REDIS_URL=redis_url, INTERACTIVE_TEST_PREFIX=prefix, PYTHONPATH=str(ROOT), COLUMNS="120", **extra)
    return env


def run_cli(argv: list[str], env: dict[str, str], timeout: float = 60,
            cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run a real CLI process (``celery`` or ``interactive-celery`` from this venv)."""
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert_no_traceback(proc.stderr)
    return proc


def assert_no_traceback(stderr: str) -> None:
    """Ours would go to stderr; stdout may legitimately show a parked task's own traceback."""
    assert "Traceback (most recent call last)" not in stderr, stderr


def parse_json(text: str) -> Any:
    """stdout must hold exactly one JSON document."""
    return json.loads(text)


def park(task, path: Path, *, task_id: str | None = None, **task_kwargs: Any):
    """Send a flow that fails (its file is missing) and wait until it waits for an operator."""
    result = task.apply_async((str(path),), task_kwargs, task_id=task_id)
    return wait_state(result, AWAITING_OPERATOR)


# -- documented JSON shapes -------------------------------------------------------------------------

@lru_cache(maxsize=1)
def documented_shapes() -> dict[str, dict[str, str]]:
    """Shape name -> {field: type} from the tables under ``### `name``` headings in docs/json.md."""
    shapes: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in JSON_DOC.read_text().splitlines():
        heading = re.match(r"^### `(\w+)`\s*$", line)
        if heading:
            current = shapes.setdefault(heading.group(1), {})
            continue
        if line.startswith("## "):
            current = None
        row = re.match(r"^\| `(\w+)` \| `((?:[^`])+)` \|", line)
        if current is not None and row:
            current[row.group(1)] = row.group(2).replace("\\|", "|")
    return shapes


def check_shape(doc: Any, shape: str) -> None:
    """Fail unless ``doc`` has exactly the documented fields of ``shape``, each of its documented type."""
    spec = documented_shapes()[shape]
    assert isinstance(doc, dict), f"{shape}: expected an object, got {doc!r}"
    undocumented = set(doc) - set(spec)
    assert not undocumented, f"{shape}: fields not documented in docs/json.md: {sorted(undocumented)}"
    for name, kind in spec.items():
        optional = kind.endswith("?")
        if name not in doc:
            assert optional, f"{shape}: documented field {name!r} is missing from {doc!r}"
            continue
        _check_type(doc[name], kind.rstrip("?"), f"{shape}.{name}")


def _check_type(value: Any, kind: str, where: str) -> None:
    errors = []
    for alternative in kind.split("|"):
        try:
            _check_one(value, alternative.strip(), where)
            return
        except AssertionError as exc:
            errors.append(str(exc))
    raise AssertionError(f"{where}: {value!r} is not {kind} ({'; '.join(errors)})")


def _check_one(value: Any, kind: str, where: str) -> None:
    listed = re.match(r"^list\[(\w+)\]$", kind)
    if listed:
        assert isinstance(value, list), f"{where} is not a list"
        for i, item in enumerate(value):
            _check_type(item, listed.group(1), f"{where}[{i}]")
        return
    simple = {
        "null": lambda v: v is None,
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "any": lambda v: True,
        "time": lambda v: isinstance(v, str) and bool(TIME.match(v)),
    }
    if kind in simple:
        assert simple[kind](value), f"{where} is not {kind}"
    else:
        check_shape(value, kind)
