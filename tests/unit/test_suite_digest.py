"""Where jobs run is not part of a suite's identity: a local run resumes on Ray and back."""

from __future__ import annotations

from pathlib import Path

from ggufbench.config import Suite, parse_suite
from ggufbench.rundir import suite_digest


def _suite(tmp_path: Path, execution: dict[str, object]) -> Suite:
    data = {
        "name": "s",
        "models": [{"alias": "a", "path": "a.gguf"}],
        "benchmarks": [{"lm_eval": {"tasks": ["t"], "limit": 2}}],
        "execution": execution,
    }
    return parse_suite(data, tmp_path, source="suite.yaml")


def test_the_executor_and_its_address_leave_the_digest_alone(tmp_path: Path) -> None:
    local = _suite(tmp_path, {})
    ray = _suite(tmp_path, {"executor": "ray", "address": "127.0.0.1:6379"})
    (local_text, local_digest), (ray_text, ray_digest) = suite_digest(local), suite_digest(ray)
    assert local_digest == ray_digest
    assert "ray" in ray_text and "ray" not in local_text  # the run still records where it ran


def test_the_other_execution_settings_still_count(tmp_path: Path) -> None:
    retried = _suite(tmp_path, {"retries": 1})
    assert suite_digest(_suite(tmp_path, {}))[1] != suite_digest(retried)[1]
