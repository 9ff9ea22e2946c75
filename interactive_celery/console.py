"""The live console behind ``interactive watch``.

It lists the open incidents once, then follows the operator stream from the position it had just
before that listing (XREAD on one key: it never scans the keyspace), so nothing written in between is
missed. A background thread heartbeats and reads the stream; the main thread owns the terminal.
Decisions go through the operator API like every other command; their effects come back through the
stream, so the console shows our own decisions and other operators' the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator

from rich.console import Console, Group, RenderableType
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from . import render
from .api import OperatorAPI
from .errors import InteractiveError

_VERBS = {"r": "retry", "f": "fail", "i": "ignore"}
_KEYS_HELP = " ↑/↓ or j/k select · r retry · f fail · i ignore · q quit "
_LOG_HEIGHT = 8
_DETAIL_FIELD_LINES = 8
_FINAL_EVENTS = {"incident.decided", "incident.succeeded", "incident.failed", "incident.ignored",
                 "incident.timed_out", "incident.superseded"}


@dataclass
class Prompt:
    """An operator's decision being entered: confirm, then (ignore only) a result, then a reason."""

    decision: str
    task_id: str
    task: str
    stage: str = "confirm"
    text: str = ""
    answers: dict[str, str] = field(default_factory=dict)


class KeyReader:
    """Single keys from a terminal in cbreak mode (Ctrl-C still interrupts); restores it on exit."""

    def __init__(self, stream):
        self.fd = stream.fileno()
        self._saved: Any = None

    def __enter__(self) -> "KeyReader":
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: Any) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout_s: float) -> list[str]:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return []
        return split_keys(os.read(self.fd, 256).decode("utf-8", "ignore"))


def split_keys(data: str) -> list[str]:
    """Characters, with arrow-key escape sequences folded into ``up``/``down`` and a lone ESC as ``esc``."""
    keys, i = [], 0
    while i < len(data):
        if data[i] == "\x1b":
            seq = data[i:i + 3]
            if seq in ("\x1b[A", "\x1bOA", "\x1b[B", "\x1bOB"):
                keys.append("up" if seq[2] == "A" else "down")
                i += 3
                continue
            if seq[1:2] in ("[", "O"):  # another escape sequence: skip it whole
                i += 3
                continue
            keys.append("esc")
        else:
            keys.append(data[i])
        i += 1
    return keys


class Watch:
    def __init__(self, api: OperatorAPI, console: Console, *, everyone: bool = False, heartbeat_s: float = 30.0):
        self.api = api
        self.console = console
        self.everyone = everyone
        self.heartbeat_s = heartbeat_s
        self.incoming: queue.Queue = queue.Queue()
        self.open: dict[str, dict[str, Any]] = {}
        self.details: dict[str, dict[str, Any]] = {}
        self.selected: str | None = None
        self.log: deque[Text] = deque(maxlen=100)
        self.status = ""
        self.prompt: Prompt | None = None
        self.hidden: set[str] = set()  # incidents addressed to others (without --everyone)
        self._stop = threading.Event()

    # -- shared by both modes ---------------------------------------------------------------------

    def run(self) -> None:
        self.api.heartbeat()  # fails fast, with exit 3, when Redis is away
        # Position first, listing second: an incident opened in between shows up in both, never in neither.
        position = self.api.stream_position()
        for view in sorted(self.api.incidents("open", limit=500), key=lambda v: v.get("opened_at") or ""):
            if self.everyone or self.api.addressed_to_me(view):
                self.open[view["id"]] = view
            else:
                self.hidden.add(view["id"])
        follower = threading.Thread(target=self._follow, args=(position,), name="interactive-watch", daemon=True)
        follower.start()
        try:
            with sigterm_as_interrupt():
                if self.console.is_terminal and sys.stdin.isatty():
                    self._run_terminal()
                else:
                    self._run_plain()
        except KeyboardInterrupt:
            pass  # leaving the console is the normal way out
        finally:
            self._stop.set()
            follower.join(timeout=3)

    def _follow(self, position: str) -> None:
        next_beat, down = time.monotonic() + self.heartbeat_s, False
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_beat:
                    self.api.heartbeat()
                    next_beat = time.monotonic() + self.heartbeat_s
                events = self.api.events(position, block_s=1.0)
                if down:
                    down = False
                    self.incoming.put(("recovered", None))
                for event in events:
                    position = event["stream_id"]
                    self.incoming.put(("event", event))
            except InteractiveError as exc:
                # Keep the console up through a Redis outage; say so once, and retry.
                if not down:
                    self.incoming.put(("down", exc))
                down = True
                self._stop.wait(2.0)

    def _absorb(self, event: dict[str, Any]) -> bool:
        """Update the open list from one stream message; False if it concerns an incident addressed
        to other operators, which this console does not show."""
        task_id, kind = event.get("id") or "", event.get("type")
        self.details.pop(task_id, None)
        if kind == "incident.opened":
            if not (self.everyone or self.api.addressed_to_me(event)):
                self.hidden.add(task_id)
                return False
            self.hidden.discard(task_id)
            try:
                view = self.api.incident(task_id)
            except InteractiveError:
                return True
            if view.get("state") == "open":
                self.details[task_id] = view
                self.open[task_id] = view
        elif kind in _FINAL_EVENTS:
            self.open.pop(task_id, None)
        return task_id not in self.hidden

    # -- plain lines --------------------------------------------------------------------------------

    def _run_plain(self) -> None:
        _line(f"watching as {self.api.operator}: {len(self.open)} open incident(s); Ctrl-C to stop")
        for view in self.open.values():
            _line(render.incident_line(view))
        while True:
            try:
                kind, item = self.incoming.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "event":
                if self._absorb(item):
                    _line(render.event_line(item))
            elif kind == "down":
                print(f"warning: {item}; retrying", file=sys.stderr, flush=True)
            elif kind == "recovered":
                print("Redis is reachable again", file=sys.stderr, flush=True)

    # -- the terminal console -------------------------------------------------------------------------

    def _run_terminal(self) -> None:
        with KeyReader(sys.stdin) as keys, Live(console=self.console, screen=True, auto_refresh=False,
                                                redirect_stdout=False, redirect_stderr=False) as live:
            last_draw = 0.0
            while True:
                changed = self._drain()
                for key in keys.read(0.2):
                    if self._on_key(key) == "quit":
                        return
                    changed = True
                # Redraw at least once a second so ages and time left stay current.
                if changed or time.monotonic() - last_draw >= 1.0:
                    live.update(self._screen(), refresh=True)
                    last_draw = time.monotonic()

    def _drain(self) -> bool:
        changed = False
        while True:
            try:
                kind, item = self.incoming.get_nowait()
            except queue.Empty:
                return changed
            changed = True
            if kind == "event":
                if not self._absorb(item):
                    continue
                mine = item.get("operator") == self.api.operator
                style = "bold magenta" if item.get("type") == "incident.decided" and not mine else None
                self._say(render.event_line(item, full_ids=False), style)
            elif kind == "down":
                self.status = f"Redis unreachable, retrying: {item}"
            elif kind == "recovered":
                self.status = ""

    def _say(self, text: str, style: str | None = None) -> None:
        self.log.append(Text(text, style=style or ""))

    def _ordered(self) -> list[str]:
        ids = list(self.open)
        if self.selected not in self.open:
            self.selected = ids[0] if ids else None
        return ids

    def _on_key(self, key: str) -> str | None:
        if self.prompt is not None:
            self._on_prompt_key(key)
            return None
        ids = self._ordered()
        if key == "q":
            return "quit"
        if key in ("up", "k", "down", "j") and ids:
            step = -1 if key in ("up", "k") else 1
            self.selected = ids[max(0, min(len(ids) - 1, ids.index(self.selected) + step))]
        elif key in _VERBS:
            if self.selected is None:
                self._say("no incident selected", "yellow")
            else:
                view = self.open[self.selected]
                self.prompt = Prompt(_VERBS[key], self.selected, view.get("task") or "?")
        return None

    def _on_prompt_key(self, key: str) -> None:
        p = self.prompt
        assert p is not None
        if p.stage == "confirm":
            if key in ("y", "Y"):
                p.stage = "result" if p.decision == "ignore" else "reason"
            else:
                self.prompt = None
                self._say(f"{p.decision} of {render.short(p.task_id)} cancelled")
            return
        if key == "esc":
            self.prompt = None
            self._say(f"{p.decision} of {render.short(p.task_id)} cancelled")
        elif key in ("\r", "\n"):
            p.answers[p.stage], p.text = p.text, ""
            if p.stage == "result":
                p.stage = "reason"
            else:
                self.prompt = None
                self._submit(p)
        elif key in ("\x7f", "\x08"):
            p.text = p.text[:-1]
        elif len(key) == 1 and key.isprintable():
            p.text += key

    def _submit(self, p: Prompt) -> None:
        try:
            raw = p.answers.get("result", "").strip()
            result = json.loads(raw) if raw else None
        except ValueError as exc:
            self._say(f"not sent: the result must be JSON ({exc})", "red")
            return
        try:
            # wait=0: the worker's progress arrives on the stream, so the console never blocks on it.
            self.api.decide(p.task_id, p.decision, reason=p.answers.get("reason") or None, wait=0, result=result)
        except InteractiveError as exc:
            self._say(f"refused: {exc}", "red")
            return
        self._say(f"{p.decision} of {render.short(p.task_id)} recorded; waiting for a worker to apply it", "green")

    def _detail(self, task_id: str, height: int) -> RenderableType:
        view = self.details.get(task_id)
        if view is None:
            try:
                view = self.details[task_id] = self.api.incident(task_id)
            except InteractiveError as exc:
                return Text(str(exc), style="red")
        tries = len(view.get("tries") or [])
        # Fit the traceback's tail into what the fields and the tries table leave of the panel.
        spare = height - _DETAIL_FIELD_LINES - (tries + 2 if tries > 1 else 0) - 2
        return render.incident_detail(view, traceback_lines=max(3, spare))

    def _screen(self) -> Layout:
        ids = self._ordered()
        list_h, detail_h, log_h = _heights(self.console.height, len(ids))
        if self.selected is None:  # nothing to detail: give the room to the activity log
            detail_h, log_h = 0, log_h + detail_h
        news = self.status or (self.log[-1].plain if self.log and log_h <= 2 else "")
        header = Text(f" interactive · {self.api.operator} online · {len(ids)} open" + (f" · {news}" if news else ""),
                      style="bold white on red" if self.status else "bold white on blue", no_wrap=True,
                      overflow="ellipsis")
        # Show a window of rows that keeps the selected incident in view.
        rows = max(1, list_h - 4)
        at = ids.index(self.selected) if self.selected in ids else 0
        window = ids[max(0, min(at - rows // 2, len(ids) - rows)):][:rows]
        listing: RenderableType = (
            render.incidents_table([self.open[i] for i in window], selected=self.selected, live=True)
            if ids else Text("no open incidents; waiting for failures…", style="dim"))
        parts = [Layout(header, size=1),
                 Layout(Panel(listing, title=f"open incidents ({len(ids)})", title_align="left"), size=list_h)]
        if detail_h > 2:
            detail = self._detail(self.selected, detail_h - 2) if self.selected else Text("")
            parts.append(Layout(Panel(detail, title="selected", title_align="left"), size=detail_h))
        if log_h > 2:
            log = Group(*list(self.log)[-(log_h - 2):]) if self.log else Text("no activity yet", style="dim")
            parts.append(Layout(Panel(log, title="activity", title_align="left"), size=log_h))
        parts.append(Layout(self._footer(), size=1))
        layout = Layout()
        layout.split_column(*parts)
        return layout

    def _footer(self) -> Text:
        p = self.prompt
        if p is None:
            return Text(_KEYS_HELP, style="reverse")
        what = f"{p.decision.capitalize()} {render.short(p.task_id)} {p.task}"
        if p.stage == "confirm":
            return Text(f" {what}? [y/N] ", style="bold black on yellow")
        label = "Result as JSON (Enter for null)" if p.stage == "result" else f"Reason for {p.decision} (optional)"
        return Text(f" {label}: {p.text}█  (Enter to send, Esc to cancel)", style="bold black on yellow")


def _heights(screen: int, incidents: int) -> tuple[int, int, int]:
    """Rows for the incident list, the selected incident and the activity log. The header and the
    footer (where prompts appear) always get theirs; a small terminal loses the log first."""
    room = max(0, screen - 2)
    list_h = min(min(incidents, 8) + 4, max(4, room // 2))
    rest = room - list_h
    log_h = _LOG_HEIGHT if rest >= _LOG_HEIGHT + 10 else (rest // 3 if rest >= 9 else 0)
    return list_h, rest - log_h, log_h


def _line(text: str) -> None:
    print(text, flush=True)  # flushed per line so a pipe or a log sees each event as it happens


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM (a service manager, ``kill``) end a long-running command as cleanly as Ctrl-C:
    the terminal is restored and the exit status is 0."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
