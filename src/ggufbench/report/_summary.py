"""summary.json: the machine-readable result of a run, from its ledger."""

from __future__ import annotations

import json
from typing import Any

from ggufbench.errors import ConfigError
from ggufbench.ledger import Ledger
from ggufbench.plan import FIDELITY, fidelity_skipped
from ggufbench.report._paired import add_vs_baseline
from ggufbench.rundir import RunDir, results_file, write_json

SCHEMA_VERSION = 1
# A job result's optional fields that its summary entry carries when they are there.
EXTRAS = (
    "gen_tokens",
    "input_tokens",
    "compute_s",
    "judge",
    "distribution",
    "failures",
    "n_scored",
    "details",
)


def current_status(run: RunDir) -> str:
    """The run's status from run.json; a run left 'running' by a dead process is interrupted."""
    status = str(run.meta().get("status", "unknown"))
    return "interrupted" if status == "running" and not run.is_live() else status


def build_summary(
    run: RunDir, ledger: Ledger, status: str, baseline: str | None = None
) -> dict[str, Any]:
    """The summary of a run from its ledger; ``baseline`` overrides the suite's."""
    meta = run.meta()
    infos: dict[str, dict[str, Any]] = meta.get("models", {})
    suite = run.suite()
    models: dict[str, dict[str, Any]] = {}
    for model in suite.models:
        info = infos.get(model.alias, {})
        models[model.alias] = {
            "path": info.get("path") or (str(model.path) if model.path else None),
            "sha256": info.get("sha256"),
            "quant": info.get("quant"),
            "size_bytes": info.get("size_bytes"),
            "runner": info.get("runner"),
            "benchmarks": {},
        }
    for job in ledger.jobs():
        if job.model not in models or "shard" in job.spec:  # a shard's answers are its task's
            continue
        result = job.result or {}
        status_of = (
            "done" if job.status == "done" else ("failed" if job.status == "failed" else "skipped")
        )
        skipped = result.get("skipped") if job.status == "done" else None  # why, in a sentence
        entry: dict[str, Any] = {
            "status": "skipped" if skipped else status_of,
            "metrics": result.get("metrics", {}),
            "n_samples": result.get("n_samples", 0),
            "wall_s": result.get("wall_s", 0.0),
            "requests": result.get("requests", {"total": 0, "computed": 0, "from_cache": 0}),
            "attempts": job.attempts,
            "error": skipped or (job.error if job.status != "done" else None),
            "ran_on": [
                {"attempt": a["n"], "host": a.get("host"), "status": a["status"]}
                for a in ledger.attempts(job.id)
            ],
        }
        _mark_direction(entry["metrics"], run, job.model, job.benchmark)
        for extra in EXTRAS:
            if extra in result:
                entry[extra] = result[extra]
        models[job.model]["benchmarks"][job.benchmark] = entry
    for alias, why in fidelity_skipped(suite).items():  # left out of the plan for their runner
        if alias in models:
            models[alias]["benchmarks"].setdefault(FIDELITY, _skipped(why))
    if baseline is not None and baseline not in models:
        raise ConfigError(
            f"--baseline {baseline} is not a model of this run; use one of {', '.join(models)}"
        )
    summary = {
        "schema_version": SCHEMA_VERSION,
        "run_id": meta.get("id", run.path.name),
        "status": status,
        "baseline": baseline or suite.baseline(),
        "models": models,
    }
    return add_vs_baseline(summary, run.path)


def _skipped(why: str) -> dict[str, Any]:
    """The entry of a benchmark that no job runs for a model, and why."""
    requests = {"total": 0, "computed": 0, "from_cache": 0}
    return {"status": "skipped", "metrics": {}, "n_samples": 0, "wall_s": 0.0,
            "requests": requests, "attempts": 0, "error": why, "ran_on": []}  # fmt: skip


def _mark_direction(metrics: dict[str, Any], run: RunDir, alias: str, bench: str) -> None:
    """Copy lm-eval's higher_is_better flag of each metric from the job's results file."""
    try:
        flags = json.loads(results_file(run.path, alias, bench).read_text("utf-8"))
        by_task = flags.get("higher_is_better") or {}
    except (OSError, ValueError, AttributeError):
        return
    own = by_task.get(bench) or next(iter(by_task.values()), None) or {}
    for name, metric in metrics.items():
        flag = own.get(name.split(",")[0]) if isinstance(own, dict) else None
        if isinstance(flag, bool) and isinstance(metric, dict):
            metric["higher_is_better"] = flag


def write_summary(
    run: RunDir, ledger: Ledger, status: str, baseline: str | None = None
) -> dict[str, Any]:
    summary = build_summary(run, ledger, status, baseline)
    write_json(run.path / "summary.json", summary)
    return summary
