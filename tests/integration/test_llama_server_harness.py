"""A job run end to end on the llama-server runner, as a worker runs it: the model's
settings (as the plan writes them) -> the backend -> the cache wrapper and the
run's ledger -> the benchmark (lm-eval's own evaluator) -> its result; then the
same job again, answered from the ledger.

``run_job`` is the harness; test_ollama_harness.py uses it for the ollama runner.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_llama_server import THREADS

from ggufbench.backends._base import NotSupported
from ggufbench.backends.llama_server import LlamaServerBackend
from ggufbench.benchmarks import JobContext, run_benchmark
from ggufbench.cached import CachedBackend
from ggufbench.ledger import JobRow, Ledger

ALIAS = "served"


def run_job(
    run_dir: Path,
    model: dict[str, Any],
    task: str,
    tasks_dir: Path,
    make_backend: Callable[[dict[str, Any]], Any],
    limit: int = 3,
) -> dict[str, Any]:
    """Run one lm-eval job the way the worker does; return its result block."""
    run_dir.mkdir(parents=True, exist_ok=True)
    job_id = f"{ALIAS}/{task}"
    spec = {
        "model": {"alias": ALIAS, **model},
        "benchmark": {"tasks": [task], "limit": limit, "include_path": str(tasks_dir)},
        "name": task,
    }
    ledger = Ledger(run_dir / "ledger.sqlite", create=True)
    if not any(job.id == job_id for job in ledger.jobs()):
        ledger.add_jobs([JobRow(job_id, ALIAS, task, "lm_eval", spec)])
    owner = ledger.claim()
    backend = make_backend(spec["model"])
    try:
        cached = CachedBackend(backend, ledger, owner, job_id)
        ctx = JobContext(run_dir, job_id, ALIAS, task, spec, ledger, owner, cached)
        result = run_benchmark("lm_eval", ctx)
        result["identity"] = backend.info.identity
        return result
    finally:
        backend.close()
        ledger.close()


@pytest.fixture(scope="module")
def settings(smollm2: Path) -> dict[str, Any]:
    return {
        "runner": "llama-server",
        "path": str(smollm2),
        "n_ctx": 2048,
        "n_gpu_layers": 0,
        "threads": THREADS,
        "parallel": 2,
    }


def managed(model: dict[str, Any], server_bin: str) -> LlamaServerBackend:
    return LlamaServerBackend.from_model({**model, "server_bin": server_bin}, None)


def test_a_generation_job_runs_and_resumes_from_the_ledger(
    tmp_path: Path, settings: dict[str, Any], tasks_dir: Path, server_bin: str
) -> None:
    def make(model: dict[str, Any]) -> LlamaServerBackend:
        return managed(model, server_bin)

    first = run_job(tmp_path, settings, "demo_gsm8k_cot", tasks_dir, make)
    assert first["requests"] == {"total": 3, "computed": 3, "from_cache": 0}
    assert "exact_match,strict-match" in first["metrics"] and first["n_samples"] == 3
    again = run_job(tmp_path, settings, "demo_gsm8k_cot", tasks_dir, make)
    assert again["requests"] == {"total": 3, "computed": 0, "from_cache": 3}
    assert again["metrics"] == first["metrics"] and again["identity"] == first["identity"]


def test_a_loglikelihood_job_fails_with_the_sentence(
    tmp_path: Path, settings: dict[str, Any], tasks_dir: Path, server_bin: str
) -> None:
    with pytest.raises(NotSupported, match="runner: llama-cpp"):
        run_job(tmp_path, settings, "demo_hellaswag", tasks_dir, lambda m: managed(m, server_bin))
