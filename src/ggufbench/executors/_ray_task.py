"""One job attempt as a Ray task: the worker's own code, on whichever node Ray chose.

The attempt runs as :func:`ggufbench.jobrun.attempt` runs it in a local process,
with two differences: its ledger is the driver's, reached through the relay
(:class:`~ggufbench.executors._relay.RelayStore`), and its run directory is a
scratch folder on the node, whose results and samples go to the driver with the
job's result. Its output goes to a log that comes back with its exit code. Each
task gets a fresh worker process (``max_calls=1``), so llama.cpp, its threads and
its GPU are the attempt's alone, as locally.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def run_attempt(order: dict[str, Any], relay: Any) -> dict[str, Any]:
    """Run one attempt (``order``: :func:`ggufbench.executors._ray.task_order`); its exit code,
    its log and the node it ran on."""
    import ray

    from ggufbench.executors._relay import RelayStore
    from ggufbench.jobrun import attempt, run_job
    from ggufbench.ledger import JobRow

    node_id = ray.get_runtime_context().get_node_id()
    node = f"{socket.gethostname()} (Ray node {node_id[:8]})"
    threads = int(order["threads"])
    # Ray sets OMP_NUM_THREADS to the task's CPUs; llama.cpp gets its count explicitly too.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    job = JobRow(**order["job"])
    scratch = Path(tempfile.mkdtemp(prefix="ggufbench-attempt-"))
    log = scratch / "attempt.log"
    try:
        with _output_to(log):
            store = RelayStore(relay, job, order["attempt"], scratch)
            code = attempt(
                lambda: run_job(
                    scratch,
                    job.id,
                    order["owner"],
                    threads,
                    order["request_timeout_s"],
                    store=store,
                    sha256=order["sha256"],
                    node=node,
                )
            )
        text = log.read_text("utf-8", "replace")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"code": code, "log": text, "node": node, "node_id": node_id}


@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (llama.cpp's too) to ``log`` meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
