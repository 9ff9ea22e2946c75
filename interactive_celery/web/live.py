"""Live updates: one reader of the operator stream per console, fanned out as server-sent events.

The stream is durable, so nothing is lost while nobody listens: a client that reconnects sends
``Last-Event-ID`` (browsers do this by themselves) and gets what it missed, up to a cap, before the
live entries. Every event stream also heartbeats for its operator, so an open page counts as
presence the way ``watch`` does in the terminal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import tornado.iostream
import tornado.queues
import tornado.util

from ..errors import InteractiveError
from .base import ApiError, BaseHandler

if TYPE_CHECKING:
    from .console import Console

logger = logging.getLogger("interactive_celery.web")

BLOCK_S = 2.0
KEEPALIVE_S = 15.0
QUEUE_SIZE = 1000
CATCH_UP_MAX = 500
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def stream_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class StreamHub:
    """Follows the operator stream with a blocking read in one thread, and hands each entry to every
    subscriber's queue. A subscriber that falls ``QUEUE_SIZE`` entries behind is dropped; its page
    reconnects and reloads its data."""

    def __init__(self, console: "Console"):
        self.console = console
        self._reader = console.reader()
        self._subscribers: set[tornado.queues.Queue] = set()
        self._dropped: set[tornado.queues.Queue] = set()
        self._cursor = "0-0"
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._stopped = False

    async def subscribe(self) -> tuple[tornado.queues.Queue, str]:
        """A queue of entries newer than the returned stream id."""
        async with self._lock:
            if self._task is None:
                # A concrete position, not "$": an entry written between this call and the first
                # blocking read must not be missed.
                self._cursor = await self.console.run(self._reader.stream_position)
                self._task = asyncio.ensure_future(self._follow())
        queue: tornado.queues.Queue = tornado.queues.Queue(maxsize=QUEUE_SIZE)
        self._subscribers.add(queue)
        return queue, self._cursor

    def unsubscribe(self, queue: tornado.queues.Queue) -> None:
        self._subscribers.discard(queue)
        self._dropped.discard(queue)

    def dropped(self, queue: tornado.queues.Queue) -> bool:
        return queue in self._dropped

    def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()

    async def _follow(self) -> None:
        while not self._stopped:
            try:
                entries = await self.console.run(self._reader.events, self._cursor, block_s=BLOCK_S, count=200)
            except InteractiveError as exc:
                logger.warning("interactive web: cannot read the operator stream: %s", exc)
                await asyncio.sleep(1.0)
                continue
            except RuntimeError:  # the executor was shut down: the console is closing
                return
            except Exception:
                logger.exception("interactive web: unexpected error following the stream")
                await asyncio.sleep(1.0)
                continue
            for entry in entries:
                for queue in list(self._subscribers):
                    try:
                        queue.put_nowait(entry)
                    except tornado.queues.QueueFull:
                        self._subscribers.discard(queue)
                        self._dropped.add(queue)
                self._cursor = entry["stream_id"]


class EventsHandler(BaseHandler):
    """``GET /events`` and ``GET /api/events``: ``text/event-stream`` of operator messages.

    Each message is ``id: <stream id>`` and ``data: <JSON entry>``; the first event is ``ready``.
    """

    json_api = True

    def initialize(self) -> None:
        self._closed = False
        self._queue: tornado.queues.Queue | None = None

    def on_connection_close(self) -> None:
        self._closed = True
        if self._queue is not None:
            try:
                self._queue.put_nowait(None)
            except tornado.queues.QueueFull:
                pass

    def _send(self, data: dict[str, Any], event: str | None = None) -> None:
        head = f"event: {event}\n" if event else f"id: {data['stream_id']}\n"
        self.write(f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n")

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")
        hub, api = self.console.hub, self.api
        try:
            queue, position = await hub.subscribe()
        except InteractiveError as exc:
            raise ApiError(exc) from None
        self._queue = queue
        sent = stream_key(position)
        try:
            after = self.request.headers.get("Last-Event-ID") or self.get_argument("after", "")
            if _STREAM_ID.match(after) and stream_key(after) < sent:
                for entry in await self.call(api.events, after, count=CATCH_UP_MAX):
                    self._send(entry)
                    sent = max(sent, stream_key(entry["stream_id"]))
            await self._heartbeat()  # so that "ready" means: this operator counts as online
            self._send({"operator": self.identity.operator, "read_only": self.console.read_only,
                        "position": "%d-%d" % sent}, event="ready")
            await self.flush()
            await self._pump(queue, sent)
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            hub.unsubscribe(queue)

    async def _heartbeat(self) -> None:
        try:
            await self.console.run(self.api.heartbeat)
        except InteractiveError as exc:
            logger.warning("interactive web: heartbeat for %s failed: %s", self.identity.operator, exc)

    async def _pump(self, queue: tornado.queues.Queue, sent: tuple[int, int]) -> None:
        next_beat = time.monotonic() + self.console.presence_interval_s
        while not self._closed:
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.console.presence_interval_s
                await self._heartbeat()
            try:
                entry = await queue.get(timeout=timedelta(seconds=min(KEEPALIVE_S, self.console.presence_interval_s)))
            except tornado.util.TimeoutError:
                if self.console.hub.dropped(queue):
                    return  # fell too far behind; the browser reconnects and reloads
                self.write(": keep-alive\n\n")
            else:
                if entry is None:
                    return
                key = stream_key(entry["stream_id"])
                if key <= sent:
                    continue  # already sent while catching up
                sent = key
                self._send(entry)
            await self.flush()
