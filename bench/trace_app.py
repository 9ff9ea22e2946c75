"""``bench.app`` with timing probes around each step an operator retry takes inside a worker.

Used only by ``python -m bench.profile_retry`` (``celery -A bench.trace_app worker``). Each probe
appends ``step start end`` (unix seconds) to a file per process in ``$BENCH_TRACE_DIR``.
"""

from __future__ import annotations

import functools
import os
import time

from interactive_celery import store as store_module, worker as worker_module

from bench.app import app  # noqa: F401  (the app `celery -A bench.trace_app` finds)

_files: dict[int, object] = {}


def _log(line: str) -> None:
    pid = os.getpid()  # prefork children get their own file
    out = _files.get(pid)
    if out is None:
        out = _files[pid] = open(os.path.join(os.environ["BENCH_TRACE_DIR"], f"trace-{pid}.log"), "a", buffering=1)
    out.write(line)


def _probe(cls, name: str) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        start = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            _log(f"{name} {start:.6f} {time.time():.6f}\n")

    setattr(cls, name, timed)


for _name in ("apply_entry", "superseded", "send"):
    _probe(worker_module.Applier, _name)
for _name in ("apply", "start_try", "finish"):
    _probe(store_module.Store, _name)
