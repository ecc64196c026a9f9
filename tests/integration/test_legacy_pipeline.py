"""The original pipeline's own legacy file passes `check`, and `convert` moves it to YAML."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from conftest import ggufbench
from ggufbench.benchmarks.elyza_data import demo_dataset_path
from ggufbench.config import load_suite

ALIASES = ("base_q8", "base_q4", "ft1_q8", "ft2_q8", "ft3_q8")
TASKS = ["demo_hellaswag", "demo_mmlu", "demo_gsm8k_cot"]


def legacy_file(folder: Path, smollm2: Path, tasks_dir: Path) -> Path:
    """Five models (links to SmolLM2), three tasks, elyza_limit 10, a judge at the top level."""
    entries = []
    for alias in ALIASES:
        (folder / f"{alias}.gguf").symlink_to(smollm2)
        entries.append(
            {
                "alias": alias,
                "gguf_path": f"{alias}.gguf",
                "ollama_name": f"pipeline:{alias}",
                "description": f"{alias} of the pipeline",
                "tasks": TASKS,
                "batch_size": 8,
                "n_gpu_layers": 0,
                "limit": 20,
                "elyza_limit": 10,
            }
        )
    data = {
        "gguf_models": entries,
        "judge": {"runner": "llama-cpp", "path": str(smollm2), "n_ctx": 2048},
        "output_root": "runs",
        "defaults": {"n_ctx": 2048},
        "execution": {"retries": 1},
        "lm_eval": {"include_path": str(tasks_dir)},
        "elyza_tasks_100": {"dataset": str(demo_dataset_path())},
    }
    path = folder / "models.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def test_check_accepts_the_pipeline_file(tmp_path: Path, smollm2: Path, tasks_dir: Path) -> None:
    old = legacy_file(tmp_path, smollm2, tasks_dir)
    done = ggufbench("check", str(old), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok 5 model(s), 2 benchmark(s)" in done.stdout
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "batch_size is ignored" in warned[0], done.stderr
    assert "ollama_name" not in done.stderr  # used: kept with each in-process model
    assert not (tmp_path / "runs").exists()


def test_convert_output_round_trips(tmp_path: Path, smollm2: Path, tasks_dir: Path) -> None:
    old = legacy_file(tmp_path, smollm2, tasks_dir)
    done = ggufbench("convert", str(old), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "warning: " in done.stderr
    assert "ollama_name: pipeline:base_q8" in done.stdout and "ollama_name is" not in done.stdout
    new = tmp_path / "suite.yaml"
    new.write_text(done.stdout, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_suite(new) == load_suite(old)
    checked = ggufbench("check", str(new), timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "warning:" not in checked.stderr
