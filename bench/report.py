"""The table printed at the end of a run, and the headline of each figure."""

from __future__ import annotations

FIGURES = (
    "success_commands", "success_throughput", "failure_stream_latency", "failure_round_trips",
    "retry_latency", "deadline_lateness", "list_first_page", "memory_per_incident", "timeout_transitions",
)


def _s(value, missing: str) -> str:
    return missing if value is None else f"{value:.3f} s"


def headline(key: str, fig: dict) -> str:
    """One cell: the measured value with the spread that matters for it."""
    if "error" in fig:
        return f"ERROR: {fig['error']}"
    if key == "success_commands":
        extra = fig["extra_commands_per_task"]
        return (f"{fig['value']:g} on our keys (MONITOR); commandstats "
                f"{fig['commands_per_task']['interactive']['median']:.3f} vs "
                f"{fig['commands_per_task']['plain']['median']:.3f}/task, "
                f"extra {extra['median']:+.3f} [{extra['min']:+.3f}..{extra['max']:+.3f}], "
                f"background ±{fig['background_noise_per_task']:.3f}")
    if key == "success_throughput":
        r, cpu = fig["ratio"], fig["cpu_ratio"]
        t = fig["tasks_per_s"]
        return (f"{r['median']:.3f} [{r['min']:.3f}..{r['max']:.3f}], totals {fig['ratio_of_totals']:.3f} "
                f"({t['interactive']['median']:.0f} vs {t['plain']['median']:.0f} tasks/s); "
                f"worker CPU ratio {cpu['median']:.3f} [{cpu['min']:.3f}..{cpu['max']:.3f}]; "
                f"+{fig['call_overhead_us']['extra_us']:.1f} us/call")
    if key == "failure_stream_latency":
        d = fig["distribution"]
        return (f"p50 {d['p50']:.2f} ms [{d['p50_rounds']['min']:.2f}..{d['p50_rounds']['max']:.2f}], "
                f"p99 {d['p99']:.2f} ms [{d['p99_rounds']['min']:.2f}..{d['p99_rounds']['max']:.2f}] "
                f"(upper bound; lower p50 {fig['lower_bound']['p50']:.2f} ms)")
    if key == "failure_round_trips":
        return (f"{fig['value']:g} EVALSHA per park [{fig['ours_per_park']['min']:g}..{fig['ours_per_park']['max']:g}]; "
                f"Celery apart: {fig['celery_state_write_commands_per_park']['median']:g} state-write, "
                f"{fig['celery_event_publishes_per_park']['median']:g} event commands")
    if key == "retry_latency":
        i, c, r = fig["interactive_ms"], fig["celery_retry_ms"], fig["ratio_p50_rounds"]
        return (f"ratio {fig['value']:.2f} [{r['min']:.2f}..{r['max']:.2f}]: p50 {i['p50']:.1f} vs "
                f"{c['p50']:.1f} ms (+{fig['extra_p50_ms']:.2f} ms), p99 {i['p99']:.1f} vs {c['p99']:.1f} ms; "
                f"floor {fig['floor']['ratio']:.2f} (+{fig['floor']['extra_ms']:.2f} ms: "
                f"one round trip from idle + two back to back)")
    if key == "deadline_lateness":
        d, f = fig["to_timeout_transition_s"], fig["to_failure_stored_s"]
        late = f"> {fig['failure_wait_s']:g} s wait"
        failure = (f"; FAILURE stored p50 {_s(f['p50'], late)}, p99 {_s(f['p99'], late)} "
                   f"({fig['failures_stored']}/{fig['n']} within the wait)")
        return (f"transition p50 {d['p50']:.3f} s, p99 {d['p99']:.3f} s "
                f"[{d['p99_rounds']['min']:.3f}..{d['p99_rounds']['max']:.3f}]{failure} "
                f"({fig['expired']}/{fig['n']} over {fig['spread_s']:g} s)")
    if key == "list_first_page":
        a, cli = fig["api_ms"], fig["cli_list_json_s"]
        cli_text = f"`list --json` {cli['median']:.2f} s (process)" if cli else f"`list --json`: {fig['cli_error']}"
        return f"API p50 {a['p50']:.1f} ms (CPU {a['cpu_p50']:.1f} ms), p99 {a['p99']:.1f} ms; {cli_text}"
    if key == "memory_per_incident":
        b = fig["bytes"]
        return f"{b['median']:.0f} B [{b['min']:.0f}..{b['max']:.0f}] ({b['median'] / 1024:.2f} KiB)"
    if key == "timeout_transitions":
        p, rep = fig["per_s"], fig["replays_per_s_after"]
        unfinished = f"; {fig['rounds_not_finished']} round(s) unfinished after {fig['timeout_s']:g} s" \
            if fig["rounds_not_finished"] else ""
        replay = f"; replays after: {rep['median']:.0f}/s" if rep else ""
        return f"{p['median']:.0f}/s [{p['min']:.0f}..{p['max']:.0f}]{unfinished}{replay}"
    return str(fig.get("value"))


def table(figures: dict) -> str:
    rows = [("figure", "measured (median [spread])", "target", "met")]
    for key in FIGURES:
        fig = figures.get(key)
        if fig is None:
            continue
        met = "ERROR" if "error" in fig else ("yes" if fig.get("met") else "NO")
        rows.append((fig.get("figure", key), headline(key, fig), fig.get("target", ""), met))
    widths = [max(len(r[i]) for r in rows) for i in (0, 2, 3)]
    lines = []
    for n, (name, value, target, met) in enumerate(rows):
        lines.append(f"{name:<{widths[0]}}  {target:<{widths[1]}}  {met:<{widths[2]}}  {value}")
        if n == 0:
            lines.append("-" * (sum(widths) + 6 + 40))
    return "\n".join(lines)


def markdown(figures: dict) -> str:
    rows = ["| figure | measured (median [spread]) | target | met |", "|---|---|---|---|"]
    for key in FIGURES:
        fig = figures.get(key)
        if fig is None:
            continue
        met = "ERROR" if "error" in fig else ("yes" if fig.get("met") else "**no**")
        rows.append(f"| {fig.get('figure', key)} | {headline(key, fig)} | {fig.get('target', '')} | {met} |")
    return "\n".join(rows)
