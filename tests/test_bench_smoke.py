"""Smoke run of ``make bench``: tiny sizes, checks only that it runs and produces every figure.

Timing figures belong in ``make bench``, never in a test assertion (DESIGN.md, issue 6), so nothing
here looks at a measured value: only at the presence and shape of each figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.report import FIGURES

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_run_produces_every_figure(tmp_path):
    """``python -m bench.run --tiny`` starts its own Redis and workers, exits 0, prints the table and
    writes a results file with the environment and every figure of the issue, none of them an error."""
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--tiny", "--out", str(out),
                           "--log-dir", str(tmp_path / "logs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())

    env = results["environment"]
    assert env["cpu_count"] and env["redis_server"] and env["python"]
    assert all(env["packages"][name] for name in ("celery", "kombu", "redis"))

    figures = results["figures"]
    assert set(FIGURES) <= set(figures)
    for key in FIGURES:
        figure = figures[key]
        assert "error" not in figure, (key, figure.get("error"))
        assert figure["value"] is not None, key
        assert isinstance(figure["met"], bool) and figure["target"], key
        assert figure["figure"] in proc.stdout, key  # every figure has a row in the printed table

    # The parts of figures that a bare value would hide are there too.
    assert figures["success_commands"]["monitor"]["our_prefix_commands_per_task"]["interactive"]["rounds"]
    assert figures["success_throughput"]["tasks_per_s"]["plain"]["rounds"]
    assert figures["retry_latency"]["celery_retry_ms"]["n"] == results["sizes"]["retry_n"]
    assert figures["retry_latency"]["floor"]["extra_ms"] > 0  # the least the three hops cost here
    assert figures["deadline_lateness"]["to_failure_stored_s"] is not None
    assert figures["list_first_page"]["cli_error"] is None and figures["list_first_page"]["cli_list_json_s"]
    assert figures["timeout_transitions"]["replays_per_s_after"] is not None
