"""Examples for interactive_celery: a nightly invoice import run attended and unattended.

- :mod:`examples.invoices`: the Celery app and its tasks (``celery -A examples.invoices worker``).
- :mod:`examples.partner`: the partner HTTP service the tasks call, with a maintenance switch.
- :mod:`examples.demo`: ``make demo``, the whole product on real processes.
- :mod:`examples.producer`: submits the example flows (docker compose's one-shot producer).
"""
