"""Suites on a real Ray cluster on 127.0.0.1: a head with no CPUs and two one-CPU nodes.

Nothing runs on the head; jobs run as Ray tasks on the two nodes, their answers
committed by the driver. The samples equal the local executor's byte for byte,
across shards, a lost node and a driver killed with kill -9.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_resume import cached_answers, partial_job

from conftest import ggufbench, read_samples
from ggufbench.testmodels import derived_path

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

STORE = 80 * 2**20  # the smallest object store Ray accepts
# every gsm8k item: a few answers come at once, so with few items a fast CPU can finish a job
# within one commit and leave no moment where it is part way through
LIMIT = 15
NODE = {"num_cpus": 1, "object_store_memory": STORE, "node_ip_address": "127.0.0.1"}
HEAD = {**NODE, "num_cpus": 0, "include_dashboard": False}


@pytest.fixture(scope="module")
def cluster():
    with pytest.MonkeyPatch.context() as patch:
        # Ray swaps a loopback address for the machine's own unless told this is one machine;
        # the nodes and every driver started here inherit it.
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        made = Cluster(initialize_head=True, head_node_args=HEAD)
        for _ in range(2):
            made.add_node(**NODE)
        made.wait_for_nodes()
        try:
            yield made
        finally:
            made.shutdown()


def suite(path: Path, models: dict[str, Path], tasks: list[str], tasks_dir: Path, **more) -> Path:
    """A suite file; ``more`` goes into the lm_eval benchmark (limit, shards)."""
    body = {"tasks": tasks, "include_path": str(tasks_dir), **more}
    data = {
        "name": path.stem,
        "output_root": str(path.parent / f"{path.stem}-runs"),
        "models": [{"alias": alias, "path": str(file)} for alias, file in models.items()],
        "defaults": {"n_ctx": 2048, "threads": 1},
        "benchmarks": [{"lm_eval": body}],
        "execution": {"retries": 2},
    }
    path.write_text(json.dumps(data))
    return path


def run_dir(suite_file: Path) -> Path:
    (found,) = (suite_file.parent / f"{suite_file.stem}-runs").iterdir()
    return found


def on_ray(cluster: Cluster) -> list[str]:
    return ["--executor", "ray", "--address", cluster.address]


def start(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, "-m", "ggufbench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def running_on(root: Path, proc: subprocess.Popen[str]) -> str:
    """Wait until a job is part way through on a node; the node as its attempt recorded it."""
    deadline = time.time() + 240
    while not partial_job(root):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, "no progress"
        time.sleep(0.05)
    (ledger,) = root.glob("*/ledger.sqlite")
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
    try:
        sql = "SELECT host FROM attempts WHERE status='running' AND host IS NOT NULL"
        return str(db.execute(sql).fetchone()[0])
    finally:
        db.close()


def gsm8k_on_ray(
    path: Path, smollm2: Path, tasks_dir: Path, cluster: Cluster
) -> tuple[Path, subprocess.Popen[str], str]:
    """Run demo_gsm8k_cot on the cluster until its job is part way through on a node: the
    suite file, the running driver and the node."""
    file = suite(path, {"smol": smollm2}, ["demo_gsm8k_cot"], tasks_dir, limit=LIMIT)
    proc = start("run", str(file), *on_ray(cluster))
    return file, proc, running_on(file.parent / f"{file.stem}-runs", proc)


@pytest.fixture(scope="module")
def gsm8k_reference(tmp_path_factory, smollm2, tasks_dir) -> Path:
    """demo_gsm8k_cot on the local executor: the samples every fault must end with."""
    folder = tmp_path_factory.mktemp("gsm8k-local")
    local = suite(
        folder / "local.yaml", {"smol": smollm2}, ["demo_gsm8k_cot"], tasks_dir, limit=LIMIT
    )
    done = ggufbench("run", str(local))
    assert done.returncode == 0, done.stdout + done.stderr
    return run_dir(local)


def test_a_sharded_suite_on_two_nodes_equals_the_local_run(tmp_path, cluster, smollm2, tasks_dir):
    models = {"smol": smollm2, "smol_q4_0": derived_path(smollm2, "Q4_0")}
    tasks = ["demo_mmlu", "demo_hellaswag"]
    local = suite(tmp_path / "local.yaml", models, tasks, tasks_dir, limit=2)
    sharded = suite(tmp_path / "sharded.yaml", models, tasks, tasks_dir, limit=2, shards=2)
    done = ggufbench("run", str(local))
    assert done.returncode == 0, done.stdout + done.stderr
    done = ggufbench("run", str(sharded), *on_ray(cluster))
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_samples(run_dir(sharded)) == read_samples(run_dir(local))
    attempts = json.loads((run_dir(sharded) / "run.json").read_text())["attempts"]
    assert len(attempts) == 2 * 2 * 3  # two shards and the task's own job, each once
    nodes = {a["host"] for a in attempts}
    assert len(nodes) == 2 and all("Ray node" in n for n in nodes), nodes


def test_a_node_lost_mid_job_the_job_finishes_on_the_other(
    tmp_path, cluster, smollm2, tasks_dir, gsm8k_reference
):
    file, proc, host = gsm8k_on_ray(tmp_path / "lose.yaml", smollm2, tasks_dir, cluster)
    committed = cached_answers(file.parent / "lose-runs")
    (lost,) = [n for n in cluster.worker_nodes if f"Ray node {n.node_id[:8]}" in host]
    cluster.remove_node(lost)
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        cluster.add_node(**NODE)  # the next test has two nodes again
    assert proc.returncode == 0, out
    assert read_samples(run_dir(file)) == read_samples(gsm8k_reference)
    summary = json.loads((run_dir(file) / "summary.json").read_text())
    entry = summary["models"]["smol"]["benchmarks"]["demo_gsm8k_cot"]
    assert entry["attempts"] == 2
    requests = entry["requests"]
    assert requests["from_cache"] >= committed >= 1  # what was committed, not computed again
    assert requests["from_cache"] + requests["computed"] == requests["total"]
    first, second = json.loads((run_dir(file) / "run.json").read_text())["attempts"]
    assert first["host"] == host and second["host"] != host
    assert first["status"] == "failed" and host in first["error"]


def test_the_driver_killed_then_resumed_gives_identical_samples(
    tmp_path, cluster, smollm2, tasks_dir, gsm8k_reference
):
    file, proc, host = gsm8k_on_ray(tmp_path / "kill.yaml", smollm2, tasks_dir, cluster)
    live = json.loads(ggufbench("status", str(run_dir(file)), "--json").stdout)
    assert [j["host"] for j in live["jobs"] if j["status"] == "running"] == [host]
    assert "Ray node" in host
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    done = ggufbench("resume", str(run_dir(file)), *on_ray(cluster))
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_samples(run_dir(file)) == read_samples(gsm8k_reference)
    summary = json.loads((run_dir(file) / "summary.json").read_text())
    entry = summary["models"]["smol"]["benchmarks"]["demo_gsm8k_cot"]
    assert entry["requests"]["from_cache"] >= 1


def test_sigterm_stops_the_tasks_and_exits_130(tmp_path, cluster, smollm2, tasks_dir):
    file, proc, _ = gsm8k_on_ray(tmp_path / "term.yaml", smollm2, tasks_dir, cluster)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    (attempt,) = json.loads((run_dir(file) / "run.json").read_text())["attempts"]
    assert attempt["status"] == "interrupted"
    assert "stopped" in (run_dir(file) / attempt["log"]).read_text()
    state = json.loads(ggufbench("status", str(run_dir(file)), "--json").stdout)
    assert [j["status"] for j in state["jobs"]] == ["pending"]


def test_an_unreachable_cluster_is_one_sentence_and_nothing_starts(tmp_path, smollm2, tasks_dir):
    file = suite(tmp_path / "none.yaml", {"smol": smollm2}, ["demo_hellaswag"], tasks_dir, limit=1)
    done = ggufbench("run", str(file), "--executor", "ray", "--address", "127.0.0.1:9")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the Ray cluster at 127.0.0.1:9 cannot be reached" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "none-runs").exists()
