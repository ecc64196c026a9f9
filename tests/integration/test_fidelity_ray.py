"""Fidelity on a real Ray cluster on 127.0.0.1 (the cluster of test_ray.py): the jobs reach
the ledger through the driver's relay, which serves a job its own row alone, and give the
local executor's figures exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ggufbench, summary_of
from ggufbench.testmodels import derived_path

pytest.importorskip("ray")
from test_ray import cluster, on_ray  # noqa: E402, F401 - the cluster fixture

SUITE = """name: {name}
output_root: {root}
models:
  - {{alias: base, path: {base}, baseline: true}}
  - {{alias: q4, path: {q4}}}
defaults: {{n_ctx: 1024, n_gpu_layers: 0, threads: 1}}
benchmarks:
  - fidelity: {{n_ctx: 256, chunks: 2}}
"""


def run(tmp_path: Path, name: str, smollm2: Path, *options: str) -> dict:
    root = tmp_path / name
    suite = tmp_path / f"{name}.yaml"
    q4 = derived_path(smollm2, "Q4_K_M")
    suite.write_text(SUITE.format(name=name, root=root, base=smollm2, q4=q4))
    done = ggufbench("run", str(suite), *options)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = summary_of(root)[1]
    return {a: m["benchmarks"]["fidelity"] for a, m in summary["models"].items()}


def test_fidelity_on_ray_gives_the_local_figures(tmp_path, smollm2, cluster):  # noqa: F811
    local = run(tmp_path, "local", smollm2)
    remote = run(tmp_path, "ray", smollm2, *on_ray(cluster))
    assert remote["q4"]["status"] == "done" and remote["q4"]["metrics"]["kld"]["value"] > 0
    for alias in ("base", "q4"):
        assert remote[alias]["metrics"] == local[alias]["metrics"]
        assert remote[alias]["details"] == local[alias]["details"]
