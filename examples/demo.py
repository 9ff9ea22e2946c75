"""``make demo``: the invoice import, run for real, attended and unattended.

    python -m examples.demo              # interactive when stdin is a terminal
    python -m examples.demo --scripted   # a scripted operator decides (what CI runs)

It uses Redis at ``REDIS_URL`` when reachable (with its own key prefix and queue, cleaned up
afterwards), otherwise an embedded ``redis-server`` on a free loopback port with its data in a
temporary folder. It starts a real ``celery worker`` and Flower, the partner service in a thread,
runs the story in :mod:`examples.story`, prints a table read back from Redis and the result backend,
and exits 0 only if every flow ended as the story says. Whatever happens (success, failure, Ctrl-C,
SIGTERM) it stops every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path

import redis

from interactive_celery.api import default_operator
from interactive_celery.keys import Keys
from interactive_celery.testing import free_port, reachable

from . import processes
from .partner import PartnerService


def say(text: str = "") -> None:
    print(text, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--scripted", action="store_true",
                        help="a scripted operator decides (the default when stdin is not a terminal)")
    parser.add_argument("--operator", help="operator name (default: $INTERACTIVE_OPERATOR or your login; "
                                           "'alice' when scripted)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, inbox, outbox)")
    return parser.parse_args(argv)


def cli_script() -> Path:
    """The operator CLI next to this interpreter, relative to the working folder when inside it."""
    script = Path(sys.executable).parent / "interactive-celery"
    with contextlib.suppress(ValueError):
        script = script.relative_to(Path.cwd())
    return script


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the demo like Ctrl-C does, so the clean-up below always runs."""
    def handler(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


class Demo:
    def __init__(self, args: argparse.Namespace, interactive: bool, workdir: Path, stack: contextlib.ExitStack):
        self.args = args
        self.interactive = interactive
        self.workdir = workdir
        self.stack = stack
        self.children: list[processes.Managed] = []
        (workdir / "logs").mkdir()

    # -- infrastructure -------------------------------------------------------------------------------

    def redis(self) -> tuple[str, bool]:
        """(url, shared): REDIS_URL when reachable, else an embedded redis-server."""
        url = os.environ.get("REDIS_URL")
        if url and reachable(url):
            return url, True
        if url:
            say("REDIS_URL is set but not reachable; starting an embedded redis-server instead.")
        (self.workdir / "redis").mkdir()
        port = free_port()
        server = self.start(processes.start_redis(self.workdir / "redis", self.workdir / "logs" / "redis.log",
                                                  port=port))
        url = f"redis://127.0.0.1:{port}/0"
        processes.wait_redis_ready(url, server)
        return url, False

    def forget_keys(self, url: str, prefix: str, queue: str) -> None:
        """On a shared Redis, delete what the demo made under its own prefix and queue."""
        client = redis.Redis.from_url(url)
        with contextlib.closing(client):
            for pattern in Keys(prefix).all_patterns():
                for key in client.scan_iter(match=pattern.replace("{", "\\{").replace("}", "\\}"), count=1000):
                    client.delete(key)
            client.delete(queue)

    def start(self, managed: processes.Managed) -> processes.Managed:
        self.children.append(managed)
        self.stack.callback(managed.stop)
        return managed

    # -- the run ------------------------------------------------------------------------------------

    def run(self) -> bool:
        url, shared = self.redis()
        run_id = uuid.uuid4().hex[:8]
        prefix, queue = (f"demo-{run_id}", f"demo-{run_id}") if shared else ("interactive", "invoices")
        if shared:
            self.stack.callback(self.forget_keys, url, prefix, queue)
        partner = self.stack.enter_context(PartnerService())
        flower_port = free_port()
        flower_url = f"http://127.0.0.1:{flower_port}"
        operator_name = self.args.operator or ("alice" if not self.interactive else default_operator())
        os.environ.update({
            "REDIS_URL": url, "INTERACTIVE_KEY_PREFIX": prefix, "INVOICES_QUEUE": queue,
            "INVOICES_DIR": str(self.workdir), "PARTNER_URL": partner.url, "FLOWER_URL": flower_url,
            "INTERACTIVE_OPERATOR": operator_name,
        })
        # Only now: celeryconfig reads the environment when the app first loads its configuration.
        from interactive_celery import OperatorAPI

        from . import invoices
        from .operators import HumanOperator, ScriptedOperator
        from .report import observe, render
        from .story import Story, seed_inbox

        # AsyncResult.__del__ talks to the backend: collect the story's results while Redis still runs.
        self.stack.callback(gc.collect)
        seed_inbox()
        env = processes.child_env()
        logs = self.workdir / "logs"
        flower = self.start(processes.start_flower(env, logs / "flower.log", port=flower_port))
        worker = self.start(processes.start_worker(env, logs / "worker.log", queue=queue,
                                                   name=processes.worker_name(f"demo-{run_id}")))
        with contextlib.closing(redis.Redis.from_url(url)) as client:
            version = client.info("server")["redis_version"]
        mode = "interactive: you are the operator" if self.interactive else "scripted operator"
        say(f"interactive_celery demo ({mode})")
        say(f"  Redis    {url}  ({'REDIS_URL' if shared else 'embedded redis-server'} {version}, "
            f"key prefix {prefix!r}, queue {queue!r})")
        say(f"  Worker   celery -A examples.invoices worker -E  (pid {worker.pid}, log {logs / 'worker.log'})")
        say(f"  Flower   {flower_url}")
        say(f"  Partner  {partner.url}")
        say(f"  Inbox    {invoices.inbox()}")
        say(f"  CLI      REDIS_URL={url} INTERACTIVE_KEY_PREFIX={prefix} {cli_script()} -A examples.invoices list")
        processes.wait_flower_ready(flower_url, flower)
        processes.wait_worker_ready(invoices.app, worker)
        processes.wait_flower_sees(flower_url, worker)  # so Flower sees the story from its first event

        api = OperatorAPI(invoices.app, operator_name)
        if self.interactive:
            operator = HumanOperator(api, say, env)
        else:
            operator = ScriptedOperator(api, say)
        self.stack.callback(operator.stop)
        flows = Story(invoices.app, operator, partner, say, flower_url, scripted=not self.interactive).run()

        say()
        ok = render(observe(invoices.app, api, flows, flower_url))
        if self.interactive:
            say(f"\nFlower is still at {flower_url}. Press Enter to stop everything the demo started.")
            sys.stdin.readline()
        return ok

    def show_logs(self) -> None:
        for managed in self.children:
            say(f"--- last lines of {managed.name} ({managed.log_path})")
            say(managed.log_tail(40))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interactive = not args.scripted and sys.stdin.isatty() and sys.stdout.isatty()
    _stop_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="interactive-demo-"))
    stack = contextlib.ExitStack()
    demo = Demo(args, interactive, workdir, stack)
    ok = False
    try:
        ok = demo.run()
        return 0 if ok else 1
    except KeyboardInterrupt:
        say("\nInterrupted: stopping everything the demo started.")
        return 130
    except Exception as exc:  # report, then clean up like any other ending
        say(f"\nThe demo failed: {type(exc).__name__}: {exc}")
        demo.show_logs()
        return 1
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave orphans behind.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        stack.close()
        if args.keep:
            say(f"Kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        say("Stopped every process the demo started.")


if __name__ == "__main__":
    sys.exit(main())
