"""The only module that talks to Redis.

The client is injected (or built from the settings' URL); scripts are registered once per store.
Each Lua script has exactly one method here that maps its small status reply to a value or a typed
error. Redis errors are translated to :class:`~interactive_celery.errors.InteractiveError` at this
boundary and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import redis

from . import errors
from .config import Settings
from .incidents import DECISION_FIELDS, TIMEOUT_REASON
from .keys import APPLIER_GROUP, Keys

MIN_REDIS = (6, 2)
_SCRIPTS = ("park", "decide", "expire", "apply", "start_try", "finish", "supersede", "fallback", "heartbeat")


def safe_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _load_script(name: str) -> str:
    pkg = resources.files("interactive_celery") / "lua"
    return (pkg / "_lib.lua").read_text() + "\n" + (pkg / f"{name}.lua").read_text()


@dataclass
class Applied:
    """What an applier must send after claiming a decision."""

    decision: str
    fence: int
    try_no: int
    options: dict[str, Any]  # per-decision parameter overrides (the top layer)
    message: dict[str, str]


@dataclass
class Ended:
    """The apply script found the flow's Celery result: its ready state, or None if unreadable there."""

    celery_state: str | None


def same_database(store_client: redis.Redis, backend) -> bool:
    """Whether Celery's result backend is a plain Redis backend on the store's server and database
    (host, port or socket path, db and user), so scripts may read its result keys."""
    from celery.backends.redis import RedisBackend

    if type(backend) is not RedisBackend:  # sentinel and cluster subclasses connect elsewhere
        return False
    ours, theirs = store_client.connection_pool.connection_kwargs, backend.connparams
    return all(ours.get(name) == theirs.get(name) for name in ("host", "port", "path", "db", "username"))


class Store:
    def __init__(self, settings: Settings, client: redis.Redis | None = None):
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.url = settings.redis_url
        # encoding_errors="replace": bytes that are not UTF-8 (a foreign stream entry, a key edited
        # by hand) read as U+FFFD instead of failing the whole reply, so readers can skip them.
        self.client = client or redis.Redis.from_url(
            settings.redis_url, decode_responses=True, encoding_errors="replace", socket_connect_timeout=5,
            socket_timeout=30, health_check_interval=30,
        )
        self._scripts = {name: self.client.register_script(_load_script(name)) for name in _SCRIPTS}

    # -- boundary ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Translate redis-py errors into our own, with the URL but never its password."""
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.AuthenticationError) as exc:
            raise errors.RedisUnavailable(safe_url(self.url), exc) from None
        except UnicodeDecodeError as exc:  # an injected client that decodes strictly
            raise errors.CorruptData(f"bytes that are not UTF-8 under the {self.settings.key_prefix!r} "
                                     f"prefix: {exc}") from None
        except redis.exceptions.ResponseError as exc:
            text = str(exc)
            if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
                raise errors.RedisUnavailable(safe_url(self.url), exc) from None
            if "WRONGTYPE" in text or "cjson" in text or "Lua" in text or "script" in text:
                raise errors.CorruptData(f"unexpected data under the {self.settings.key_prefix!r} prefix: {text}") from None
            raise errors.InteractiveError(f"Redis refused a command: {text}") from None

    def load_scripts(self) -> None:
        """Load every script now, so the first failure is one EVALSHA rather than a NOSCRIPT retry."""
        with self.guard():
            for script in self._scripts.values():
                script.sha = self.client.script_load(script.script)

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any], client=None) -> Any:
        with self.guard():
            return self._scripts[name](keys=list(keys), args=[str(a) for a in args], client=client)

    def _life_keys(self, task_id: str) -> list[str]:
        k = self.keys
        return [k.incident(task_id), k.tries(task_id), k.message(task_id), k.open, k.active,
                k.deadlines, k.resolved, k.stream]

    # -- worker side ------------------------------------------------------------------------------

    def park(self, task_id: str, try_no: int, *, now: float, cutoff: float, deadline: float,
             fields: dict, try_record: dict, message: dict, addressed: Sequence[str],
             client=None) -> tuple[str, str]:
        """Park a failed try. With ``client`` (a pipeline) the script is only queued, and the caller
        maps each reply of ``execute()`` with :meth:`park_status` (bulk seeding in ``make bench``)."""
        k, s = self.keys, self.settings
        reply = self._run("park", [
            k.incident(task_id), k.tries(task_id), k.message(task_id), k.open, k.active, k.deadlines,
            k.resolved, k.presence, k.stream, k.ids,
        ], [now, task_id, try_no, cutoff, deadline, s.stream_maxlen, s.retention_s,
            json.dumps(fields), json.dumps(try_record), json.dumps(message), json.dumps(list(addressed))],
            client=client)
        return reply if client is not None else self.park_status(reply)

    @staticmethod
    def park_status(reply: Sequence[str]) -> tuple[str, str]:
        return reply[0], (reply[1] if len(reply) > 1 else "")

    def apply(self, task_id: str, try_no: int, *, now: float, worker: str, fallback_at: float,
              celery_key: str | None = None) -> Applied | Ended | None:
        """Claim a decision: what to send, or :class:`Ended` when the flow's Celery result, read
        from ``celery_key`` (only when the result backend is this Redis database), says Celery
        ended it or cannot be read here; None when there is nothing to apply."""
        k = self.keys
        keys = [k.incident(task_id), k.message(task_id), k.deadlines, *([celery_key] if celery_key else [])]
        reply = self._run("apply", keys, [now, worker, try_no, fallback_at])
        if reply[0] in ("ended", "ask_celery"):
            return Ended(reply[1] if reply[0] == "ended" else None)
        if reply[0] != "send":
            return None
        flat = reply[5:]
        return Applied(reply[1], int(reply[2]), int(reply[3]), json.loads(reply[4] or "{}"),
                       dict(zip(flat[::2], flat[1::2])))

    def start_try(self, task_id: str, try_no: int, fence: int, *, now: float, retries: int,
                  redelivered: bool, archive: bool, try_record: dict) -> list[str]:
        s = self.settings
        return self._run("start_try", self._life_keys(task_id), [
            now, try_no, fence, retries, int(redelivered), int(archive), s.retention_s, s.stream_maxlen,
            json.dumps(try_record)])

    def finish(self, task_id: str, try_no: int, fence: int, *, now: float, try_record: dict) -> bool:
        s = self.settings
        reply = self._run("finish", self._life_keys(task_id), [
            now, try_no, fence, s.retention_s, s.stream_maxlen, json.dumps(try_record)])
        return reply[0] == "ok"

    def supersede(self, task_id: str, *, now: float, why: str, celery_state: str, client=None) -> Any:
        s = self.settings
        return self._run("supersede", self._life_keys(task_id),
                         [now, why, celery_state, s.retention_s, s.stream_maxlen], client=client)

    def fallback(self, task_id: str, *, now: float) -> dict[str, str] | None:
        s = self.settings
        reply = self._run("fallback", self._life_keys(task_id), [now, s.retention_s, s.stream_maxlen])
        if reply[0] != "direct":
            return None
        names = ("decision", "exc", "traceback", "body", "content_type", "content_encoding")
        return dict(zip(names, reply[1:]))

    # -- operator side ----------------------------------------------------------------------------

    def decide(self, task_id: str, decision: str, *, now: float, operator: str, reason: str = "",
               host: str = "", result_json: str = "", allow_any: bool = False, options_json: str = "",
               groups: Sequence[str] = (), cutoff: float = 0.0) -> Any:
        """Record an operator's decision; it is also their heartbeat (``groups``, ``host``, presence
        ``cutoff``)."""
        k, s = self.keys, self.settings
        return self._run("decide", [
            k.incident(task_id), k.open, k.active, k.deadlines, k.decisions, k.stream, k.presence,
            k.audit, k.operator(operator), k.tries(task_id),
        ], [now, decision, operator, reason, host, s.stream_maxlen, result_json, int(allow_any), options_json,
            json.dumps(list(groups)), s.retention_s, cutoff])

    def heartbeat(self, operator: str, groups: Sequence[str], *, now: float, host: str, cutoff: float) -> int:
        k = self.keys
        return int(self._run("heartbeat", [k.presence, k.operator(operator)],
                             [now, operator, json.dumps(list(groups)), host, self.settings.retention_s, cutoff]))

    def incident(self, task_id: str) -> dict[str, str]:
        with self.guard():
            return self.client.hgetall(self.keys.incident(task_id))

    def incidents(self, task_ids: Sequence[str]) -> list[dict[str, str]]:
        """The incident hashes, in order; ``{}`` for one that is gone or is not a hash (a key edited
        by hand must not hide every other incident from the list)."""
        with self.guard():
            pipe = self.client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.hgetall(self.keys.incident(task_id))
            replies = pipe.execute(raise_on_error=False)
        return [{} if isinstance(reply, Exception) else reply for reply in replies]

    def tries(self, task_id: str) -> dict[str, str]:
        with self.guard():
            return self.client.hgetall(self.keys.tries(task_id))

    def exists(self, task_id: str) -> bool:
        with self.guard():
            return bool(self.client.exists(self.keys.incident(task_id)))

    def ids_with_prefix(self, prefix: str, limit: int = 11) -> list[str]:
        # Lexicographic range on a zset of ids with equal scores: O(log n), never SCAN.
        with self.guard():
            return self.client.zrangebylex(self.keys.ids, f"[{prefix}", f"[{prefix}\xff", start=0, num=limit)

    def index(self, which: str, *, offset: int = 0, limit: int = 50) -> list[tuple[str, float]]:
        key = {"open": self.keys.open, "active": self.keys.active, "resolved": self.keys.resolved}[which]
        with self.guard():
            return self.client.zrevrange(key, offset, offset + limit - 1, withscores=True)

    def count(self, which: str) -> int:
        key = {"open": self.keys.open, "active": self.keys.active, "resolved": self.keys.resolved}[which]
        with self.guard():
            return self.client.zcard(key)

    def presence(self, cutoff: float) -> list[tuple[str, float]]:
        with self.guard():
            return self.client.zrangebyscore(self.keys.presence, cutoff, "+inf", withscores=True)

    def operator_info(self, names: Sequence[str]) -> list[dict[str, str]]:
        with self.guard():
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self.keys.operator(name))
            return pipe.execute()

    def read_stream(self, last_id: str = "$", *, block_ms: int | None = None, count: int = 100) -> list:
        with self.guard():
            reply = self.client.xread({self.keys.stream: last_id}, count=count, block=block_ms)
        return reply[0][1] if reply else []

    def stream_last_id(self) -> str:
        """Id of the newest operator message, or ``0-0``: where a reader starts to see only new ones."""
        with self.guard():
            newest = self.client.xrevrange(self.keys.stream, count=1)
        return newest[0][0] if newest else "0-0"

    def audit(self, since: float, until: float, limit: int = 1000) -> list[tuple[str, str | None, dict[str, str]]]:
        """(``<task_id>:<try>``, that try's JSON record, the incident's try and decision fields) for
        decisions made in [since, until]. A timeout is in the incident only (``with_timeout``)."""
        fields = ("try", *DECISION_FIELDS)
        with self.guard():
            members = self.client.zrangebyscore(self.keys.audit, since, until, start=0, num=limit)
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                task_id, _, try_no = member.rpartition(":")
                pipe.hget(self.keys.tries(task_id), try_no)
                pipe.hmget(self.keys.incident(task_id), fields)
            replies = pipe.execute()
        return [(member, record, dict(zip(fields, values)))
                for member, record, values in zip(members, replies[::2], replies[1::2])]

    # -- applier and sweeper ----------------------------------------------------------------------

    def ensure_group(self) -> None:
        with self.guard():
            try:
                # From id 0, so decisions recorded before any worker existed are applied too.
                self.client.xgroup_create(self.keys.decisions, APPLIER_GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read_decisions(self, consumer: str, *, block_ms: int, count: int = 50) -> list:
        with self.guard():
            reply = self.client.xreadgroup(APPLIER_GROUP, consumer, {self.keys.decisions: ">"},
                                           count=count, block=block_ms)
        return reply[0][1] if reply else []

    def claim_stale_decisions(self, consumer: str, *, min_idle_ms: int, count: int = 50) -> list:
        with self.guard():
            reply = self.client.xautoclaim(self.keys.decisions, APPLIER_GROUP, consumer,
                                           min_idle_time=min_idle_ms, start_id="0-0", count=count)
        return reply[1]

    def ack_decision(self, entry_id: str) -> None:
        """Acknowledge and delete an applied decision: the stream holds only unapplied ones."""
        with self.guard():
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(self.keys.decisions, APPLIER_GROUP, entry_id)
            pipe.xdel(self.keys.decisions, entry_id)
            pipe.execute()

    def due(self, now: float, limit: int = 500, offset: int = 0) -> list[str]:
        with self.guard():
            return self.client.zrangebyscore(self.keys.deadlines, "-inf", now, start=offset, num=limit)

    def next_deadline(self, after: float) -> float | None:
        """The earliest deadline later than ``after`` (unix s), or None. Entries at or before
        ``after`` that a sweep left in place cannot be expired, so they are not waited for."""
        with self.guard():
            found = self.client.zrangebyscore(self.keys.deadlines, f"({after!r}", "+inf", start=0, num=1,
                                              withscores=True)
        return found[0][1] if found else None

    def expire(self, task_ids: Sequence[str], *, now: float) -> list[str]:
        """Time out the due incidents among ``task_ids`` (at most a few thousand) in one script call;
        a status per id: ``ok``, or why not (``not_due``, ``unknown``, ``superseded``,
        ``not_waiting``, ``decided``, ``corrupt``)."""
        if not task_ids:
            return []
        k = self.keys
        keys = [k.open, k.active, k.deadlines, k.decisions, k.stream, k.audit,
                *(k.incident(task_id) for task_id in task_ids)]
        reply = self._run("expire", keys, [now, self.settings.stream_maxlen, TIMEOUT_REASON, *task_ids])
        statuses = ["ok"] * len(task_ids)  # the script lists only the incidents it did not time out
        for position, status in zip(reply[1::2], reply[2::2]):
            statuses[int(position) - 1] = status
        return statuses

    def trim(self, now: float) -> int:
        """Forget resolved incidents past retention (their hashes already expired by TTL)."""
        k, cutoff = self.keys, now - self.settings.retention_s
        with self.guard():
            old = self.client.zrangebyscore(k.resolved, "-inf", cutoff, start=0, num=1000)
            if old:
                pipe = self.client.pipeline(transaction=False)
                pipe.zrem(k.resolved, *old)
                pipe.zrem(k.ids, *old)
                pipe.zremrangebyscore(k.audit, "-inf", cutoff)
                pipe.zremrangebyscore(k.presence, "-inf", cutoff)
                pipe.execute()
            return len(old)

    def server_info(self) -> dict[str, Any]:
        with self.guard():
            info = self.client.info("server")
            memory = self.client.info("memory")
        return {"redis_version": info.get("redis_version", "0"),
                "maxmemory_policy": memory.get("maxmemory_policy", "unknown")}


def store_for(app) -> Store:
    """The app's store, built once from its validated settings and cached on the app."""
    store = app.__dict__.get("_interactive_store")
    if store is None:
        from .config import settings_for

        store = Store(settings_for(app))
        app._interactive_store = store
    return store
