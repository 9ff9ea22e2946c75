"""The README's "Ten lines" walkthrough, run as a new user runs it: its ``proj.py`` and its commands,
as real processes. Only the Redis URL (this test's server, database 11, which the test empties) and the
invoice file's path (under tmp_path) are changed, so the README cannot drift from what works."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from interactive_celery.config import Settings
from interactive_celery.keys import Keys
from interactive_celery.testing import die_with_parent, wait_for
from tests.cli_helpers import BIN, ROOT, run_cli

pytestmark = pytest.mark.e2e

README = (ROOT / "README.md").read_text()
SECTION = README[README.index("## Ten lines"):README.index("Interactive mode for one call of *any* task")]
README_URL = "redis://localhost:6379/0"
README_FILE = "/tmp/invoices.csv"


def _block(after: str, lang: str = "") -> str:
    match = re.search(re.escape(after) + r".*?```" + lang + r"\n(.*?)```", SECTION, re.S)
    assert match, f"no code block after {after!r} in the README's Ten lines"
    return match.group(1)


def _command(pattern: str) -> list[str]:
    match = re.search(pattern, SECTION)
    assert match, f"no `{pattern}` in the README's Ten lines"
    return shlex.split(match.group(1))


def _run(argv: list[str], cwd, env) -> subprocess.CompletedProcess:
    proc = run_cli(argv, env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_ten_lines_walkthrough_parks_and_an_operator_retry_returns_42(redis_url, tmp_path):
    url = urlunsplit(urlsplit(redis_url)._replace(path="/11"))  # proj.py uses Celery's default keys
    code = _block("Save this as `proj.py`:", "python")
    assert README_URL in code
    (tmp_path / "proj.py").write_text(code.replace(README_URL, url))
    invoices = tmp_path / "invoices.csv"
    caller = shlex.split(_block("in a third call").strip().replace(README_FILE, str(invoices)))
    contents = _command(r"`printf ('.*?') > " + re.escape(README_FILE) + "`")[0]
    # The venv's bin first on PATH, as after `source .venv/bin/activate`.
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "INTERACTIVE_OPERATOR": "alice"}

    spawn = dict(cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                 preexec_fn=die_with_parent)
    worker = subprocess.Popen(_command(r"run a worker \(`([^`]+)`\)"), **spawn)
    watch = subprocess.Popen(_command(r"come online as an operator\s*\(`([^`]+)`\)"), **spawn)
    call = None
    try:
        wait_for(lambda: _operators(url), timeout=60, what="watch to bring the operator online")
        call = subprocess.Popen(caller, **spawn)

        def parked() -> list:
            listing = _run(["celery", "-A", "proj", "interactive", "list", "--json"], tmp_path, env)
            return json.loads(listing.stdout)["incidents"]
        incident = wait_for(parked, timeout=60, what="the README's failure to park")[0]
        assert incident["exc_type"] == "FileNotFoundError"

        invoices.write_text(contents.encode().decode("unicode_escape"))
        retry = _command(r"or run\s*`([^`]+)`")
        assert retry[-1] == "<id>"
        _run([*retry[:-1], incident["id"][:8]], tmp_path, env)
        out, _ = call.communicate(timeout=60)
        assert out.strip().splitlines()[-1] == "42", out
        watch.terminate()
        shown, _ = watch.communicate(timeout=30)
        assert incident["id"][:8] in shown, shown
    finally:
        for proc in (call, watch, worker):
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        redis.Redis.from_url(url).flushdb()


def _operators(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return client.zcard(Keys(Settings.key_prefix).presence)
