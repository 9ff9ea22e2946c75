"""`make demo` end to end: the story on real processes, and nothing left running afterwards.

Every Python process the demo starts inherits its environment, so a unique INTERACTIVE_DEMO_TAG in
the demo's environment finds them in /proc: the worker and its pool, Flower, the watch console.
redis-server rewrites its process title over its environment, so it is found by its port instead.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import redis

from interactive_celery.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent
DEMO = [sys.executable, "-m", "examples.demo"]

pytestmark = pytest.mark.e2e


def tagged(tag: str) -> dict[int, str]:
    """pid -> command line of every live process whose environment carries the tag."""
    marker = f"INTERACTIVE_DEMO_TAG={tag}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # a zombie is already dead; only its parent's wait() is pending
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return found


class Census(threading.Thread):
    """Records every tagged process seen while the demo runs, so the final 'none left' is not vacuous."""

    def __init__(self, tag: str):
        super().__init__(daemon=True)
        self.tag = tag
        self.seen: dict[int, str] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.seen.update(tagged(self.tag))

    def kinds(self) -> set[str]:
        names = {" worker ": "worker", " flower ": "flower", " watch": "console"}
        return {kind for cmd in self.seen.values() for needle, kind in names.items() if needle in cmd}


def demo_env(tag: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(INTERACTIVE_DEMO_TAG=tag, PYTHONUNBUFFERED="1", **extra)
    return env


def redis_servers(port: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace") if entry.name.isdigit() else ""
        except OSError:
            continue
        if "redis-server" in cmd and f":{port}" in cmd:
            found.append(int(entry.name))
    return found


def assert_nothing_left(tag: str) -> None:
    # The demo waits for every child it stops; the grace is only for the kernel to finish reaping.
    wait_for(lambda: not tagged(tag), timeout=10, what=f"demo processes to be gone: {tagged(tag)}")


def test_scripted_demo_tells_the_story_and_stops_everything_it_started():
    """`make demo ARGS=--scripted` on a fresh embedded Redis: every flow ends as the story says, the
    summary is printed, it exits 0, and no redis-server, worker or Flower is left running."""
    tag = uuid.uuid4().hex
    census = Census(tag)
    census.start()
    try:
        run = subprocess.run([*DEMO, "--scripted"], cwd=ROOT, env=demo_env(tag), stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=300)
    finally:
        census.done.set()
        census.join()
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "embedded redis-server" in out
    assert re.search(r"Flower\s+http://127\.0\.0\.1:\d+", out)
    for line in ("FAILURE: BatchMissing", "is AWAITING_OPERATOR: PartnerUnavailable", "pressed retry",
                 "pressed fail", "it times out", "All 9 flows match the story."):
        assert line in out
    assert census.kinds() >= {"worker", "flower"}, census.seen
    assert_nothing_left(tag)
    port = int(re.search(r"Redis\s+redis://127\.0\.0\.1:(\d+)", out).group(1))
    assert not redis_servers(port)


def test_ctrl_c_on_a_shared_redis_stops_everything_and_removes_the_demo_keys(redis_url):
    """With REDIS_URL reachable the demo uses it under its own key prefix and queue; a Ctrl-C while
    a flow is parked stops every process and deletes what the demo wrote there."""
    tag = uuid.uuid4().hex
    census = Census(tag)
    census.start()
    demo = subprocess.Popen([*DEMO, "--scripted"], cwd=ROOT, env=demo_env(tag, REDIS_URL=redis_url),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        for line in demo.stdout:
            lines.append(line)
            if "is AWAITING_OPERATOR" in line:
                break
        prefix = re.search(r"key prefix '([^']+)'", "".join(lines)).group(1)
        client = redis.Redis.from_url(redis_url)
        assert prefix.startswith("demo-")
        assert client.exists(f"{{{prefix}}}:stream")
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
        census.done.set()
        census.join()
    out = "".join(lines) + rest
    assert demo.returncode == 130, out
    assert "Interrupted: stopping everything the demo started." in out
    assert "REDIS_URL" in out and "embedded" not in out
    assert census.kinds() >= {"worker", "flower"}, census.seen
    assert_nothing_left(tag)
    assert not list(client.scan_iter(match=f"{{{prefix}}}:*"))
    client.close()


def test_demo_killed_outright_still_leaves_no_process_behind():
    """Even `kill -9` of the demo, which runs no clean-up at all, takes its redis-server, worker and
    Flower down with it (each child asked the kernel for SIGTERM when its parent dies)."""
    tag = uuid.uuid4().hex
    census = Census(tag)
    census.start()
    demo = subprocess.Popen([*DEMO, "--scripted"], cwd=ROOT, env=demo_env(tag), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("1. "):
                break
        demo.kill()
        demo.wait(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
        census.done.set()
        census.join()
    assert census.kinds() >= {"worker", "flower"}, census.seen
    port = int(re.search(r"Redis\s+redis://127\.0\.0\.1:(\d+)", "".join(lines)).group(1))
    wait_for(lambda: not tagged(tag) and not redis_servers(port), timeout=30,
             what=f"orphans to go: {tagged(tag)} {redis_servers(port)}")
    # Its temporary folder is the one thing a killed demo cannot remove.
    inbox = Path(re.search(r"Inbox\s+(\S+)", "".join(lines)).group(1))
    shutil.rmtree(inbox.parent, ignore_errors=True)


def test_interactive_demo_embeds_the_watch_console():
    """On a terminal the person decides in the CLI's watch console, shown inside the demo: Enter
    applies each fix, then r/f, y and Enter decide; the closing table matches the story."""
    pexpect = pytest.importorskip("pexpect")
    tag = uuid.uuid4().hex
    census = Census(tag)
    census.start()
    child = pexpect.spawn(DEMO[0], DEMO[1:], cwd=str(ROOT), env=demo_env(tag, INTERACTIVE_OPERATOR="bob"),
                          encoding="utf-8", timeout=120, dimensions=(40, 150))
    child.logfile_read = transcript = io.StringIO()

    def decide(key: str) -> None:
        child.expect("Opening the watch console")
        child.expect("open incidents")  # the console has drawn its screen
        child.expect(r"1 open")
        child.send(key)
        child.expect(r"\[y/N\]")
        child.send("y")
        child.expect("Reason for")
        child.send("\r")
        child.expect(f"bob pressed {'retry' if key == 'r' else 'fail'}")

    try:
        child.expect("you are the operator")
        for key, fix in (("r", True), ("f", False), ("r", True)):
            if fix:
                child.expect("press Enter and the demo does it for you")
                child.sendline("")
            decide(key)
        child.expect("All 8 flows match the story.")
        child.expect("Press Enter to stop everything")
        child.sendline("")
        child.expect(pexpect.EOF)
    finally:
        if child.isalive():  # a failed expectation: end the demo the way a person would, with Ctrl-C
            child.kill(signal.SIGINT)
            child.expect(pexpect.EOF, timeout=60)
        child.close(force=True)
        census.done.set()
        census.join()
        # Shown by pytest only when the test fails: what the person would have seen.
        print(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", transcript.getvalue())[-20000:])
    assert child.exitstatus == 0
    assert census.kinds() >= {"worker", "flower", "console"}, census.seen
    assert_nothing_left(tag)
    port = int(re.search(r"Redis\s+redis://127\.0\.0\.1:(\d+)", transcript.getvalue()).group(1))
    assert not redis_servers(port)


def test_summary_reports_a_flow_that_did_not_end_as_the_story_says():
    """The closing table's verdict: a wrong state, a missing incident or another decision is a
    mismatch, and render() then returns False (the demo exits 1)."""
    from rich.console import Console

    from examples.report import Observed, render
    from examples.story import Flow

    expected = Flow("import hooli", "a" * 36, "SUCCESS", ("retry",), "succeeded")
    good = Observed(expected, "SUCCESS", "ok", "succeeded", [], [{"decision": "retry", "operator": "bob"}])
    bad = Observed(expected, "FAILURE", "BatchMissing", "failed", [], [{"decision": "fail", "operator": "bob"}])
    assert good.problems == []
    assert len(bad.problems) == 3
    console = Console(file=open(os.devnull, "w"), width=200)
    assert render([good], console) is True
    assert render([good, bad], console) is False
