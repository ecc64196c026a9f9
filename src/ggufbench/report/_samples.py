"""Reading a job's samples file, and finding the files of a model of a report.

A report's models usually come from one run directory; a comparison across runs
marks each model with the run directory and alias it came from (``run_dir`` and
``alias`` in its summary entry).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ggufbench.rundir import results_file, samples_file

__all__ = ["Items", "ScoresOf", "item_scores", "read_rows", "results_of", "samples_of"]

Items = dict[tuple[str, Any], float]  # (task, doc_id) -> score; task is the subtask of a group
ScoresOf = Callable[[str, str], dict[str, Items]]  # (model key, benchmark) -> {metric: Items}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The sample lines of a file; a missing file or a damaged line reads as nothing."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def metric_name(name: str, row: dict[str, Any]) -> str:
    """A score's name as summary.json writes it: the filter kept unless it is 'none'."""
    flt = row.get("filter") or "none"
    return name if flt == "none" else f"{name},{flt}"


def item_key(row: dict[str, Any]) -> tuple[str, Any]:
    return (str(row.get("task", "")), row.get("doc_id"))


def item_scores(path: Path | list[dict[str, Any]]) -> dict[str, Items]:
    """{metric: {(task, doc_id): score}} from a samples file; metric names as in summary.json."""
    rows = read_rows(path) if isinstance(path, Path) else path
    out: dict[str, Items] = {}
    for row in rows:
        item = item_key(row)
        if isinstance(row.get("scores"), dict):  # lm-eval: one line per item and filter
            for name, value in row["scores"].items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out.setdefault(metric_name(name, row), {})[item] = float(value)
        elif isinstance(row.get("score"), int | float):  # ELYZA: judged items only
            out.setdefault("score", {})[item] = float(row["score"])
    return out


def _source(summary: dict[str, Any], key: str, run_dir: Path) -> tuple[Path, str]:
    model = summary["models"].get(key, {})
    return Path(model.get("run_dir") or run_dir), str(model.get("alias") or key)


def samples_of(summary: dict[str, Any], key: str, bench: str, run_dir: Path) -> Path:
    """The samples file of model ``key`` of a report on ``bench``."""
    where, alias = _source(summary, key, run_dir)
    return samples_file(where, alias, bench)


def results_of(summary: dict[str, Any], key: str, bench: str, run_dir: Path) -> Path:
    """The results file of model ``key`` of a report on ``bench``."""
    where, alias = _source(summary, key, run_dir)
    return results_file(where, alias, bench)
