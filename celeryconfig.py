"""An example Celery configuration for interactive_celery.

The example app (``examples.invoices``), ``make demo`` and ``docker-compose.yml`` all load it. Every
connection value can be overridden from the environment, so one file serves all three.

Redis must be >= 6.2 and run with ``maxmemory-policy noeviction``: incidents, Celery's results and
its chord counters all carry TTLs, so any ``volatile-*`` policy can evict them under memory pressure
and lose a parked flow. Workers check this at start-up (through ``INFO``) and warn.
"""

import os

from interactive_celery.config import DEFAULT_REDACT_KEYS

broker_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# A parked flow is a custom state in the result backend, so it must be able to hold one: Redis or a
# database, never rpc:// (refused at start-up).
result_backend = os.environ.get("RESULT_BACKEND_URL", broker_url)
broker_connection_retry_on_startup = True

task_default_queue = os.environ.get("INVOICES_QUEUE", "invoices")

# Recommended. The crash guarantees of interactive mode assume both: a message is acked only after
# the task ran (or parked), and a worker that dies mid-task gets its message redelivered. Without
# them, an early-acked message whose worker dies before the park script ran is lost.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

# Flower reads events, never the result backend: the parked state reaches Flower only as the
# task-awaiting_operator event, so workers must send events (``celery worker -E`` does the same).
worker_send_task_events = True
task_send_sent_event = True

# A parked state is stored with this TTL: every decision timeout must be shorter (checked at start-up).
result_expires = 24 * 3600
result_extended = True  # keeps the task name and arguments with the result, for the summary table

# Never use countdown/ETA messages as long timers on Redis: past visibility_timeout they are
# redelivered and run twice (kombu#337). interactive_celery keeps its deadlines in Redis instead.
broker_transport_options = {"visibility_timeout": 3600}

# -- interactive mode -------------------------------------------------------------------------------
interactive_key_prefix = os.environ.get("INTERACTIVE_KEY_PREFIX", "interactive")
# An operator with no activity for this long counts as offline (Cloudomation's default). The example
# tasks override it with short limits so that the demo runs in a minute.
interactive_limit_minutes = 30
interactive_archive_retries = True
# None means "the effective limit": an incident nobody decides times out after that long.
interactive_decision_timeout_minutes = None
interactive_retention_days = 14
interactive_stream_maxlen = 10000
# Values under these keys (at any depth) are shown to operators as ***. Extend, never shrink, the defaults.
interactive_redact_keys = [*DEFAULT_REDACT_KEYS, "iban"]
# Shown as a link in operator messages when set (the demo sets it to the Flower it starts).
interactive_flower_url = os.environ.get("FLOWER_URL") or None
