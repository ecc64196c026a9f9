"""Differences from the baseline, paired over the same items where the samples allow.

Every model of a run answers the same items, so the honest standard error of a
difference is that of the per-item differences, sqrt(var(x_i - b_i) / n), not
the two standard errors combined as if the samples were independent: the items'
shared difficulty cancels in the pairs, which usually makes the paired error
smaller, and never hides a correlation the combined one would miss.

The pairing is used only when it reproduces the reported numbers: both models
have a score for exactly the same items, and the mean of those scores equals
each model's reported value. Metrics that are not per-item means (perplexity)
or items missing on one side fall back to the combined standard error.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from ggufbench.rundir import samples_file

__all__ = ["add_vs_baseline", "item_scores", "versus"]

Items = dict[tuple[str, Any], float]


def item_scores(path: Path) -> dict[str, Items]:
    """{metric: {(task, doc_id): score}} from a samples file; metric names as in summary.json."""
    out: dict[str, Items] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        item = (str(row.get("task", "")), row.get("doc_id"))
        if isinstance(row.get("scores"), dict):  # lm-eval: one line per item and filter
            flt = row.get("filter") or "none"
            for name, value in row["scores"].items():
                metric = name if flt == "none" else f"{name},{flt}"
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out.setdefault(metric, {})[item] = float(value)
        elif isinstance(row.get("score"), int | float):  # ELYZA: judged items only
            out.setdefault("score", {})[item] = float(row["score"])
    return out


def _reproduces(items: Items, value: float) -> bool:
    return len(items) > 1 and math.isclose(
        statistics.fmean(items.values()), value, rel_tol=1e-9, abs_tol=1e-12
    )


def versus(
    value: float, stderr: float | None, base: float, base_stderr: float | None,
    items: Items | None, base_items: Items | None,
) -> dict[str, Any]:  # fmt: skip
    """The difference value - base with its standard error, paired where possible."""
    out: dict[str, Any] = {"delta": value - base}
    if (
        items is not None
        and base_items is not None
        and items.keys() == base_items.keys()
        and _reproduces(items, value)
        and _reproduces(base_items, base)
    ):
        diffs = [items[k] - base_items[k] for k in items]
        out |= {
            "stderr": statistics.stdev(diffs) / math.sqrt(len(diffs)),
            "method": "paired",
            "n": len(diffs),
        }
    elif stderr is not None and base_stderr is not None:
        out |= {"stderr": math.hypot(stderr, base_stderr), "method": "independent"}
    else:
        out |= {"stderr": None, "method": "none"}
    return out


def add_vs_baseline(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Put ``vs_baseline`` ({metric: versus(...)}) into every done benchmark of every
    model but the baseline, from the samples in ``run_dir``."""
    base = summary.get("baseline")
    models = summary["models"]
    base_benches = models.get(base, {}).get("benchmarks", {})
    base_scores: dict[str, dict[str, Items]] = {}  # read once per benchmark
    for alias, model in models.items():
        for bench, entry in model["benchmarks"].items():
            entry.pop("vs_baseline", None)
            base_entry = base_benches.get(bench, {})
            if alias == base or "done" != entry.get("status") or "done" != base_entry.get("status"):
                continue
            mine = item_scores(samples_file(run_dir, alias, bench))
            if bench not in base_scores:
                base_scores[bench] = item_scores(samples_file(run_dir, str(base), bench))
            theirs = base_scores[bench]
            compared = {}
            for metric, m in entry.get("metrics", {}).items():
                b = base_entry.get("metrics", {}).get(metric)
                if m.get("value") is None or not b or b.get("value") is None:
                    continue
                compared[metric] = versus(
                    m["value"], m.get("stderr"), b["value"], b.get("stderr"),
                    mine.get(metric), theirs.get(metric),
                )  # fmt: skip
            entry["vs_baseline"] = compared
    return summary
