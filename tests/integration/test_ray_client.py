"""A driver outside the cluster: suites run through Ray's client (``ray://host:port``) on a
real cluster on 127.0.0.1 whose head serves Ray's client, with no CPUs, and one one-CPU node.

The samples equal the local executor's byte for byte; a port that is not Ray's client
server, and a connection lost part way, end the driver with one sentence.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from test_ray import HEAD, LIMIT, NODE, run_dir, running_on, start, suite
from test_resume import cached_answers

from conftest import ggufbench
from ggufbench.backends._server_process import free_port

ray = pytest.importorskip("ray")
pytest.importorskip("grpc")  # Ray's client: ggufbench[ray] brings it
from ray._private import ray_constants  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402


@pytest.fixture(scope="module")
def client_cluster():
    """The cluster and the ray:// address of its client server."""
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # see test_ray's cluster
        head = {**HEAD, "ray_client_server_port": port}
        made = Cluster(initialize_head=True, head_node_args=head)
        made.add_node(**NODE)
        made.wait_for_nodes()
        try:
            yield made, f"ray://127.0.0.1:{port}"
        finally:
            made.shutdown()


def through(address: str) -> list[str]:
    return ["--executor", "ray", "--address", address]


def sample_bytes(run: Path) -> dict[str, bytes]:
    found = (run / "samples").rglob("*.jsonl")
    return {path.relative_to(run).as_posix(): path.read_bytes() for path in found}


def test_a_suite_through_ray_client_equals_the_local_run_byte_for_byte(
    tmp_path, client_cluster, smollm2, tasks_dir
):
    _, address = client_cluster
    local = suite(tmp_path / "local.yaml", {"smol": smollm2}, ["demo_mmlu"], tasks_dir, limit=2)
    remote = suite(tmp_path / "remote.yaml", {"smol": smollm2}, ["demo_mmlu"], tasks_dir, limit=2)
    done = ggufbench("run", str(local))
    assert done.returncode == 0, done.stdout + done.stderr
    done = ggufbench("run", str(remote), *through(address))
    assert done.returncode == 0, done.stdout + done.stderr
    samples = sample_bytes(run_dir(remote))
    assert samples and samples == sample_bytes(run_dir(local))
    (attempt,) = json.loads((run_dir(remote) / "run.json").read_text())["attempts"]
    assert "Ray node" in attempt["host"]
    # the cluster side's own log lines (its ray.init's warnings) stay off the driver's output
    assert "SIGTERM handler" not in done.stdout + done.stderr


def test_a_port_that_is_no_ray_client_server_is_one_sentence(
    tmp_path, client_cluster, smollm2, tasks_dir, monkeypatch
):
    made, _ = client_cluster
    monkeypatch.setenv("RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S", "1")  # Ray's client gives up
    file = suite(tmp_path / "gcs.yaml", {"smol": smollm2}, ["demo_mmlu"], tasks_dir, limit=1)
    wrong = f"ray://{made.address}"  # the head's own port, not its client server's
    done = ggufbench("run", str(file), *through(wrong))
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stderr.strip()
    assert said.startswith(f"error: could not connect to the Ray cluster at {wrong}"), said
    assert "--ray-client-server-port" in said and len(said.splitlines()) == 1, said
    assert not (tmp_path / "gcs-runs").exists()


def test_a_driver_that_loses_the_cluster_stops_with_one_sentence_and_the_run_resumes(
    tmp_path, client_cluster, smollm2, tasks_dir, monkeypatch
):
    """Last here: it stops the cluster's client server."""
    made, address = client_cluster
    monkeypatch.setenv("RAY_CLIENT_RECONNECT_GRACE_PERIOD", "2")  # Ray's client's retries
    tasks = ["demo_gsm8k_cot"]
    file = suite(tmp_path / "lost.yaml", {"smol": smollm2}, tasks, tasks_dir, limit=LIMIT)
    proc = start("run", str(file), *through(address))
    running_on(file.parent / "lost-runs", proc)
    (server,) = made.head_node.all_processes[ray_constants.PROCESS_TYPE_RAY_CLIENT_SERVER]
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert f"the connection to the Ray cluster at {address} was lost" in out
    assert "Traceback" not in out
    committed = cached_answers(file.parent / "lost-runs")
    done = ggufbench("resume", str(run_dir(file)), *through(made.address))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((run_dir(file) / "summary.json").read_text())
    requests = summary["models"]["smol"]["benchmarks"]["demo_gsm8k_cot"]["requests"]
    assert requests["from_cache"] >= committed >= 1
