"""Benchmark kinds: each runs one job and returns its result block."""

from __future__ import annotations

from typing import Any

from ggufbench.benchmarks._job import JobContext


def run_benchmark(kind: str, ctx: JobContext) -> dict[str, Any]:
    if kind == "lm_eval":
        from ggufbench.benchmarks import lm_eval

        return lm_eval.run(ctx)
    if kind == "elyza_tasks_100":
        from ggufbench.benchmarks import elyza

        return elyza.run(ctx)
    if kind == "fidelity":
        from ggufbench.benchmarks import fidelity_job

        return fidelity_job.run(ctx)
    raise ValueError(f"unknown benchmark kind {kind}")


__all__ = ["JobContext", "run_benchmark"]
