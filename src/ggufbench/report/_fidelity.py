"""The fidelity benchmark in the reports: each model's figures against the baseline's.

Fidelity's figures are already measured against the baseline (docs/fidelity.md), so
they have views of their own, the same in report.md, report.html and the terminal,
and stay out of the tests and Holm's correction of the task scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from ggufbench.plan import FIDELITY

__all__ = [
    "COLUMNS",
    "PERCENTILES",
    "fidelity_entries",
    "fidelity_view",
    "terminal_cell",
]


class Column(NamedTuple):
    """A figure of the fidelity table, shown as llama-perplexity prints it."""

    metric: str
    heading: str
    scale: float = 1.0  # 100: in percent
    decimals: int = 6
    unit: str = ""

    def show(self, metric: dict[str, Any] | None) -> str:
        return figure(metric, self.scale, self.decimals, self.unit)


COLUMNS = (
    Column("kld", "mean KLD"),
    Column("same_top_p", "same top p", 100.0, 3, " %"),
    Column("ppl", "PPL", decimals=4),
    Column("ppl_ratio", "PPL(Q)/PPL(base)"),
    Column("ln_ppl_ratio", "ln(PPL(Q)/PPL(base))"),
    Column("delta_p", "mean Δp", 100.0, 3, " %"),
    Column("rms_delta_p", "RMS Δp", 100.0, 3, " %"),
)
# the KLD percentiles shown, low to high (summary.json's details has them all, and Δp's)
PERCENTILES = ("min", "1.0", "5.0", "10.0", "median", "90.0", "95.0", "99.0", "99.9", "max")


def fidelity_entries(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(model, fidelity entry) of every model that has one, in the report's order."""
    return [
        (alias, m["benchmarks"][FIDELITY])
        for alias, m in summary["models"].items()
        if FIDELITY in m["benchmarks"]
    ]


def is_baseline_entry(entry: dict[str, Any]) -> bool:
    """The baseline's own job: its PPL, and nothing to compare."""
    return entry.get("status") == "done" and "kld" not in (entry.get("metrics") or {})


def figure(metric: dict[str, Any] | None, scale: float, decimals: int, unit: str) -> str:
    """``value ± stderr`` in the column's unit, or – when there is none."""
    if not metric or metric.get("value") is None:
        return "–"
    value, err = scale * metric["value"], metric.get("stderr")
    shown = f"{value:.{decimals}f}"
    if err is not None:
        shown += f" ± {scale * err:.{decimals}f}"
    return shown + unit


def _intro(summary: dict[str, Any], entries: list[tuple[str, dict[str, Any]]]) -> str:
    done = [e.get("details") or {} for _, e in entries if e.get("status") == "done"]
    about = next((d for d in done if d.get("text")), {})
    base = about.get("baseline") or summary.get("baseline")
    where = ""
    if about.get("text"):
        where = (
            f" on {Path(about['text']).name} ({about.get('n_tokens')} scored tokens in "
            f"{about.get('n_chunks')} chunks of {about.get('n_ctx')})"
        )
    return (
        f"Each model's next-token distributions against the baseline {base}'s{where}, as "
        "llama-perplexity --kl-divergence measures them: value ± standard error; same top p "
        "and Δp in percent. These figures are against the baseline already, so they are not "
        "among the tests and Holm's correction of the scores. Method: docs/fidelity.md."
    )


def fidelity_view(summary: dict[str, Any]) -> dict[str, Any] | None:
    """What the reports show of fidelity, or None when no model has a fidelity entry:
    ``intro``; ``rows`` (model, baseline, figures as text, KLD percentiles as text);
    ``notes`` (each model skipped or failed, with its sentence); ``figures``, the done
    entries of the models compared, for the plot."""
    entries = fidelity_entries(summary)
    if not entries:
        return None
    rows, notes, compared = [], [], []
    for alias, entry in entries:
        if entry.get("status") != "done":
            notes.append({"model": alias, "status": entry.get("status"), "why": entry.get("error")})
            continue
        metrics = entry.get("metrics") or {}
        baseline = is_baseline_entry(entry)
        cells = [
            c.show(metrics.get(c.metric)) if not baseline or c.metric == "ppl" else "–"
            for c in COLUMNS
        ]
        found = (entry.get("details") or {}).get("kld_percentiles") or {}
        spread = [f"{found[p]:.6f}" if p in found else "–" for p in PERCENTILES]
        rows.append({"model": alias, "baseline": baseline, "cells": cells, "percentiles": spread,
                     "tokens": entry.get("n_samples", 0)})  # fmt: skip
        if not baseline:
            compared.append((alias, entry))
    return {
        "intro": _intro(summary, entries),
        "headings": [c.heading for c in COLUMNS],
        "percentile_headings": [p if p[0].isalpha() else f"{p}%" for p in PERCENTILES],
        "rows": rows,
        "notes": notes,
        "compared": compared,
    }


def terminal_cell(entry: dict[str, Any] | None) -> tuple[str, str] | None:
    """(first line, second line) of a model's fidelity cell in the terminal table."""
    if not entry:
        return None
    if entry.get("status") != "done":
        return str(entry.get("status", "–")), ""
    metrics = entry.get("metrics") or {}
    if is_baseline_entry(entry):
        return f"PPL {figure(metrics.get('ppl'), 1.0, 3, '')}", "baseline"
    kld = figure(metrics.get("kld"), 1.0, 4, "")
    return f"KLD {kld}", f"same top p {figure(metrics.get('same_top_p'), 100.0, 1, ' %')}"
