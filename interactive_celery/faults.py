"""Crash points for the fault suite: a process dies at a named step when told to by environment.

``INTERACTIVE_CELERY_CRASH_AT=<point>`` makes the process that reaches ``<point>`` exit at once
(``os._exit``, no clean-up, like ``kill -9``). Points sit only on failure and decision paths, never
on the success path of a first try. Two more variables shape the crash:

- ``INTERACTIVE_CELERY_CRASH_ONCE=<path>``: only the first process to reach the point dies; it
  creates ``<path>`` (exclusively) as it goes, and later processes pass. Without it, every process
  that reaches the point dies, so a surviving worker main process would redeliver into the same crash.
- ``INTERACTIVE_CELERY_CRASH_GROUP=1``: kill the whole process group (a worker's main process and
  every pool child, as when its machine or container dies) instead of this process alone.

Points:

=======================  ===============================================================
``park.before``          a try failed; before the park script runs
``park.after``           the park script ran; before AWAITING_OPERATOR is stored
``apply.claimed``        an applier ran apply.lua (fence bumped); before it sends
``apply.sent``           the applier sent the message; before it acknowledges the entry
``try.started``          an operator-issued try was admitted; before the body runs
``try.finished``         an operator-issued try's body returned; before finish.lua runs
=======================  ===============================================================
"""

from __future__ import annotations

import os
import signal

ENV = "INTERACTIVE_CELERY_CRASH_AT"
ONCE_ENV = "INTERACTIVE_CELERY_CRASH_ONCE"
GROUP_ENV = "INTERACTIVE_CELERY_CRASH_GROUP"
POINTS = ("park.before", "park.after", "apply.claimed", "apply.sent", "try.started", "try.finished")


def crash_point(name: str) -> None:
    if os.environ.get(ENV) != name or not _first_to_crash():
        return
    if os.environ.get(GROUP_ENV) == "1":
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(137)


def _first_to_crash() -> bool:
    marker = os.environ.get(ONCE_ENV)
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True
