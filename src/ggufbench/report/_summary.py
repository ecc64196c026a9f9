"""summary.json: the machine-readable result of a run, from its ledger."""

from __future__ import annotations

from typing import Any

from ggufbench.ledger import Ledger
from ggufbench.report._paired import add_vs_baseline
from ggufbench.rundir import RunDir, write_json

SCHEMA_VERSION = 1


def build_summary(run: RunDir, ledger: Ledger, status: str) -> dict[str, Any]:
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
        if job.model not in models:
            continue
        result = job.result or {}
        status_of = (
            "done" if job.status == "done" else ("failed" if job.status == "failed" else "skipped")
        )
        entry: dict[str, Any] = {
            "status": status_of,
            "metrics": result.get("metrics", {}),
            "n_samples": result.get("n_samples", 0),
            "wall_s": result.get("wall_s", 0.0),
            "requests": result.get("requests", {"total": 0, "computed": 0, "from_cache": 0}),
            "attempts": job.attempts,
            "error": job.error if job.status != "done" else None,
        }
        for extra in ("gen_tokens", "compute_s", "judge", "distribution", "failures", "n_scored"):
            if extra in result:
                entry[extra] = result[extra]
        models[job.model]["benchmarks"][job.benchmark] = entry
    summary = {
        "schema_version": SCHEMA_VERSION,
        "run_id": meta.get("id", run.path.name),
        "status": status,
        "baseline": suite.baseline(),
        "models": models,
    }
    return add_vs_baseline(summary, run.path)


def write_summary(run: RunDir, ledger: Ledger, status: str) -> dict[str, Any]:
    summary = build_summary(run, ledger, status)
    write_json(run.path / "summary.json", summary)
    return summary
