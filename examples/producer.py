"""Submit the example flows once: docker compose's one-shot ``producer`` service.

It fills the inbox with the sample batches (all but the ones that "have not arrived yet"), then
submits the night's work and prints each flow's task id, so that an operator can find it in Flower
or with ``interactive-celery -A examples.invoices list``:

- Initech's import (its batch is missing);
- Umbrella's import (line 3 is malformed);
- Globex's import chained to the partner notification (fails while the partner is in maintenance);
- a chord of three imports (Hooli's batch is missing) and the summary.

With nobody online these fail at once, exactly as plain Celery would. Start ``watch`` first and run
the producer again to see them park.
"""

from __future__ import annotations

import argparse
import shutil
import urllib.request

from celery import chain, chord

from . import invoices
from .story import MISSING, SAMPLES


def seed_inbox() -> list[str]:
    invoices.inbox().mkdir(parents=True, exist_ok=True)
    copied = []
    for sample in sorted(SAMPLES.glob("*.csv")):
        if sample.stem not in MISSING:
            shutil.copy(sample, invoices.inbox() / sample.name)
            copied.append(sample.name)
    return copied


def set_maintenance(on: bool) -> None:
    state = "on" if on else "off"
    request = urllib.request.Request(f"{invoices.partner_url()}/maintenance/{state}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.producer", description=__doc__.splitlines()[0])
    parser.add_argument("--maintenance", action="store_true",
                        help="switch the partner into maintenance first, so the notification fails")
    args = parser.parse_args(argv)

    print(f"inbox {invoices.inbox()}: {', '.join(seed_inbox())}")
    if args.maintenance:
        set_maintenance(True)
        print(f"partner {invoices.partner_url()} is in maintenance (503)")
    flows = {
        "import initech (missing)": invoices.import_batch.delay("initech-2024-05"),
        "import umbrella (malformed)": invoices.import_batch.delay("umbrella-2024-05"),
        "import globex, notify partner": chain(invoices.import_batch.s("globex-2024-05"),
                                               invoices.notify_partner.s()).apply_async(),
    }
    summary = chord([invoices.import_batch.s(b) for b in ("acme-2024-05", "hooli-2024-05", "stark-2024-05")],
                    invoices.summarize.s()).apply_async()
    flows["chord member: import hooli (missing)"] = summary.parent.results[1]
    flows["chord summary"] = summary
    for label, result in flows.items():
        print(f"{result.id}  {label}")
    print("\nTo fix the missing batches, copy them into the inbox, e.g.\n"
          f"  cp examples/data/hooli-2024-05.csv {invoices.inbox()}/\n"
          "then retry the incident:  interactive-celery -A examples.invoices retry <task id>")


if __name__ == "__main__":
    main()
