"""``make bench``: what ``base=InteractiveTask`` costs, measured side by side with plain Celery.

Every figure of issue 6 is measured against a private ``redis-server`` and real ``celery worker``
subprocesses started here, several rounds each, and reported as a median with its spread. Start with
:mod:`bench.run`; :mod:`bench.app` is the Celery app that both the bench process and its workers load.
"""
