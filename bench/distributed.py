"""The cost of running on Ray: a suite's wall time, and the driver's ledger under load.

``overhead``: the same suite (models x tasks, one thread per job) on the local
executor (two jobs at once) and on a local Ray cluster of a CPU-less head and two
one-CPU nodes, unsharded and with ``shards: 2``; the samples of the three runs are
compared too.

``commits``: the driver's ledger under many workers at once. Simulated nodes (threads
in a few Ray actors) send answers through the real relay and ledger service
(:mod:`ggufbench.executors._relay`) as fast as each put is acknowledged, for a fixed
time; the driver commits them into a real run ledger. It prints answers and
transactions committed per second and the acknowledgement latency, by the number of
nodes and answers per put.

    .venv/bin/python bench/distributed.py overhead --limit 10
    .venv/bin/python bench/distributed.py commits --nodes 1,10,100 --batch 1,16,256

Everything runs on 127.0.0.1; on a small machine the simulated nodes and the driver
share its cores, so the commit figures are a lower bound for a driver of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import OFFLINE, PY, default_include_path, machine, model_path, run_timed

STORE = 80 * 2**20
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # 127.0.0.1 stays 127.0.0.1


def start_cluster(node_cpus: int, nodes: int) -> Any:
    from ray.cluster_utils import Cluster

    os.environ.update(LOOPBACK)
    node = {"num_cpus": node_cpus, "object_store_memory": STORE, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(
        initialize_head=True, head_node_args={**node, "num_cpus": 0, "include_dashboard": False}
    )
    for _ in range(nodes):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    return cluster


# -- overhead -----------------------------------------------------------------------


def write_suite(path: Path, args: argparse.Namespace, shards: int, parallel: int) -> Path:
    from ggufbench.testmodels import derived_path

    base = model_path(args.model)
    models = {"base": base, "q4_0": derived_path(base, "Q4_0")}
    body = {"tasks": args.tasks.split(","), "limit": args.limit, "shards": shards}
    body["include_path"] = str(default_include_path())
    data = {
        "name": path.stem,
        "output_root": str(path.parent / path.stem),
        "models": [{"alias": a, "path": str(p)} for a, p in models.items()],
        "defaults": {"n_ctx": 2048, "threads": 1},
        "benchmarks": [{"lm_eval": body}],
        "execution": {"max_parallel_jobs": parallel},
    }
    path.write_text(json.dumps(data))
    return path


def samples(root: Path) -> dict[str, str]:
    (run,) = root.iterdir()
    return {str(p.relative_to(run)): p.read_text() for p in sorted(run.rglob("samples/*/*"))}


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ggufbench-distributed-"))
    cluster = start_cluster(1, 2)
    try:
        ray_args = ["--executor", "ray", "--address", cluster.address]
        runs = {
            "local (2 jobs at once)": (write_suite(work / "local.yaml", args, 1, 2), []),
            "ray, 2 nodes": (write_suite(work / "ray.yaml", args, 1, 0), ray_args),
            "ray, 2 nodes, shards: 2": (write_suite(work / "sharded.yaml", args, 2, 0), ray_args),
        }
        walls: dict[str, float | None] = {}
        for name, (suite, extra) in runs.items():
            _drop_zero_parallel(suite)
            cmd = [PY, "-m", "ggufbench", "run", str(suite), *extra]
            walls[name] = run_timed(cmd, log=work / f"{suite.stem}.log")
            print(f"{name:28s} {walls[name]:7.1f} s", flush=True)
        same = len({json.dumps(samples(work / s.stem)) for s, _ in runs.values()}) == 1
        print(f"samples identical in all three runs: {same}")
        return {"wall_s": walls, "samples_identical": same, "limit": args.limit}
    finally:
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def _drop_zero_parallel(suite: Path) -> None:
    """max_parallel_jobs 0 in write_suite means: leave it to the executor (auto)."""
    data = json.loads(suite.read_text())
    if data["execution"]["max_parallel_jobs"] == 0:
        del data["execution"]["max_parallel_jobs"]
    suite.write_text(json.dumps(data))


# -- commits ------------------------------------------------------------------------


class Producer:
    """Simulated nodes in one process: each thread puts answers as fast as they are acked."""

    def run(
        self, relay: Any, job: dict[str, Any], nodes: int, batch: int, seconds: float, tag: str
    ) -> list[float]:
        from ggufbench.executors._relay import RelayStore
        from ggufbench.ledger import JobRow

        store = RelayStore(relay, JobRow(**job), 1, Path())
        latencies: list[float] = []
        lock = threading.Lock()

        def node(n: int) -> None:
            mine, i, end = [], 0, time.monotonic() + seconds
            while time.monotonic() < end:
                rows = []
                for _ in range(batch):
                    i += 1
                    key = f"{tag}-{n}-{i:012d}"
                    rows.append((key, "loglikelihood", "m", {"c": "x", "t": "y"}, [-1.5, True]))
                start = time.monotonic()
                store.cache_put("owner", rows)
                mine.append(time.monotonic() - start)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=node, args=(n,)) for n in range(nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return latencies


def commits(args: argparse.Namespace) -> list[dict[str, Any]]:
    import ray

    os.environ.update(OFFLINE)
    ray.init(num_cpus=args.processes, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for nodes in [int(n) for n in args.nodes.split(",")]:
            for batch in [int(b) for b in args.batch.split(",")]:
                rows.append(_one_load(nodes, batch, args))
                r = rows[-1]
                print(
                    f"{nodes:4d} nodes x {batch:3d} answers a put: {r['answers_per_s']:8.0f}"
                    f" answers/s, {r['commits_per_s']:6.1f} commits/s, ack p50"
                    f" {r['ack_p50_ms']:.1f} ms p95 {r['ack_p95_ms']:.1f} ms",
                    flush=True,
                )
    finally:
        ray.shutdown()
    return rows


def _one_load(nodes: int, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """``nodes`` simulated nodes putting ``batch`` answers at a time, for args.seconds."""
    import ray

    from ggufbench.executors._relay import LedgerRelay, LedgerService
    from ggufbench.ledger import JobRow, Ledger

    run_dir = Path(tempfile.mkdtemp(prefix="ggufbench-commits-"))
    ledger = Ledger(run_dir / "ledger.sqlite", create=True)
    owner = ledger.claim()
    ledger.add_jobs([JobRow("m/t", "m", "t", "lm_eval", {})])
    ledger.start_attempt("m/t", owner, "")
    relay = ray.remote(LedgerRelay).options(num_cpus=0, max_concurrency=10_000).remote()
    service = LedgerService(relay, run_dir, owner, lambda placed: None)
    service.start()
    producers = [ray.remote(Producer).options(num_cpus=1).remote() for _ in range(args.processes)]
    job = {"id": "m/t", "model": "m", "benchmark": "t", "kind": "lm_eval", "spec": {}}
    share = [nodes // args.processes + (i < nodes % args.processes) for i in range(args.processes)]
    start = time.monotonic()
    refs = [
        p.run.remote(relay, job, n, batch, args.seconds, f"{nodes}-{batch}-{i}")
        for i, (p, n) in enumerate(zip(producers, share, strict=True))
        if n
    ]
    latencies = [x for part in ray.get(refs) for x in part]
    wall = time.monotonic() - start
    committed = service.answers
    transactions = service.commits
    service.stop()
    for p in producers:
        ray.kill(p)
    ray.kill(relay)
    assert ledger.cache_count() == committed
    ledger.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [0.0] * 19
    return {
        "nodes": nodes,
        "answers_per_put": batch,
        "answers_per_s": committed / wall,
        "commits_per_s": transactions / wall,
        "puts_per_s": len(latencies) / wall,
        "ack_p50_ms": statistics.median(latencies) * 1000,
        "ack_p95_ms": q[18] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", type=Path, help="write the figures here")
    sub = parser.add_subparsers(dest="what", required=True)
    over = sub.add_parser("overhead", parents=[common], help="a suite, local and on Ray")
    over.add_argument("--model", default="smollm2")
    over.add_argument("--tasks", default="demo_hellaswag,demo_mmlu")
    over.add_argument("--limit", type=int, default=10)
    com = sub.add_parser("commits", parents=[common], help="the driver's ledger under load")
    com.add_argument("--nodes", default="1,10,100", help="simulated nodes, comma-separated")
    com.add_argument("--batch", default="1,16,256", help="answers per put, comma-separated")
    com.add_argument("--seconds", type=float, default=10.0)
    com.add_argument("--processes", type=int, default=2, help="processes holding the nodes")
    args = parser.parse_args()
    figures = overhead(args) if args.what == "overhead" else commits(args)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
