"""Who makes the decisions in the demo: a scripted operator, or the person at the terminal.

Both go through the same doors as any operator: :class:`interactive_celery.OperatorAPI` for the
scripted one, and the CLI's ``watch`` console (``interactive_celery/cli.py``) for a person. When
that console is not installed, a small line console over the operator API stands in for it.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from interactive_celery import InteractiveError, OperatorAPI

from .processes import APP, ROOT

OPEN = "open"
HEARTBEAT_EVERY_S = 2.0


@dataclass
class Fix:
    """What a person would do to remove the cause of a failure."""

    what: str                    # "put the file back"
    command: str                 # a shell command that does it
    apply: Callable[[], None]    # the same, from Python
    done: Callable[[], bool]     # is it fixed?


class Presence:
    """Keeps an operator online with a heartbeat every few seconds, as a console does."""

    def __init__(self, api: OperatorAPI):
        self.api = api
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.api.heartbeat()
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY_S):
            try:
                self.api.heartbeat()
            except InteractiveError:
                pass  # Redis is going away at the end of the demo

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)


class ScriptedOperator:
    """Makes the story's decisions through the operator API, and fixes causes itself."""

    interactive = False

    def __init__(self, api: OperatorAPI, say: Callable[[str], None]):
        self.api = api
        self.say = say
        self.presence = Presence(api)

    @property
    def name(self) -> str:
        return self.api.operator

    def come_online(self) -> None:
        self.presence.start()

    def fix(self, fix: Fix) -> None:
        self.say(f"   {self.name} fixes it: {fix.what}  ($ {fix.command})")
        fix.apply()

    def decide(self, task_id: str, decision: str, reason: str) -> None:
        result = self.api.decide(task_id, decision, reason=reason, wait=10)
        applied = f"applied by {result.applied_by}" if result.applied else "recorded, not applied yet"
        self.say(f"   {self.name} pressed {decision} on {task_id[:8]} ({reason}); {applied}")

    def stop(self) -> None:
        self.presence.stop()


class HumanOperator:
    """The person at the terminal decides, in the ``watch`` console embedded in the demo's terminal."""

    interactive = True

    def __init__(self, api: OperatorAPI, say: Callable[[str], None], env: dict[str, str]):
        self.api = api
        self.say = say
        self.env = env
        self.presence = Presence(api)
        self.watch_argv = watch_command()

    @property
    def name(self) -> str:
        return self.api.operator

    def come_online(self) -> None:
        # The demo session is the operator's console: keep them online between steps too.
        self.presence.start()

    def fix(self, fix: Fix) -> None:
        self.say(f"   To fix it: {fix.what}. In another terminal run\n       {fix.command}\n"
                 "   or press Enter and the demo does it for you.")
        while not fix.done():
            if _enter_pressed(0.3):
                fix.apply()
        self.say("   Fixed.")

    def decide(self, task_id: str, decision: str, reason: str) -> None:
        key = decision[0]
        while self._incident_state(task_id) == OPEN:
            if self.watch_argv:
                self.say(f"   Opening the watch console: select {task_id[:8]}, press {key} ({decision}), "
                         "y to confirm, type a reason or just Enter.\n   The console closes by itself once "
                         "the decision is recorded.")
                run_console(self.watch_argv, self.env, lambda: self._incident_state(task_id) != OPEN)
                if self._incident_state(task_id) == OPEN:
                    self.say("   The console closed before a decision. Press Enter to open it again "
                             "(Ctrl-C ends the demo).")
                    while not _enter_pressed(0.5):
                        pass
            else:
                line_console(self.api, task_id, decision, self.say)
        decided = [d for d in self.api.audit() if d.get("id") == task_id][-1:]
        for entry in decided:
            self.say(f"   {entry.get('operator')} pressed {entry.get('decision')} on {task_id[:8]}.")

    def _incident_state(self, task_id: str) -> str:
        return self.api.store.incident(task_id).get("state", "gone")

    def stop(self) -> None:
        self.presence.stop()


def _enter_pressed(timeout_s: float) -> bool:
    readable, _, _ = select.select([sys.stdin], [], [], timeout_s)
    if readable:
        sys.stdin.readline()
        return True
    return False


def watch_command() -> list[str] | None:
    """The CLI's ``watch`` console, if the CLI is installed in this tree (it is built separately)."""
    try:
        from interactive_celery import cli
    except ImportError:
        return None
    group = getattr(cli, "interactive", None)
    if group is None or "watch" not in getattr(group, "commands", {}):
        return None
    script = Path(sys.executable).parent / "interactive-celery"
    if script.exists():
        return [str(script), "-A", APP, "watch"]
    return [sys.executable, "-m", "celery", "-A", APP, "interactive", "watch"]


def run_console(argv: list[str], env: dict[str, str], finished: Callable[[], bool]) -> None:
    """Run the console in a pseudo-terminal wired to ours, until ``finished()``; then press q for the
    user. pexpect restores our terminal whatever the console does to its own."""
    import pexpect

    size = shutil.get_terminal_size()
    child = pexpect.spawn(argv[0], argv[1:], env=env, cwd=str(ROOT), dimensions=(size.lines, size.columns))
    stop = threading.Event()

    def close_when_finished() -> None:
        while not stop.is_set() and child.isalive():
            if finished():
                stop.wait(1.5)  # let the person see the console acknowledge the decision
                if child.isalive():
                    child.send("q")
                if not stop.wait(3) and child.isalive():
                    os.killpg(child.pid, signal.SIGTERM)
                return
            stop.wait(0.2)

    closer = threading.Thread(target=close_when_finished, name="console-closer", daemon=True)
    closer.start()
    try:
        child.interact(escape_character=None)
    finally:
        stop.set()
        if child.isalive():
            child.close(force=True)
        closer.join(timeout=5)
        print()


def line_console(api: OperatorAPI, task_id: str, decision: str, say: Callable[[str], None]) -> None:
    """A minimal stand-in for the ``watch`` console: one incident, keys r/f/i."""
    view = api.incident(task_id)
    say(f"   [{view['id'][:8]}] {view.get('task')} try {view.get('try')}: "
        f"{view.get('exc_type')}: {view.get('exc_message')}")
    say(f"   The story expects {decision}. Keys: r = retry, f = fail, i = details.")
    while True:
        sys.stdout.write("   > ")
        sys.stdout.flush()
        while not _readable(0.5):
            api.heartbeat()
        key = sys.stdin.readline().strip().lower()[:1]
        try:
            if key == "r":
                api.retry(task_id, reason="retried in the demo console")
                return
            if key == "f":
                api.fail(task_id, reason="failed in the demo console")
                return
            if key == "i":
                for item in api.history(task_id):
                    say(f"   try {item['try']} {item['outcome']} on {item.get('worker')}: "
                        f"{item.get('exc_type')}: {item.get('exc_message')}")
        except InteractiveError as exc:
            say(f"   {exc}")
            return


def _readable(timeout_s: float) -> bool:
    return bool(select.select([sys.stdin], [], [], timeout_s)[0])
