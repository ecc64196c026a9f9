"""Datasets on an unreachable Hugging Face hub: found out with one probe, not 25 s each.

The hub is a real server on 127.0.0.1 (``HF_ENDPOINT``) that counts the
connections made to it and closes each one unanswered. ``datasets`` makes six
attempts per dataset (five retries) against the endpoint, so a count of one
shows that the probe ran once and that no dataset load reached for the hub.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import write_suite
from ggufbench.benchmarks import run_benchmark
from ggufbench.benchmarks._job import JobContext
from ggufbench.benchmarks.lm_eval import hub_datasets, task_manager
from ggufbench.cached import CachedBackend
from ggufbench.errors import TaskError
from ggufbench.ledger import JobRow, Ledger

HUB_DATASETS = {  # the lm-eval 0.4.13 tasks used below, and the hub datasets they read
    "arc_easy": "allenai/ai2_arc",
    "hellaswag": "Rowan/hellaswag",
    "gsm8k": "openai/gsm8k",
    "mmlu": "cais/mmlu",  # a group of groups of tags: 57 tasks, one dataset
}
ELYZA = "elyza/ELYZA-tasks-100"


class CountingHub:
    """A fake hub: a real socket on 127.0.0.1 that counts connections and drops them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def hub() -> Iterator[CountingHub]:
    server = CountingHub()
    yield server
    server.close()


def check(suite: Path, hub: CountingHub, tmp_path: Path, **env: str) -> Any:
    """``ggufbench check`` with an empty Hugging Face cache and the hub at ``hub``."""
    offline = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    clean = {k: v for k, v in os.environ.items() if k not in offline}
    clean.update(COLUMNS="300", HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=hub.url, **env)
    return subprocess.run(
        [sys.executable, "-m", "ggufbench", "check", str(suite)],
        capture_output=True,
        text=True,
        env=clean,
        timeout=600,
        check=False,
    )


def offline_suite(tmp_path: Path, smollm2: Path, tasks_dir: Path) -> Path:
    return write_suite(
        tmp_path,
        f"""name: offline
models:
  - {{alias: m, path: {smollm2}}}
benchmarks:
  - lm_eval: {{tasks: [{", ".join(HUB_DATASETS)}], limit: 2}}
  - lm_eval: {{tasks: [demo_hellaswag, demo_gsm8k_cot], include_path: {tasks_dir}, limit: 2}}
  - elyza_tasks_100: {{limit: 2, judge: {{path: {smollm2}}}}}
""",
    )


def problems(out: str) -> list[str]:
    return [line.strip()[2:] for line in out.splitlines() if line.strip().startswith("- ")]


def test_unreachable_hub_is_found_once_and_each_dataset_named(
    tmp_path: Path, smollm2: Path, tasks_dir: Path, hub: CountingHub
) -> None:
    done = check(offline_suite(tmp_path, smollm2, tasks_dir), hub, tmp_path)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    found = problems(done.stdout + done.stderr)
    for task, dataset in HUB_DATASETS.items():
        (line,) = [p for p in found if f"the dataset {dataset} " in p]
        assert f"lm-eval task '{task}'" in line and "cannot be reached" in line
        assert "HF_DATASETS_OFFLINE=1" in line and "local data files" in line
    (line,) = [p for p in found if f"the dataset {ELYZA} " in p]
    assert "HF_DATASETS_OFFLINE=1" in line and "local .csv" in line
    assert len(found) == len(HUB_DATASETS) + 1  # the local demo tasks loaded
    assert hub.connections == 1


def test_offline_mode_loads_from_the_cache_without_a_probe(
    tmp_path: Path, smollm2: Path, tasks_dir: Path, hub: CountingHub
) -> None:
    suite = offline_suite(tmp_path, smollm2, tasks_dir)
    done = check(suite, hub, tmp_path, HF_HUB_OFFLINE="1")

    assert done.returncode == 2
    found = problems(done.stdout + done.stderr)
    # each dataset was looked up in the (empty) cache, and nothing asked the hub
    for task in HUB_DATASETS:
        assert any(f"the dataset of lm-eval task '{task}' does not load" in p for p in found)
    assert any(p.startswith("elyza_tasks_100: cannot load") for p in found)
    assert not any("cannot be reached" in p for p in found)
    assert hub.connections == 0


def test_a_task_group_names_its_hub_datasets_once_and_local_tasks_none(tasks_dir: Path) -> None:
    manager = task_manager(str(tasks_dir), ["mmlu", "ai2_arc"])
    assert hub_datasets(manager, "mmlu") == ["cais/mmlu"]
    assert hub_datasets(manager, "ai2_arc") == ["allenai/ai2_arc"]  # a tag
    assert hub_datasets(manager, "ggufbench_demo") == []  # custom_dataset functions


def test_a_worker_reads_the_cache_at_once_when_the_hub_is_unreachable(
    tmp_path: Path, hub: CountingHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets
    from huggingface_hub import constants

    from ggufbench import hub as hub_module

    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.url)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    for module, flag in [
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
        (constants, "HF_HUB_OFFLINE"),
    ]:
        monkeypatch.setattr(module, flag, False)
    hub_module.unreachable_reason.cache_clear()
    ledger = Ledger(tmp_path / "ledger.sqlite", create=True)
    owner = ledger.claim()
    job = "m/elyza_tasks_100"
    ledger.add_jobs([JobRow(job, "m", "elyza_tasks_100", "elyza_tasks_100", {})])
    bench = {"dataset": ELYZA, "judge": {"runner": "openai", "base_url": hub.url, "model": "j"}}
    spec = {"model": {}, "benchmark": bench, "name": "elyza_tasks_100"}
    cached = CachedBackend(NoModel(), ledger, owner, job)  # type: ignore[arg-type]
    ctx = JobContext(tmp_path, job, "m", "elyza_tasks_100", spec, ledger, owner, cached)
    try:
        with pytest.raises(TaskError, match=f"cannot load the Hugging Face dataset {ELYZA}"):
            run_benchmark("elyza_tasks_100", ctx)
    finally:
        ledger.close()
        hub_module.unreachable_reason.cache_clear()
    assert datasets.config.HF_HUB_OFFLINE and constants.HF_HUB_OFFLINE
    assert hub.connections == 1


class NoModel:
    """A fake model: the job stops at its dataset, before any request."""

    info = None

    def close(self) -> None:
        pass
