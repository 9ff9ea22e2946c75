"""The demo's story, one step per kind of failure, narrated in a few lines each.

1. Nobody is online: a missing batch fails at once, exactly as plain Celery.
2. The operator comes online.
3. The partner is in maintenance (503): the chained notification parks; end the maintenance, retry.
4. A batch has a malformed row: it parks; the operator fails it (it goes back to the customer).
5. A chord of three imports, one batch missing: the member parks; put the file back, retry; the
   summary then runs.
6. Scripted only: a payment run parks during maintenance and nobody decides before the cut-off;
   it times out.

Each step returns the flows it started with what the story expects of them; :mod:`examples.report`
then checks those expectations against what Redis and the result backend hold.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from celery import chain, chord
from celery.result import AsyncResult

from interactive_celery import AWAITING_OPERATOR
from interactive_celery.testing import wait_for

from . import invoices
from .operators import Fix
from .partner import PartnerService

SAMPLES = Path(__file__).resolve().parent / "data"
MISSING = ("initech-2024-05", "hooli-2024-05")  # not in the inbox when the demo starts
FLOW_TIMEOUT_S = 90.0


@dataclass
class Flow:
    """A flow the story started, and what the story expects of it."""

    label: str
    task_id: str
    state: str                       # the Celery state it must end in
    decisions: tuple[str, ...] = ()  # the decisions it must have received, in order
    incident: str | None = None      # its incident's final state; None: it never parked


def seed_inbox() -> None:
    """Every sample batch, except the ones that have "not arrived yet"."""
    invoices.inbox().mkdir(parents=True, exist_ok=True)
    invoices.outbox().mkdir(parents=True, exist_ok=True)
    for sample in sorted(SAMPLES.glob("*.csv")):
        if sample.stem not in MISSING:
            shutil.copy(sample, invoices.inbox() / sample.name)


class Story:
    def __init__(self, app, operator, partner: PartnerService, say: Callable[[str], None],
                 flower_url: str | None, scripted: bool):
        self.app = app
        self.operator = operator
        self.partner = partner
        self.say = say
        self.flower_url = flower_url
        self.scripted = scripted

    def run(self) -> list[Flow]:
        flows = [self.unattended()]
        self.say(f"\n2. The operator {self.operator.name} comes online "
                 f"({'the watch console' if self.operator.interactive else 'a scripted operator'}); "
                 "from now on final failures park instead of failing.")
        self.operator.come_online()
        flows += self.partner_outage()
        flows += self.malformed_batch()
        flows += self.chord_with_missing_member()
        if self.scripted:
            flows += self.missed_cutoff()
        return flows

    # -- steps --------------------------------------------------------------------------------------

    def unattended(self) -> Flow:
        self.say("\n1. Nobody is online. Initech's batch has not arrived, so its import fails at once, "
                 "exactly as plain Celery would.")
        result = invoices.import_batch.delay("initech-2024-05")
        self._settle(result)
        self._report(result)
        return Flow("unattended import (file missing)", result.id, "FAILURE")

    def partner_outage(self) -> list[Flow]:
        self.say("\n3. The partner service goes into maintenance. Globex's batch imports, then the "
                 "chained notification gets 503 and parks.")
        self.partner.maintenance = True
        result = chain(invoices.import_batch.s("globex-2024-05"), invoices.notify_partner.s()).apply_async()
        self._wait_parked(result)
        self.operator.fix(Fix(
            "end the partner's maintenance window", f"curl -X POST {self.partner.url}/maintenance/off",
            apply=lambda: setattr(self.partner, "maintenance", False), done=lambda: not self.partner.maintenance))
        self._decide(result, result, "retry", "the partner's maintenance is over")
        self._report(result)
        return [Flow("chain: import globex", result.parent.id, "SUCCESS"),
                Flow("chain: notify partner (503)", result.id, "SUCCESS", ("retry",), "succeeded")]

    def malformed_batch(self) -> list[Flow]:
        self.say("\n4. Umbrella's batch has a malformed row; its import parks.")
        result = invoices.import_batch.delay("umbrella-2024-05")
        self._wait_parked(result)
        self.say("   Nothing to fix here: the batch goes back to Umbrella, so the operator fails the flow.")
        self._decide(result, result, "fail", "returned to Umbrella: line 3 is not a number")
        self._report(result)
        return [Flow("import umbrella (malformed row)", result.id, "FAILURE", ("fail",), "failed")]

    def chord_with_missing_member(self) -> list[Flow]:
        self.say("\n5. The night's chord: three imports, then a summary. Hooli's batch is missing, so "
                 "that member parks and the summary waits.")
        batches = ("acme-2024-05", "hooli-2024-05", "stark-2024-05")
        result = chord([invoices.import_batch.s(b) for b in batches], invoices.summarize.s()).apply_async()
        member = result.parent.results[1]
        self._wait_parked(member)
        target = invoices.inbox() / "hooli-2024-05.csv"
        self.operator.fix(Fix(
            "put Hooli's file back in the inbox", f"cp {SAMPLES / target.name} {target}",
            apply=lambda: shutil.copy(SAMPLES / target.name, target), done=target.exists))
        self._decide(member, result, "retry", "Hooli's file is back")
        self._report(result)
        flows = [Flow(f"chord: import {b}", r.id, "SUCCESS") for b, r in zip(batches, result.parent.results)]
        flows[1] = Flow("chord: import hooli (missing)", member.id, "SUCCESS", ("retry",), "succeeded")
        return flows + [Flow("chord: summary", result.id, "SUCCESS")]

    def missed_cutoff(self) -> list[Flow]:
        cutoff_s = invoices.CUTOFF_MINUTES * 60
        self.say(f"\n6. Another maintenance window. A payment run parks, and nobody decides before the "
                 f"bank's cut-off ({cutoff_s:.0f} s): it times out and fails with the original error.")
        self.partner.maintenance = True
        result = invoices.submit_payment_run.delay("globex-2024-05")
        self._wait_parked(result)
        self._settle(result)
        self.partner.maintenance = False
        self._report(result)
        return [Flow("payment run (missed cut-off)", result.id, "FAILURE", ("timeout",), "failed")]

    # -- helpers ------------------------------------------------------------------------------------

    def _wait_parked(self, result: AsyncResult) -> None:
        wait_for(lambda: result.state == AWAITING_OPERATOR or result.ready(), timeout=FLOW_TIMEOUT_S,
                 interval=0.1, what=f"{result.id} to park")
        if result.ready():
            self.say(f"   {result.id[:8]} ended {result.state} instead of parking (was anyone online?)")
            return
        info = result.info or {}
        where = f"  {self.flower_url}/task/{result.id}" if self.flower_url else ""
        self.say(f"   {result.id[:8]} is AWAITING_OPERATOR: {info.get('exc_type')}: {info.get('exc_message')}")
        if where:
            self.say(f"   Flower:{where}")

    def _decide(self, parked: AsyncResult, final: AsyncResult, decision: str, reason: str) -> None:
        """Have the operator decide on ``parked`` until it stops parking, then wait for ``final``.

        A person may retry before fixing the cause; the flow then parks again with the next try."""
        while parked.state == AWAITING_OPERATOR:
            parked_try = (parked.info or {}).get("try")
            self.operator.decide(parked.id, decision, reason)
            wait_for(lambda: parked.ready() or (parked.state == AWAITING_OPERATOR
                                                and (parked.info or {}).get("try") != parked_try),
                     timeout=FLOW_TIMEOUT_S, interval=0.1, what=f"{parked.id} to run again")
            if parked.state == AWAITING_OPERATOR:
                self.say(f"   It failed again and parked: {(parked.info or {}).get('exc_message')}")
        self._settle(final)

    def _settle(self, result: AsyncResult) -> None:
        result.get(timeout=FLOW_TIMEOUT_S, propagate=False)

    def _report(self, result: AsyncResult) -> None:
        if result.successful():
            self.say(f"   {result.id[:8]} SUCCESS: {result.result}")
        else:
            self.say(f"   {result.id[:8]} {result.state}: {type(result.result).__name__}: {result.result}")
