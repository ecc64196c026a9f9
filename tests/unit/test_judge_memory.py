"""The ELYZA judge's memory: budgeted with its job, checked before the run, and a load that
fails for lack of memory is retried with the sizes in its message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ggufbench.benchmarks.elyza_data import demo_dataset_path
from ggufbench.config import parse_suite
from ggufbench.errors import BackendError, ModelFileError
from ggufbench.footprint import footprint_bytes
from ggufbench.gguf_file import validate
from ggufbench.plan import job_id
from ggufbench.preflight import Report, check
from ggufbench.resources import Gpu, Machine, load_error
from ggufbench.testmodels import smollm2_path

GIB = 2**30
ELYZA = "elyza_tasks_100"


def suite(tmp_path: Path, model_ctx: int, judge_ctx: int) -> Any:
    """A GGUF model and an HTTP model, both judged by an in-process GGUF judge."""
    data = {
        "name": "judged",
        "output_root": str(tmp_path / "runs"),
        "models": [
            {"alias": "local", "path": str(smollm2_path()), "n_ctx": model_ctx, "n_gpu_layers": 0},
            {
                "alias": "http",
                "runner": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "model": "m",
            },
        ],
        "benchmarks": [
            {
                ELYZA: {
                    "dataset": str(demo_dataset_path()),
                    "judge": {"path": str(smollm2_path()), "n_ctx": judge_ctx},
                }
            }
        ],
    }
    return parse_suite(data, tmp_path)


def size(n_ctx: int) -> int:
    return footprint_bytes(validate(smollm2_path()), n_ctx)


def machine(ram: int, *gpus: Gpu) -> Machine:
    return Machine(cores=4, total_ram=ram, available_ram=ram, gpus=gpus)


def preflight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, box: Machine, **ctx: int) -> Report:
    monkeypatch.setattr("ggufbench.resources.probe", lambda: box)
    return check(suite(tmp_path, ctx["model"], ctx["judge"]), datasets=False)


def test_an_elyza_job_reserves_its_judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, judge = size(512), size(16384)
    assert judge > model
    report = preflight(tmp_path, monkeypatch, machine(64 * GIB), model=512, judge=16384)
    assert report.problems == []
    assert report.footprints["local"] == model
    # the worker closes the model before it loads the judge: the judge is the peak
    assert report.footprints[job_id("local", ELYZA)] == judge
    assert report.footprints[job_id("http", ELYZA)] == judge  # the model is remote

    report = preflight(tmp_path, monkeypatch, machine(64 * GIB), model=16384, judge=512)
    assert report.footprints[job_id("local", ELYZA)] == size(16384)
    assert report.footprints[job_id("http", ELYZA)] == size(512)


def test_a_judge_that_does_not_fit_stops_the_run_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judge = size(16384)
    report = preflight(tmp_path, monkeypatch, machine(judge - 1), model=512, judge=16384)
    assert report.problems == [
        f"the ELYZA judge {smollm2_path().name} needs about {judge / GIB:.1f} GiB but this "
        f"machine has {(judge - 1) / GIB:.1f} GiB of RAM; lower the judge's n_ctx or use a "
        "smaller judge"
    ]
    # the two are never loaded together: the larger alone must fit, not their sum
    report = preflight(tmp_path, monkeypatch, machine(judge), model=512, judge=16384)
    assert report.problems == []

    # the HTTP model's judge goes where that model's layers would: the GPU
    gpu = Gpu(0, "test", total_bytes=judge - 1, free_bytes=judge - 1)
    report = preflight(tmp_path, monkeypatch, machine(64 * GIB, gpu), model=512, judge=16384)
    assert len(report.problems) == 1 and "GiB of GPU memory" in report.problems[0]


def test_a_load_short_of_memory_is_retried_and_gives_the_sizes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, n_ctx = smollm2_path(), 65536
    need = size(n_ctx)
    monkeypatch.setattr("ggufbench.resources.probe", lambda: machine(GIB))
    error = load_error(path, "Failed to load model", n_ctx=n_ctx, n_gpu_layers=0)
    assert isinstance(error, BackendError)  # the worker exits 5: the scheduler retries it
    assert f"needs about {need / GIB:.1f} GiB (n_ctx {n_ctx}) but only 1.0 GiB of RAM" in str(error)

    monkeypatch.setattr("ggufbench.resources.probe", lambda: machine(64 * GIB))
    error = load_error(path, "Failed to load model", n_ctx=n_ctx, n_gpu_layers=0)
    assert isinstance(error, ModelFileError)  # memory was there: the file is at fault
    assert str(error) == f"llama.cpp could not load {path}: Failed to load model"


def test_a_gpu_load_compares_with_the_workers_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    path, n_ctx = smollm2_path(), 65536
    roomy, full = Gpu(0, "a", 80 * GIB, 80 * GIB), Gpu(1, "b", 80 * GIB, GIB // 2)
    monkeypatch.setattr("ggufbench.resources.probe", lambda: machine(64 * GIB, roomy, full))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    error = load_error(path, "Failed to load model", n_ctx=n_ctx, n_gpu_layers=-1)
    assert isinstance(error, BackendError) and "but only 0.5 GiB of GPU 1 is free" in str(error)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    error = load_error(path, "Failed to load model", n_ctx=n_ctx, n_gpu_layers=-1)
    assert isinstance(error, ModelFileError)


def test_a_file_that_is_not_a_model_is_not_a_memory_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    monkeypatch.setattr("ggufbench.resources.probe", lambda: machine(1))
    error = load_error(bad, "Failed to load model", n_ctx=4096, n_gpu_layers=0)
    assert isinstance(error, ModelFileError)


LOAD_UNDER_ULIMIT = """
import resource, sys
from pathlib import Path
import psutil
import llama_cpp
from ggufbench.engine import Runtime

path = Path(sys.argv[1])
vms = psutil.Process().memory_info().vms
resource.setrlimit(resource.RLIMIT_AS, (vms + 40 * 2**20, resource.RLIM_INFINITY))
try:
    Runtime(path, n_ctx=2048, n_batch=512, n_threads=1, n_gpu_layers=0)
except Exception as error:
    print(type(error).__name__, error, sep="\\n")
"""


def test_a_real_load_past_ulimit_v_is_short_of_memory() -> None:
    """llama.cpp itself fails to map the model under ulimit -v (RLIMIT_AS), whatever RAM is free."""
    import subprocess
    import sys

    path = smollm2_path()
    done = subprocess.run(
        [sys.executable, "-c", LOAD_UNDER_ULIMIT, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    kind, message = done.stdout.strip().splitlines()[-2:]
    assert kind == "BackendError", done.stdout + done.stderr
    # under the limit even the metadata cannot be mapped: the file's size is the need
    assert f"needs about {path.stat().st_size / GIB:.1f} GiB (n_ctx 2048)" in message
    assert "of address space under this process's ulimit -v is free" in message
