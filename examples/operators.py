"""Who makes the decisions in the demo: a scripted operator, or the person at the terminal.

Both go through the same doors as any operator: :class:`interactive_celery.OperatorAPI` for the
scripted one, and the CLI's ``watch`` console (``interactive_celery/cli.py``) for a person.
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


class _Operator:
    """What both operators share: a name, and presence kept while the demo runs."""

    def __init__(self, api: OperatorAPI, say: Callable[[str], None]):
        self.api = api
        self.say = say
        self.presence = Presence(api)

    @property
    def name(self) -> str:
        return self.api.operator

    def come_online(self) -> None:
        # The demo session is the operator's console: keep them online between steps too.
        self.presence.start()

    def stop(self) -> None:
        self.presence.stop()


class ScriptedOperator(_Operator):
    """Makes the story's decisions through the operator API, and fixes causes itself."""

    interactive = False

    def fix(self, fix: Fix) -> None:
        self.say(f"   {self.name} fixes it: {fix.what}  ($ {fix.command})")
        fix.apply()

    def decide(self, task_id: str, decision: str, reason: str) -> None:
        result = self.api.decide(task_id, decision, reason=reason, wait=10)
        applied = f"applied by {result.applied_by}" if result.applied else "recorded, not applied yet"
        self.say(f"   {self.name} pressed {decision} on {task_id[:8]} ({reason}); {applied}")


class HumanOperator(_Operator):
    """The person at the terminal decides, in the ``watch`` console embedded in the demo's terminal."""

    interactive = True

    def __init__(self, api: OperatorAPI, say: Callable[[str], None], env: dict[str, str]):
        super().__init__(api, say)
        self.env = env
        self.watch_argv = watch_command()

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
            self.say(f"   Opening the watch console: select {task_id[:8]}, press {key} ({decision}), "
                     "y to confirm, type a reason or just Enter.\n   The console closes by itself once "
                     "the decision is recorded.")
            run_console(self.watch_argv, self.env, lambda: self._incident_state(task_id) != OPEN)
            if self._incident_state(task_id) == OPEN:
                self.say("   The console closed before a decision. Press Enter to open it again "
                         "(Ctrl-C ends the demo).")
                while not _enter_pressed(0.5):
                    pass
        decided = [d for d in self.api.audit() if d.get("id") == task_id][-1:]
        for entry in decided:
            self.say(f"   {entry.get('operator')} pressed {entry.get('decision')} on {task_id[:8]}.")

    def _incident_state(self, task_id: str) -> str:
        return self.api.store.incident(task_id).get("state", "gone")


def _enter_pressed(timeout_s: float) -> bool:
    readable, _, _ = select.select([sys.stdin], [], [], timeout_s)
    if readable:
        sys.stdin.readline()
        return True
    return False


def watch_command() -> list[str]:
    """The CLI's ``watch`` console, as the standalone script installed next to this Python."""
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
