"""Worker bootstep: apply operators' decisions, expire deadlines, reconcile with Celery.

Every worker runs it. Decisions arrive on a Redis stream read through one consumer group, so exactly
one worker applies each; an entry whose worker died is claimed again (XAUTOCLAIM). Deadlines live in
a sorted set and are expired by compare-and-set, so any number of workers can sweep at once. We never
use countdown/ETA messages as timers: on the Redis transport an unacked scheduled message is
redelivered after ``visibility_timeout`` and runs again (kombu#337, celery#2481).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any

from celery import bootsteps
from celery.app.task import Context
from celery.backends.base import BaseKeyValueStoreBackend
from celery.states import PENDING, READY_STATES, REVOKED
from celery.worker import state as worker_state
from kombu.serialization import loads, prepare_accept_content

from . import incidents
from .attach import enable_plain_tasks
from .config import settings_for
from .errors import IncompatibleRedis, InteractiveError, RedisUnavailable
from .faults import crash_point
from .store import MIN_REDIS, Applied, Ended, Store, same_database, store_for
from .task import AWAITING_OPERATOR, HEADER, InteractiveTask, flow_params, parked_meta

logger = logging.getLogger("interactive_celery")

CLAIM_EVERY_S = 1.0
RECONCILE_EVERY_S = 5.0
RECONCILE_PAGE = 200
SWEEP_BATCH = 500
FALLBACK_BUDGET_S = 0.25


def check_server(store: Store) -> dict[str, Any]:
    """Refuse Redis older than 6.2; warn about eviction policies that could drop our keys."""
    info = store.server_info()
    version = tuple(int(p) for p in info["redis_version"].split(".")[:2] if p.isdigit())
    if version < MIN_REDIS:
        raise IncompatibleRedis(f"Redis {info['redis_version']} is too old; interactive_celery needs >= 6.2")
    if info["maxmemory_policy"] != "noeviction":
        logger.warning(
            "interactive: Redis maxmemory-policy is %r; incidents, Celery results and chord counters "
            "carry TTLs and can be evicted. Set maxmemory-policy noeviction.", info["maxmemory_policy"])
    return info


def decode_message(fields: dict[str, str], accept: Any = None) -> dict[str, Any]:
    """The stored message. ``accept`` is the app's ``accept_content``: without it kombu refuses
    pickle, so a pickle task's decision could never be applied."""
    data = base64.b64decode(fields["body"])
    return loads(data, fields["content_type"], fields["content_encoding"],
                 accept=prepare_accept_content(accept) if accept else None)


class Applier:
    """Applies decisions and runs the sweeper for one worker. Usable without a worker in tests."""

    def __init__(self, app, hostname: str, task_events=lambda: True):
        self.app = app
        self.hostname = hostname
        self.task_events = task_events  # whether this worker sends task events now (-E, enable_events)
        self.settings = settings_for(app)
        self.store = store_for(app)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Cleared while the sweeper drains a backlog of due deadlines: the applier waits, so a burst
        # of timeouts is recorded before its replays compete for the GIL and the CPUs (100k due
        # deadlines: 10-23k transitions/s with the replays running alongside; make bench, issue 6).
        self._no_backlog = threading.Event()
        self._no_backlog.set()
        # With the results in our Redis database the apply script reads the flow's Celery state
        # itself; otherwise the applier asks the backend first (one more round trip per decision).
        self._result_key = app.backend.get_key_for_task if same_database(self.store.client, app.backend) else None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        for task in self.app.tasks.values():  # validate every task's parameters at startup
            if isinstance(task, InteractiveTask):
                flow_params(task)
        try:
            check_server(self.store)
            self.store.load_scripts()
        except RedisUnavailable as exc:
            # Keep the worker up: its tasks still run, failures fall back to plain Celery failures,
            # and the threads below keep trying to reach Redis.
            logger.error("interactive: %s; failures will fail plainly until it is back", exc)
        for target, name in ((self._apply_loop, "applier"), (self._sweep_loop, "sweeper"),
                             (self._upkeep_loop, "upkeep")):
            thread = threading.Thread(target=target, name=f"interactive-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _loop(self, body, pause_s: float) -> None:
        while not self._stop.is_set():
            try:
                body()
            except InteractiveError as exc:
                logger.warning("interactive: %s; retrying in %.1fs", exc, pause_s)
                self._stop.wait(pause_s)
            except Exception:  # never let a bad entry kill the thread
                logger.exception("interactive: unexpected error in %s", threading.current_thread().name)
                self._stop.wait(pause_s)

    # -- applying decisions -----------------------------------------------------------------------

    def _apply_loop(self) -> None:
        last_claim = [0.0]
        grouped = [False]

        def once() -> None:
            if not grouped[0]:
                self.store.ensure_group()
                grouped[0] = True
            try:
                entries = self.store.read_decisions(self.hostname, block_ms=1000)
            except InteractiveError:
                grouped[0] = False  # the stream may have been deleted (NOGROUP): create it again
                raise
            self._apply_entries(entries)
            # Stale entries only after the fresh ones: a claim run first put one more round trip
            # in front of a new decision about once a second (make bench, issue 6).
            if time.monotonic() - last_claim[0] > CLAIM_EVERY_S:
                last_claim[0] = time.monotonic()
                self._apply_entries(self.store.claim_stale_decisions(
                    self.hostname, min_idle_ms=int(self.settings.claim_idle_s * 1000)))

        self._loop(once, 1.0)

    def _apply_entries(self, entries: list) -> None:
        for entry_id, fields in entries:
            while not self._no_backlog.wait(1.0) and not self._stop.is_set():
                pass
            try:
                self.apply_entry(fields)
            except InteractiveError:
                raise  # Redis trouble: the entry stays pending and is claimed again later
            except Exception:
                # Data no retry can fix (a record edited by hand): say so once and move on, or
                # every later decision read with it would wait for the claim.
                logger.exception("interactive: cannot apply decision entry %s %.200r; dropping it",
                                 entry_id, fields)
            crash_point("apply.sent")
            self.store.ack_decision(entry_id)

    def apply_entry(self, fields: dict[str, str]) -> bool:
        """Apply one decision entry; True if a message was sent."""
        try:
            task_id, try_no = fields["id"], int(fields["try"])
        except (KeyError, ValueError, TypeError):
            logger.warning("interactive: skipping malformed decision entry %r", fields)
            return False
        result_key = self._result_key and self._result_key(task_id).decode()
        if (not result_key or task_id in worker_state.revoked) and self.superseded(task_id):
            return False
        now = time.time()
        applied = self.store.apply(task_id, try_no, now=now, worker=self.hostname,
                                   fallback_at=now + self.settings.replay_fallback_s, celery_key=result_key)
        if isinstance(applied, Ended):
            if self.superseded(task_id, applied.celery_state):
                return False
            applied = self.store.apply(task_id, try_no, now=now, worker=self.hostname,
                                       fallback_at=now + self.settings.replay_fallback_s)
        if applied is None:
            return False
        crash_point("apply.claimed")
        self.send(task_id, applied)
        logger.info("interactive: applied %s to %s (try %s) on %s", applied.decision, task_id,
                    applied.try_no, self.hostname)
        return True

    def superseded(self, task_id: str, celery_state: str | None = None) -> bool:
        """Close the incident if Celery already ended the flow (revoked, finished elsewhere).
        ``celery_state`` is the flow's state in the result backend, when the caller has read it."""
        if celery_state is None:
            celery_state = self.app.AsyncResult(task_id).state
        if task_id in worker_state.revoked or celery_state == REVOKED:
            why, celery_state = "the task was revoked", REVOKED
            # Workers discard a revoked id, so a re-send would never run; store REVOKED so get() ends.
            self.app.backend.mark_as_revoked(task_id, "revoked while waiting for an operator",
                                             request=Context(id=task_id))
        elif celery_state in READY_STATES:
            why = f"Celery already stored {celery_state}"
        else:
            return False
        if self.store.supersede(task_id, now=time.time(), why=why, celery_state=celery_state)[0] == "ok":
            logger.info("interactive: %s superseded: %s", task_id, why)
        return True

    def send(self, task_id: str, applied: Applied) -> None:
        payload = decode_message(applied.message, self.app.conf.accept_content)
        params = {**(payload.get("params") or {}), **applied.options}
        header = {"v": 1, "try": applied.try_no, "fence": applied.fence, "params": params}
        if applied.decision != "retry":
            header["replay"] = applied.decision
        signature = self.app.signature(payload["task"], tuple(payload["args"]), payload["kwargs"],
                                       payload["options"])
        if applied.decision == "retry" and self.task_events():
            # Flower leaves the custom AWAITING_OPERATOR state on task-retried; RECEIVED, STARTED and
            # SUCCESS from the new try follow, so it goes out before the message. Not sent when the
            # worker sends no task events, as Celery sends none of its own then.
            with self.app.events.default_dispatcher(hostname=self.hostname) as dispatcher:
                dispatcher.send("task-retried", uuid=task_id, exception="operator retry",
                                traceback="", try_no=applied.try_no)
        signature.apply_async(task_id=task_id, retries=0, headers={**payload.get("headers", {}), HEADER: header})

    # -- sweeping ---------------------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        def once() -> None:
            swept_at = time.time()
            self.sweep(swept_at)
            self._stop.wait(self._until_next_deadline(swept_at))

        self._loop(once, self.settings.sweep_interval_s)

    def _upkeep_loop(self) -> None:
        """Reconcile and trim in a thread of their own. A reconcile pass reads the result backend
        for every open incident; under load it took seconds, and deadlines could not expire behind
        it (timeouts p99 2-11 s late in make bench, issue 6)."""
        last_trim = [0.0]

        def once() -> None:
            self.reconcile()
            if time.monotonic() - last_trim[0] > 60:
                last_trim[0] = time.monotonic()
                self.store.trim(time.time())
            self._stop.wait(RECONCILE_EVERY_S)

        self._loop(once, RECONCILE_EVERY_S)

    def _until_next_deadline(self, swept_at: float) -> float:
        """Wake at the next deadline rather than on a fixed tick (a 1 s tick alone made timeouts up
        to 1 s late; make bench, issue 6), but never sleep longer than the sweep interval."""
        interval = self.settings.sweep_interval_s
        upcoming = self.store.next_deadline(after=swept_at)
        return interval if upcoming is None else min(interval, max(0.0, upcoming - time.time()))

    def sweep(self, now: float) -> int:
        """Expire due deadlines: time out open incidents, then fall back on unreplayed fails.

        Timeouts come first, page by page until none is left due (one batch per tick capped a
        worker at 500 a second). The direct-failure fallbacks follow within a time budget, the rest
        in the next round: each takes several round trips, and done inline they made every later
        timeout seconds late once replays lagged behind (make bench, issue 6).
        """
        unreplayed: list[str] = []
        try:
            transitions = self._expire_due(now, unreplayed)
        finally:
            self._no_backlog.set()
        budget = time.monotonic() + FALLBACK_BUDGET_S
        for task_id in unreplayed:
            if self._stop.is_set() or time.monotonic() > budget:
                break
            transitions += self.fallback(task_id, now)
        return transitions

    def _expire_due(self, now: float, unreplayed: list[str]) -> int:
        """Time out every due open incident; collect the decided ones still waiting for a replay."""
        transitions, offset = 0, 0
        while not self._stop.is_set():
            due = self.store.due(now, limit=SWEEP_BATCH, offset=offset)
            if len(due) == SWEEP_BATCH:
                self._no_backlog.clear()
            expired = 0
            for task_id, status in zip(due, self.store.expire(due, now=now)):
                if status == "ok":
                    expired += 1
                    logger.info("interactive: %s timed out waiting for an operator", task_id)
                elif status in ("not_waiting", "decided"):
                    unreplayed.append(task_id)
                elif status == "corrupt":
                    logger.warning("interactive: cannot expire %s: its records are not ours (edited by hand?)",
                                   task_id)
            transitions += expired
            offset += len(due) - expired  # entries that stay in the index; the next page follows them
            if len(due) < SWEEP_BATCH:
                break
        return transitions

    def fallback(self, task_id: str, now: float) -> int:
        """No worker replayed a fail in time: store FAILURE from here. Skips on_failure, the
        task_failure signal and the task-failed event (see docs/decisions.md)."""
        saved = self.store.fallback(task_id, now=now)
        if saved is None:
            return 0
        payload = decode_message(saved, self.app.conf.accept_content)
        options = payload["options"]
        exc = incidents.rebuild_exception(saved["exc"])
        exc.add_note(f"Original traceback (kept by interactive_celery):\n{saved['traceback']}")
        request = Context(
            id=task_id, task=payload["task"], args=payload["args"], kwargs=payload["kwargs"],
            chord=options.get("chord"), errbacks=options.get("link_error"), chain=options.get("chain"),
            group=options.get("group_id"), group_index=options.get("group_index"),
            root_id=options.get("root_id"), parent_id=options.get("parent_id"), delivery_info={},
            ignore_result=False)
        self.app.backend.mark_as_failure(task_id, exc, traceback=saved["traceback"], request=request,
                                         call_errbacks=True)
        logger.warning("interactive: no worker replayed %s for %s; stored FAILURE directly",
                       saved["decision"], task_id)
        return 1

    def reconcile(self) -> int:
        """Supersede incidents that Celery ended by itself, and re-assert AWAITING_OPERATOR where
        Celery overwrote it: a Celery retry publishes its message before it stores RETRY, so with
        concurrency the retried run can park before the earlier run's RETRY lands on top."""
        ended = 0
        for which in ("open", "active"):
            ids = [task_id for task_id, _ in self.store.index(which, limit=RECONCILE_PAGE)]
            for task_id, celery_state in zip(ids, self._celery_states(ids)):
                if self.superseded(task_id, celery_state):
                    ended += 1
                elif which == "open" and celery_state != AWAITING_OPERATOR:
                    self._refresh_parked_state(task_id)
        return ended

    def _celery_states(self, task_ids: list[str]) -> list[str]:
        """Each flow's state in the result backend: one MGET on a key-value backend (Redis and the
        like) instead of a GET per incident, which was 400 round trips every 5 s per worker with
        many incidents open (make bench, issue 6). Decoded as Celery decodes a single read."""
        backend = self.app.backend
        if task_ids and isinstance(backend, BaseKeyValueStoreBackend):
            keys = [backend.get_key_for_task(task_id) for task_id in task_ids]
            try:
                values = backend.mget(keys)
            except NotImplementedError:  # a key-value backend without a batch read
                pass
            else:
                if isinstance(values, dict):  # the cache backend answers by key, not in order
                    values = [values.get(key) for key in keys]
                return [backend.decode_result(value)["status"] if value else PENDING for value in values]
        return [backend.get_task_meta(task_id).get("status") for task_id in task_ids]

    def _refresh_parked_state(self, task_id: str) -> None:
        raw = self.store.incident(task_id)
        if raw.get("state") != "open":
            return
        self.app.backend.store_result(task_id, parked_meta(raw), AWAITING_OPERATOR,
                                      request=Context(id=task_id, task=raw.get("task")))


class InteractiveStep(bootsteps.StartStopStep):
    """Runs an :class:`Applier` inside the worker's main process (``worker.interactive``)."""

    requires = {"celery.worker.components:Pool"}
    label = "interactive"

    def create(self, worker) -> Applier:
        # Before the consumer builds the tasks' tracers, which look for a custom __call__.
        enable_plain_tasks(worker.app)

        def task_events() -> bool:  # what Celery's EventDispatcher.send checks for a task-* event
            dispatcher = getattr(getattr(worker, "consumer", None), "event_dispatcher", None)
            return bool(dispatcher and dispatcher.enabled and (not dispatcher.groups or "task" in dispatcher.groups))

        worker.interactive = Applier(worker.app, worker.hostname, task_events)
        return worker.interactive
