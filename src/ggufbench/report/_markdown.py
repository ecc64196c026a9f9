"""report.md: the human-readable result of a run."""

from __future__ import annotations

from typing import Any

from ggufbench.report._fidelity import fidelity_view
from ggufbench.report._format import (
    benchmark_metrics,
    error_kind,
    interval,
    marker,
    pvalue,
    size_mib,
)
from ggufbench.report._paired import versus


def _fmt(metric: dict[str, Any] | None) -> str:
    if not metric or metric.get("value") is None:
        return "–"
    value, err = metric["value"], metric.get("stderr")
    shown = f"{value:.4f} ± {err:.4f}" if err is not None else f"{value:.4f}"
    return f"{shown} {interval(metric.get('ci95'))}".rstrip()


def _delta(cur: dict[str, Any] | None, base: dict[str, Any] | None, found: Any) -> list[str]:
    """[Δ ± error [interval] (kind), test p → Holm p, verdict] for one model and metric."""
    if not cur or not base or cur.get("value") is None or base.get("value") is None:
        return ["–", "–", "–"]
    vs = found or versus(
        cur["value"], cur.get("stderr"), base["value"], base.get("stderr"), None, None
    )
    err = vs.get("stderr")
    shown = f"{vs['delta']:+.4f}" if err is None else f"{vs['delta']:+.4f} ± {err:.4f}"
    shown = f"{shown} {interval(vs.get('ci95'))} ({error_kind(vs)})".replace("  ", " ")
    test = "–"
    if vs.get("p") is not None:
        test = f"{vs.get('test')}: {pvalue(vs['p'])}"
        if vs.get("p_holm") is not None:
            test += f" → {pvalue(vs['p_holm'])}"
    flips = vs.get("mcnemar")
    if flips:
        test += f" (flips {flips['baseline_only']}↓ {flips['variant_only']}↑)"
    symbol, word = marker(vs)
    return [shown, test, symbol if word == "not tested" else f"{symbol} {word}"]


def render(summary: dict[str, Any]) -> str:
    base = summary.get("baseline")
    models = summary["models"]
    lines = [f"# ggufbench report: {summary['run_id']}", ""]
    lines += [f"> {note}" for note in summary.get("notes", [])] + (
        [""] if summary.get("notes") else []
    )
    lines += [f"Status: **{summary['status']}**. Baseline: **{base}**.", ""]
    lines += ["## Models", "", "| model | quantization | size | sha256 |", "|---|---|---|---|"]
    for alias, m in models.items():
        sha = (m.get("sha256") or "–")[:16]
        size = size_mib(m.get("size_bytes"))
        lines.append(f"| {alias} | {m.get('quant') or '–'} | {size} | `{sha}` |")
    lines.append("")
    scores = benchmark_metrics(summary)
    if scores:
        lines += ["## Scores", "", SCORES_NOTE, ""]
    for bench, metric_names in scores.items():
        for metric in metric_names:
            lines += _metric_table(summary, bench, metric)
    lines += _fidelity(summary) + _elyza(models) + _speed(models) + _failures(models)
    return "\n".join(lines) + "\n"


SCORES_NOTE = (
    "Each value is ± its standard error [95% interval]. Δ is the difference from the "
    "baseline ± its error [95% interval] and which error it is: paired over the same "
    "items where the samples allow (interval: paired bootstrap), clustered by subtask "
    "where that error is larger (interval: normal), otherwise independent (the two "
    "errors combined). The test's p is followed by the Holm-corrected p across every "
    "comparison of the report; ▲ better and ▼ worse are significant after the "
    "correction (p < 0.05), = is no significant difference. Method: docs/report.md."
)


def _metric_table(summary: dict[str, Any], bench: str, metric: str) -> list[str]:
    base = summary.get("baseline")
    models = summary["models"]
    lines = [
        f"### {bench} — {metric}",
        "",
        "| model | value | Δ vs baseline | test: p → Holm | verdict |",
        "|---|---|---|---|---|",
    ]
    base_entry = models.get(base, {}).get("benchmarks", {}).get(bench, {})
    base_m = base_entry.get("metrics", {}).get(metric)
    notes = []
    for alias, m in models.items():
        entry = m["benchmarks"].get(bench, {})
        cur = entry.get("metrics", {}).get(metric)
        status = entry.get("status", "skipped")
        shown = _fmt(cur) if status == "done" else status
        if alias == base:
            lines.append(f"| {alias} | {shown} | (baseline) | | |")
            continue
        found = entry.get("vs_baseline", {}).get(metric)
        cells = _delta(cur, base_m, found)
        lines.append(f"| {alias} | {shown} | {' | '.join(cells)} |")
        if found and found.get("note"):
            notes.append(f"- {alias}: {found['note']}")
    return lines + [""] + notes + ([""] if notes else [])


def _fidelity(summary: dict[str, Any]) -> list[str]:
    """Fidelity: a row of figures per model, its KLD percentiles, and who was skipped and why."""
    view = fidelity_view(summary)
    if view is None:
        return []

    def table(headings: list[str], rows: list[list[str]]) -> list[str]:
        out = ["| model | " + " | ".join(headings) + " |", "|---" * (len(headings) + 1) + "|"]
        return out + ["| " + " | ".join(row) + " |" for row in rows] + [""]

    def name(row: dict[str, Any]) -> str:
        return f"{row['model']} (baseline)" if row["baseline"] else row["model"]

    lines = ["## Fidelity", "", view["intro"], ""]
    rows = view["rows"]
    lines += table(
        [*view["headings"], "tokens"], [[name(r), *r["cells"], str(r["tokens"])] for r in rows]
    )
    compared = [r for r in rows if not r["baseline"]]
    if compared:
        lines += ["KLD per scored token, percentiles:", ""]
        spread = [[name(r), *r["percentiles"]] for r in compared]
        lines += table(view["percentile_headings"], spread)
    for note in view["notes"]:
        lines.append(f"- {note['why'] or note['model'] + ' ' + str(note['status'])}")
    return lines + ([""] if view["notes"] else [])


ELYZA = "elyza_tasks_100"
SMALL_JUDGE_PARAMS = 7_000_000_000


def _elyza(models: dict[str, Any]) -> list[str]:
    """ELYZA-tasks-100: who judged, the 1-5 distribution and what failed, by model."""
    entries = {
        alias: m["benchmarks"][ELYZA]
        for alias, m in models.items()
        if m["benchmarks"].get(ELYZA, {}).get("status") == "done"
    }
    if not entries:
        return []
    lines = [
        "## ELYZA-tasks-100",
        "",
        "Scores are 1-5 from an LLM judge. A failed generation or judgement has no score "
        "and is left out of the mean; an output without a final answer scores 1 and is "
        "counted as a failed generation too.",
        "",
    ]
    judges: list[dict[str, Any]] = []
    for entry in entries.values():
        judge = entry.get("judge") or {}
        if judge and judge not in judges:
            judges.append(judge)
    lines += [f"- Judge: {_judge_line(j)}" for j in judges] + [""]
    small = [j for j in judges if 0 < (j.get("n_params") or 0) < SMALL_JUDGE_PARAMS]
    for judge in small:
        lines += [
            f"> **The judge has only {judge['n_params'] / 1e9:.2g}B parameters.** A judge "
            "this small cannot grade Japanese answers reliably: these scores show that the "
            "pipeline works, not how good the models are. Use a strong judge (for example "
            "a GPT-4-class model behind `runner: openai`) for numbers you report.",
            "",
        ]
    lines += [
        "| model | mean ± stderr | 1 | 2 | 3 | 4 | 5 | scored / samples "
        "| failed generations | no final answer | failed judgements |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for alias, e in entries.items():
        dist = e.get("distribution") or {}
        fails = e.get("failures") or {}
        counts = " | ".join(str(dist.get(str(k), 0)) for k in range(1, 6))
        scored = e.get("n_scored", sum(int(v) for v in dist.values()))
        lines.append(
            f"| {alias} | {_fmt(e.get('metrics', {}).get('score'))} | {counts} | "
            f"{scored} / {e.get('n_samples', 0)} | {fails.get('generation', 0)} | "
            f"{fails.get('no_final_answer', 0)} | {fails.get('judgement', 0)} |"
        )
    return lines + [""]


def _judge_line(judge: dict[str, Any]) -> str:
    runner = judge.get("runner", "?")
    if judge.get("file"):
        model = f"`{judge['file']}` ({judge.get('quant') or '?'}, sha256 `{judge['model'][:16]}`)"
    else:
        model = f"`{judge.get('model', '?')}`"
    size = f", {judge['n_params'] / 1e9:.2g}B parameters" if judge.get("n_params") else ""
    how = f"; {judge['constraint']}" if judge.get("constraint") else ""
    return f"{runner} {model}{size}, prompt {judge.get('prompt_version', '?')}{how}"


def _speed(models: dict[str, Any]) -> list[str]:
    """Per job, over its computing time: requests, tokens read (loglikelihood and
    fidelity jobs; runs before this was recorded show "–") and tokens generated."""
    lines = [
        "## Speed",
        "",
        "| model | benchmark | wall s | requests | from cache | computed/s "
        "| input tokens/s | gen tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for alias, m in models.items():
        for bench, e in m["benchmarks"].items():
            if e.get("status") != "done":
                continue
            req = e.get("requests", {})
            compute = e.get("compute_s") or 0
            rps = f"{req.get('computed', 0) / compute:.2f}" if compute else "–"
            rates = [_per_s(e.get(k), compute) for k in ("input_tokens", "gen_tokens")]
            lines.append(
                f"| {alias} | {bench} | {e.get('wall_s', 0):.1f} | {req.get('total', 0)} "
                f"| {req.get('from_cache', 0)} | {rps} | {' | '.join(rates)} |"
            )
    return lines + [""]


def _per_s(count: int | None, compute_s: float) -> str:
    """``count`` per second of computing, or "–" where nothing was counted."""
    return f"{count / compute_s:.1f}" if count and compute_s else "–"


def _failures(models: dict[str, Any]) -> list[str]:
    rows = [
        (a, b, e)
        for a, m in models.items()
        for b, e in m["benchmarks"].items()
        if e.get("status") == "failed"
    ]
    if not rows:
        return []
    lines = ["## Failed jobs", "", "| model | benchmark | attempts | reason |", "|---|---|---|---|"]
    for alias, bench, e in rows:
        reason = str(e.get("error") or "").replace("|", "\\|")
        lines.append(f"| {alias} | {bench} | {e.get('attempts')} | {reason} |")
    return lines + [""]
