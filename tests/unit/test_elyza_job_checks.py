"""ELYZA in preflight and in report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ggufbench.benchmarks.elyza_data import demo_dataset_path
from ggufbench.config import parse_suite
from ggufbench.preflight import check
from ggufbench.report._markdown import render


def suite_with(tmp_path: Path, elyza: dict[str, Any]) -> Any:
    data = {
        "name": "checks",
        "output_root": str(tmp_path / "runs"),
        "models": [
            {"alias": "m", "runner": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
        ],
        "benchmarks": [{"elyza_tasks_100": elyza}],
    }
    return parse_suite(data, tmp_path)


def problems(tmp_path: Path, elyza: dict[str, Any]) -> list[str]:
    return check(suite_with(tmp_path, elyza)).problems


def test_a_good_elyza_benchmark_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_KEY", "secret")
    judge = {
        "runner": "openai",
        "base_url": "https://judge.example/v1",
        "model": "gpt-4o",
        "api_key_env": "JUDGE_KEY",
    }
    assert problems(tmp_path, {"dataset": str(demo_dataset_path()), "judge": judge}) == []


def test_elyza_problems_are_sentences_that_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    missing = tmp_path / "missing.jsonl"
    found = problems(tmp_path, {"dataset": str(missing)})
    assert any(f"{missing} does not exist" in p for p in found)
    assert any("elyza_tasks_100 has no judge; add judge:" in p for p in found)

    dataset = str(demo_dataset_path())
    judge = {"runner": "openai", "base_url": "judge.example", "api_key_env": "NO_SUCH_KEY"}
    found = problems(tmp_path, {"dataset": dataset, "judge": judge})
    assert any("set its base_url (ending in /v1) and model" in p for p in found)
    assert any("NO_SUCH_KEY (the ELYZA judge's api_key_env) is not set" in p for p in found)

    judge = {"runner": "openai", "base_url": "judge.example/v1", "model": "x"}
    found = problems(tmp_path, {"dataset": dataset, "judge": judge})
    assert found == [
        "the ELYZA judge's base_url 'judge.example/v1' is not an http(s) URL; "
        "give it as OpenAI clients take it, e.g. https://host/v1"
    ]

    gguf = tmp_path / "judge.gguf"
    gguf.write_bytes(b"not a model")
    found = problems(tmp_path, {"dataset": dataset, "judge": {"path": str(gguf)}})
    assert len(found) == 1 and found[0].startswith("the ELYZA judge: ") and "judge.gguf" in found[0]

    found = problems(tmp_path, {"dataset": dataset, "judge": {"runner": "llama.cpp"}})
    assert found == ["the ELYZA judge has no path; set path to the judge's .gguf file"]


def summary_with(judge: dict[str, Any]) -> dict[str, Any]:
    def entry(value: float, dist: dict[str, int], generation: int) -> dict[str, Any]:
        return {
            "status": "done",
            "metrics": {"score": {"value": value, "stderr": 0.25}},
            "n_samples": 5,
            "n_scored": 4,
            "distribution": dist,
            "failures": {"generation": generation, "judgement": 1, "no_final_answer": 0},
            "judge": judge,
            "requests": {"total": 10, "computed": 10, "from_cache": 0},
        }

    models = {
        "base": {"benchmarks": {"elyza_tasks_100": entry(3.5, {"3": 2, "4": 2}, 0)}},
        "q2": {"benchmarks": {"elyza_tasks_100": entry(2.75, {"2": 1, "3": 3}, 1)}},
    }
    return {"run_id": "r", "status": "done", "baseline": "base", "models": models}


def test_report_shows_elyza_beside_the_baseline_with_judge_and_failures() -> None:
    judge = {
        "runner": "llama-cpp",
        "model": "b179c9523d0e6a0f98a330c7562b6827",
        "prompt_version": "elyza-1to5-v1",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "quant": "Q4_1",
        "n_params": 134_515_008,
        "constraint": "choice of 1-5 by log-probability",
    }
    text = render(summary_with(judge))
    assert "### elyza_tasks_100 — score" in text
    assert "| q2 | 2.7500 ± 0.2500 | -0.7500 ± 0.3536 [-1.443, -0.057] (independent) |" in text
    assert "## ELYZA-tasks-100" in text
    assert "`SmolLM2-135M-Instruct.Q4_1.gguf` (Q4_1, sha256 `b179c9523d0e6a0f`)" in text
    assert "prompt elyza-1to5-v1" in text
    assert "**The judge has only 0.13B parameters.**" in text
    assert "| q2 | 2.7500 ± 0.2500 | 0 | 1 | 3 | 0 | 0 | 4 / 5 | 1 | 0 | 1 |" in text

    strong = render(summary_with({"runner": "openai", "model": "https://h/v1 gpt-4o"}))
    assert "`https://h/v1 gpt-4o`" in strong and "The judge has only" not in strong
