"""What went wrong in a run: failed jobs, and the outputs withheld from thinking models.

Only the reasons are counted: a sample keeps the thinking's hashes and lengths,
never its text, and nothing here reads more than ``thinking.withheld_reason``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ggufbench.report._samples import read_rows, samples_of

__all__ = ["failed_jobs", "withheld_counts"]


def failed_jobs(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """[{model, bench, attempts, error}] for every failed job."""
    return [
        {"model": alias, "bench": bench, "attempts": e.get("attempts"), "error": e.get("error")}
        for alias, model in summary["models"].items()
        for bench, e in model["benchmarks"].items()
        if e.get("status") == "failed"
    ]


def withheld_counts(summary: dict[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """[{model, bench, reasons: {reason: count}, n}] where a model's outputs were withheld."""
    rows = []
    for alias, model in summary["models"].items():
        for bench in model["benchmarks"]:
            reasons: Counter[str] = Counter()
            items = set()
            for row in read_rows(samples_of(summary, alias, bench, run_dir)):
                reason = (row.get("thinking") or {}).get("withheld_reason")
                key = (row.get("task"), row.get("doc_id"))
                if reason and key not in items:  # lm-eval writes a line per filter
                    items.add(key)
                    reasons[str(reason)] += 1
            if reasons:
                rows.append(
                    {"model": alias, "bench": bench, "reasons": dict(reasons.most_common())}
                )
    return rows
