"""The example automation: a nightly invoice import that an operations team runs.

Each customer drops a CSV batch into an inbox folder. ``import_batch`` validates it and writes the
totals to an outbox; ``notify_partner`` then reports the totals to a partner's HTTP service. A chord
imports several batches and ``summarize`` writes the night's summary; ``submit_payment_run`` asks the
partner to pay out before the bank's cut-off.

Everything fails for ordinary reasons a person can fix: a batch has not arrived, a row is
malformed, the partner is down for maintenance (HTTP 503). With an operator online those failures
park; with nobody online they fail exactly as plain Celery would.

Environment: ``REDIS_URL`` (via ``celeryconfig``), ``INVOICES_DIR`` (holds ``inbox/`` and
``outbox/``), ``PARTNER_URL`` (the partner service, see :mod:`examples.partner`).
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from decimal import Decimal, InvalidOperation
from pathlib import Path

from celery import Celery

from interactive_celery import InteractiveTask

app = Celery("invoices")
app.config_from_object("celeryconfig")

# Short limits so that the demo runs in about a minute; a real deployment keeps the defaults from
# celeryconfig (30 minutes). Minutes are numbers, fractions allowed.
OPERATOR_LIMIT_MINUTES = 0.5     # an operator silent for 30 s counts as offline
DECISION_TIMEOUT_MINUTES = 15.0  # a parked import waits this long for a person
CUTOFF_MINUTES = 0.1             # the bank's cut-off: a payment run waits 6 s, then fails

# App-wide too, so that consoles and `operators` use the same window: the watch console heartbeats
# at a third of the app's limit, and a task must never see a watching operator as gone.
app.conf.interactive_limit_minutes = OPERATOR_LIMIT_MINUTES
app.conf.interactive_decision_timeout_minutes = DECISION_TIMEOUT_MINUTES

COLUMNS = ("invoice_id", "customer", "amount", "currency")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class InvoiceError(Exception):
    """Base of the example's own failures; each takes one message so workers can rebuild it."""


class BatchMissing(InvoiceError):
    """The customer's CSV file is not in the inbox (yet)."""


class MalformedRow(InvoiceError):
    """A row of the CSV file cannot be imported."""


class PartnerUnavailable(InvoiceError):
    """The partner service did not accept the request (maintenance, 5xx, unreachable)."""


def data_dir() -> Path:
    return Path(os.environ.get("INVOICES_DIR") or Path(tempfile.gettempdir()) / "interactive-celery-invoices")


def inbox() -> Path:
    return data_dir() / "inbox"


def outbox() -> Path:
    return data_dir() / "outbox"


def partner_url() -> str:
    return os.environ.get("PARTNER_URL", "http://127.0.0.1:8099").rstrip("/")


def parse_batch(batch: str, text: str) -> dict:
    """Validate one batch and total it per currency. Raises MalformedRow with the line number."""
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise MalformedRow(f"{batch}.csv: header must be {','.join(COLUMNS)}, got {reader.fieldnames}")
    totals: dict[str, Decimal] = {}
    seen: set[str] = set()
    count = 0
    for line, row in enumerate(reader, start=2):
        invoice_id, amount_text, currency = row["invoice_id"], row["amount"], row["currency"]
        if not invoice_id or invoice_id in seen:
            raise MalformedRow(f"{batch}.csv line {line}: invoice id {invoice_id!r} is empty or repeated")
        try:
            amount = Decimal(amount_text)
        except (InvalidOperation, TypeError):
            raise MalformedRow(f"{batch}.csv line {line}: amount {amount_text!r} is not a number") from None
        if not amount.is_finite() or amount <= 0:
            raise MalformedRow(f"{batch}.csv line {line}: amount {amount_text!r} must be positive")
        if not _CURRENCY.match(currency or ""):
            raise MalformedRow(f"{batch}.csv line {line}: currency {currency!r} is not an ISO code")
        seen.add(invoice_id)
        totals[currency] = totals.get(currency, Decimal(0)) + amount
        count += 1
    if not count:
        raise MalformedRow(f"{batch}.csv has no invoices")
    return {"batch": batch, "invoices": count, "totals": {c: str(t) for c, t in sorted(totals.items())}}


@app.task(base=InteractiveTask, name="invoices.import_batch",
          interactive_limit_minutes=OPERATOR_LIMIT_MINUTES, decision_timeout_minutes=DECISION_TIMEOUT_MINUTES,
          interactive_subject="Invoice import needs a person: {exc_type}", interactive_body="{exc_message}")
def import_batch(batch: str) -> dict:
    """Read ``inbox/<batch>.csv``, validate it, write ``outbox/<batch>.json``; return the totals."""
    path = inbox() / f"{batch}.csv"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BatchMissing(f"{path} has not arrived") from None
    totals = parse_batch(batch, text)
    outbox().mkdir(parents=True, exist_ok=True)
    (outbox() / f"{batch}.json").write_text(json.dumps(totals, indent=2), encoding="utf-8")
    return totals


def call_partner(path: str, payload: dict) -> dict:
    request = urllib.request.Request(
        f"{partner_url()}{path}", data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()[:200]
        raise PartnerUnavailable(f"partner answered {exc.code} on {path}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PartnerUnavailable(f"partner unreachable at {partner_url()}: {exc}") from None


@app.task(base=InteractiveTask, name="invoices.notify_partner",
          interactive_limit_minutes=OPERATOR_LIMIT_MINUTES, decision_timeout_minutes=DECISION_TIMEOUT_MINUTES,
          interactive_subject="Partner notification needs a person: {exc_type}", interactive_body="{exc_message}")
def notify_partner(totals: dict) -> dict:
    """Report a batch's totals to the partner; returns the partner's receipt."""
    receipt = call_partner("/invoices", totals)
    return {"batch": totals["batch"], "receipt": receipt.get("receipt")}


@app.task(base=InteractiveTask, name="invoices.submit_payment_run",
          interactive_limit_minutes=OPERATOR_LIMIT_MINUTES, decision_timeout_minutes=CUTOFF_MINUTES,
          interactive_subject="Payment run before the cut-off: {exc_type}", interactive_body="{exc_message}")
def submit_payment_run(batch: str) -> dict:
    """Ask the partner to pay out a batch. The bank's cut-off does not wait: if nobody decides
    within CUTOFF_MINUTES the run fails and tomorrow's run picks the batch up."""
    return call_partner("/payments", {"batch": batch})


@app.task(base=InteractiveTask, name="invoices.summarize",
          interactive_limit_minutes=OPERATOR_LIMIT_MINUTES, decision_timeout_minutes=DECISION_TIMEOUT_MINUTES)
def summarize(results: list[dict]) -> dict:
    """Chord body: the night's totals over every imported batch, written to ``outbox/summary.json``."""
    totals: dict[str, Decimal] = {}
    for result in results:
        for currency, amount in result["totals"].items():
            totals[currency] = totals.get(currency, Decimal(0)) + Decimal(amount)
    summary = {"batches": sorted(r["batch"] for r in results),
               "invoices": sum(r["invoices"] for r in results),
               "totals": {c: str(t) for c, t in sorted(totals.items())}}
    outbox().mkdir(parents=True, exist_ok=True)
    (outbox() / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
