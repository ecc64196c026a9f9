"""Integration fixtures: the real SmolLM2 model, the real llama-server program, the FAKE
Ollama server (fake_ollama.py: no Ollama can be installed here) and the real ggufbench
command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import pytest
from fake_ollama import fake_ollama  # noqa: F401  (a fixture: offered to every test here)

from ggufbench.data import demo_tasks_path
from ggufbench.testmodels import smollm2_path


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return smollm2_path()


@pytest.fixture(scope="session")
def tasks_dir() -> Path:
    return demo_tasks_path()


@pytest.fixture(scope="session")
def server_bin(user_cache: Path) -> str:
    """llama-server on PATH, ggufbench's shared build in the user's cache (read, never
    written), else a build into this session's cache (minutes, once)."""
    from ggufbench import llama_tools

    found = shutil.which("llama-server")
    if found:
        return found
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GGUFBENCH_CACHE", str(user_cache))
        shared = llama_tools.tool_dir() / "bin" / "llama-server"
    if shared.is_file():
        return str(shared)
    return str(llama_tools.tool_path("llama-server"))


COMMAND = (sys.executable, "-m", "ggufbench")


def command_env() -> dict[str, str]:
    """This moment's environment (so the test's own GGUFBENCH_CACHE too), offline, with
    lines 200 columns wide."""
    return dict(os.environ, COLUMNS="200", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")


def ggufbench(
    *args: str, cwd: Path | None = None, timeout: float = 600, **popen: object
) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would."""
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=command_env(),
        check=False,
    )


def start_ggufbench(*args: str, output: IO[bytes] | int = subprocess.DEVNULL) -> subprocess.Popen:
    """Start the real command line in the background, as the leader of a process group of
    its own; what it prints (stdout and stderr, in order) goes to ``output``."""
    return subprocess.Popen(
        [*COMMAND, *args],
        stdout=output,
        stderr=subprocess.STDOUT,
        env=command_env(),
        start_new_session=True,
    )


def suite_text(
    models: list[tuple[str, Path]],
    tasks: list[str],
    tasks_dir: Path,
    root: Path,
    limit: int = 3,
    extra: str = "",
) -> str:
    lines = ["name: it", f"output_root: {root}", "models:"]
    for alias, path in models:
        lines += [f"  - alias: {alias}", f"    path: {path}"]
    lines += [
        "defaults: {runner: llama.cpp, n_ctx: 2048}",
        "benchmarks:",
        f"  - lm_eval: {{tasks: [{', '.join(tasks)}], limit: {limit}, include_path: {tasks_dir}}}",
    ]
    return "\n".join(lines) + "\n" + extra


def write_suite(folder: Path, text: str) -> Path:
    """``folder/suite.yaml``: the suite ``text`` (YAML without output_root), whose runs go
    under ``folder/runs``."""
    suite = folder / "suite.yaml"
    suite.write_text(f"output_root: {folder / 'runs'}\n{text}", encoding="utf-8")
    return suite


def summary_of(root: Path) -> tuple[Path, dict[str, Any]]:
    """The one run under ``root`` and its summary.json."""
    (run_dir,) = root.iterdir()
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def read_samples(run_dir: Path) -> dict[str, list[str]]:
    out = {}
    for path in sorted((run_dir / "samples").rglob("*.jsonl")):
        out[str(path.relative_to(run_dir))] = path.read_text().splitlines()
    return out
