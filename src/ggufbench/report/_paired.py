"""Differences from the baseline, tested on the same items, corrected across the run.

Every model of a run answers the same items, so a difference is judged on the
pairs: the per-item differences d_i = x_i - b_i cancel what the items' difficulty
shares between the two models. Per metric (docs/report.md has the details):

- the standard error of the mean difference is that of the d_i, or the clustered
  one where the items come from several subtasks and it is the larger;
- the 95% interval is a paired bootstrap (fixed seed), or normal on the clustered error;
- the test is exact McNemar for 0/1 scores, a paired t-test otherwise, a z-test on
  the clustered error where that error is used;
- Holm's correction runs across every comparison of the report; ``significant``
  is decided on the corrected p.

The pairing is used only when it reproduces the reported numbers: both models
have a score for exactly the same items, and the mean of those scores equals
each model's reported value. Otherwise (perplexities, groups averaged by
subtask, a job that scored fewer items) the two standard errors are combined as
if independent, and ``note`` says why in one sentence.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from ggufbench.plan import FIDELITY
from ggufbench.report._samples import Items, ScoresOf, item_scores, samples_of
from ggufbench.report._stats import (
    bootstrap_ci,
    clustered_se,
    holm,
    mcnemar,
    normal_ci,
    normal_p,
    paired_t_p,
)

__all__ = ["ALPHA", "add_vs_baseline", "higher_is_better", "versus"]

ALPHA = 0.05
CLUSTERED = "clustered by subtask"
LOWER_IS_BETTER = ("perplexity", "bits_per_byte", "ter", "kld")


def higher_is_better(metric: str, entry: dict[str, Any] | None = None) -> bool:
    """From the metric's summary entry (lm-eval's own flag) or, for old runs, its name."""
    if entry and isinstance(entry.get("higher_is_better"), bool):
        return bool(entry["higher_is_better"])
    return not any(word in metric.split(",")[0] for word in LOWER_IS_BETTER)


def _reproduces(items: Items, value: float) -> bool:
    return len(items) > 1 and math.isclose(
        statistics.fmean(items.values()), value, rel_tol=1e-9, abs_tol=1e-12
    )


def _pairing_problem(items: Items | None, base: Items | None, x: float, b: float) -> str | None:
    """Why these items cannot be paired, in words; None when they can."""
    if items is None or base is None:
        return "the samples have no per-item score for this metric"
    if items.keys() != base.keys():
        both = len(items.keys() & base.keys())
        return (
            f"the scored items differ (baseline {len(base)}, this model {len(items)}, "
            f"{both} in both)"
        )
    if not _reproduces(items, x) or not _reproduces(base, b):
        return "the mean of the item scores is not the reported value"
    return None


def _is_binary(*arrays: np.ndarray) -> bool:
    return all(bool(np.all((a == 0) | (a == 1))) for a in arrays)


def _paired(items: Items, base_items: Items) -> dict[str, Any]:
    keys = sorted(items, key=repr)
    x = np.array([items[k] for k in keys])
    b = np.array([base_items[k] for k in keys])
    d = x - b
    delta = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    out: dict[str, Any] = {"method": "paired", "n": int(d.size)}
    subtasks = {k[0] for k in keys}
    se_clustered = clustered_se(d, [k[0] for k in keys]) if len(subtasks) > 1 else 0.0
    flips = mcnemar(x, b) if _is_binary(x, b) else None
    if flips is not None:
        out["mcnemar"] = {
            "p": flips.p,
            "baseline_only": flips.baseline_only,
            "variant_only": flips.variant_only,
        }
    if se_clustered > se:
        out |= {
            "stderr": se_clustered,
            "stderr_kind": CLUSTERED,
            "n_clusters": len(subtasks),
            "ci95": list(normal_ci(delta, se_clustered)),
            "ci_method": f"normal, {CLUSTERED}",
            "test": f"z-test, {CLUSTERED}",
            "p": normal_p(delta, se_clustered),
        }
    else:
        out |= {
            "stderr": se,
            "stderr_kind": "paired",
            "ci95": list(bootstrap_ci(d)),
            "ci_method": "paired bootstrap",
            "test": "McNemar exact" if flips is not None else "paired t-test",
            "p": flips.p if flips is not None else paired_t_p(x, b),
        }
    return out


def versus(
    value: float, stderr: float | None, base: float, base_stderr: float | None,
    items: Items | None, base_items: Items | None,
) -> dict[str, Any]:  # fmt: skip
    """The difference value - base: its error, interval and test, paired where possible."""
    out: dict[str, Any] = {"delta": value - base}
    problem = _pairing_problem(items, base_items, value, base)
    if problem is None and items is not None and base_items is not None:
        return out | _paired(items, base_items)
    note = f"Not paired: {problem}."
    if stderr is None or base_stderr is None:
        return out | {"stderr": None, "method": "none", "note": note}
    se = math.hypot(stderr, base_stderr)
    return out | {
        "stderr": se,
        "method": "independent",
        "stderr_kind": "independent",
        "ci95": list(normal_ci(value - base, se)),
        "ci_method": "normal, independent errors",
        "test": "z-test, independent errors",
        "p": normal_p(value - base, se),
        "note": note + " The two standard errors are combined as if independent.",
    }


def _interval(metric: dict[str, Any], items: Items | None) -> None:
    """The value's 95% interval: normal, on lm-eval's error or the clustered one if larger."""
    value, se = metric.get("value"), metric.get("stderr")
    if value is None:
        return
    how = "normal, lm-eval's standard error"
    bounded = False
    if items and _reproduces(items, value):
        scores = np.array(list(items.values()))
        bounded = _is_binary(scores)
        if len({k[0] for k in items}) > 1:
            clustered = clustered_se(scores, [k[0] for k in items])
            if se is None or clustered > se:
                se, how = clustered, f"normal, {CLUSTERED}"
    if se is None:
        return
    lo, hi = normal_ci(value, se)
    if bounded:  # a proportion cannot leave [0, 1]
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    metric["ci95"] = [lo, hi]
    metric["ci_method"] = how


def _file_scores(summary: dict[str, Any], run_dir: Path) -> ScoresOf:
    cache: dict[tuple[str, str], dict[str, Items]] = {}

    def scores(key: str, bench: str) -> dict[str, Items]:
        if (key, bench) not in cache:  # the baseline's samples are read once per benchmark
            cache[(key, bench)] = item_scores(samples_of(summary, key, bench, run_dir))
        return cache[(key, bench)]

    return scores


def add_vs_baseline(
    summary: dict[str, Any], run_dir: Path, scores_of: ScoresOf | None = None
) -> dict[str, Any]:
    """Put each value's interval and ``vs_baseline`` (every model but the baseline) into
    every done benchmark, from the samples in ``run_dir``; then correct across the run."""
    scores_of = scores_of or _file_scores(summary, run_dir)
    base = str(summary.get("baseline"))
    models = summary["models"]
    base_benches = models.get(base, {}).get("benchmarks", {})
    for alias, model in models.items():
        for bench, entry in model["benchmarks"].items():
            entry.pop("vs_baseline", None)
            if entry.get("status") != "done" or bench == FIDELITY:
                continue  # fidelity's figures are against the baseline already
            mine = scores_of(alias, bench)
            for metric, m in entry.get("metrics", {}).items():
                _interval(m, mine.get(metric))
            base_entry = base_benches.get(bench, {})
            if alias == base or base_entry.get("status") != "done":
                continue
            theirs = scores_of(base, bench)
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
    correct(summary)
    return summary


def correct(summary: dict[str, Any]) -> None:
    """Holm across every comparison that has a p; then ``significant`` and ``verdict``."""
    tested = []
    for model in summary["models"].values():
        for entry in model["benchmarks"].values():
            for metric, vs in entry.get("vs_baseline", {}).items():
                vs.pop("p_holm", None)
                if vs.get("p") is not None:
                    tested.append((metric, entry, vs))
                else:
                    vs |= {"significant": False, "verdict": "not tested"}
    for (metric, entry, vs), p_holm in zip(
        tested, holm([vs["p"] for _, _, vs in tested]), strict=True
    ):
        significant = p_holm < ALPHA
        up = higher_is_better(metric, entry.get("metrics", {}).get(metric))
        verdict = "no significant difference"
        if significant and vs["delta"] != 0:
            verdict = "better" if (vs["delta"] > 0) == up else "worse"
        vs |= {"p_holm": p_holm, "significant": significant, "verdict": verdict}
