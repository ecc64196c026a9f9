"""Job attempts as Ray tasks, placed by Ray across the cluster's nodes.

Each attempt is one task (:func:`._ray_task.run_attempt`) sized by what the
scheduler knows: ``num_cpus`` its threads (the model's ``threads``, else up to
4, as many as the largest node has), ``num_gpus`` 1 for a model offloaded to a
GPU where the cluster has GPUs (Ray sets its ``CUDA_VISIBLE_DEVICES``), and
``memory`` its footprint (weights, KV cache and buffers, and an in-process
judge's). Ray queues what does not fit and places the rest; a task that fits on
no node fails at once with the sizes.

Ray does not retry tasks itself (``max_retries=0``): the scheduler retries as it
does for local processes, so every attempt is one row in the ledger with the
node it ran on. A lost node, a killed worker or an out-of-memory kill end the
attempt with a sentence that names the node; the retry asks the driver's ledger
for every answer already committed (:mod:`._relay`) and computes only the rest.
A node that lacks the model file, or has a different one, is left out of that
job's next attempts.

A driver outside the cluster connects through Ray's client (``ray://host:10001``):
the cluster's side of that connection runs on the node that serves it, and the
relay is placed there. Should the connection be lost for good (Ray's client
retries for 30 s), the run's tasks end with it and the driver stops with a
sentence (:class:`ClusterLost`); the run resumes from its ledger.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ggufbench.errors import ClusterLost, ConfigError
from ggufbench.executors._base import (
    EXIT_NODE_FILE,
    Ending,
    Handle,
    Order,
    ending_of,
)
from ggufbench.executors._ray_task import run_attempt
from ggufbench.executors._relay import LedgerRelay, LedgerService, Placed
from ggufbench.resources import MIN_THREADS_PER_JOB

CONNECT_TIMEOUT_S = 5.0
CLIENT_LOGS = "ray.util.client.logsclient"  # the cluster side's log lines, as Ray's client prints
CLIENT_HINT = (
    "; is that the port of Ray's client server? The head serves it where Ray's client is "
    "installed: ray start --head --ray-client-server-port=10001"
)
CLIENT_INIT_RETRIES = 2  # more connections when the head's server for one failed to start
FORWARDED_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")  # the driver's choice about the hub


@dataclass
class _Task:
    ref: Any  # the task's ObjectRef; None when it could not be placed at all
    ending: Ending | None = None
    released: bool = False


@dataclass
class RayExecutor:
    address: str
    max_parallel: int | str = "auto"
    name: str = "ray"
    running: int = 0
    placed: dict[tuple[str, int], Placed] = field(default_factory=dict)
    bad_nodes: dict[str, set[str]] = field(default_factory=dict)  # job id -> node ids
    relay: Any = None
    service: LedgerService | None = None
    attempt_task: Any = None  # run_attempt as a Ray remote function, one per driver
    run_dir: Path | None = None

    def __post_init__(self) -> None:
        self.attempt_task = ray.remote(max_calls=1)(run_attempt)

    @classmethod
    def connect(cls, address: str, max_parallel: int | str) -> RayExecutor:
        """Connect to the cluster at ``address``; a ConfigError when it cannot be reached or has
        no CPUs to run jobs on."""
        target = reachable(address)
        try:
            if target.startswith("ray://"):
                _client_init(target)
            else:
                ray.init(address=target, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; each becomes a sentence
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            hint = CLIENT_HINT if isinstance(exc, ConnectionError) else ""
            raise ConfigError(
                f"could not connect to the Ray cluster at {address}: {first[:300]}{hint}"
            ) from None
        executor = cls(address, max_parallel)
        if not executor._nodes():
            ray.shutdown()
            raise ConfigError(
                f"the Ray cluster at {address} has no node with CPUs to run jobs on; "
                "add one with: ray start --address=HEAD:6379"
            )
        return executor

    # -- the executor interface --------------------------------------------
    def attach(self, run_dir: Path, owner: str) -> None:
        self.run_dir = run_dir
        # Through Ray's client this is the node that serves the client (the head, usually):
        # the driver reaches the relay there, and the workers reach it inside the cluster.
        here = ray.get_runtime_context().get_node_id()
        self.relay = (
            ray.remote(LedgerRelay)
            .options(
                num_cpus=0,
                max_concurrency=10_000,
                max_restarts=-1,  # should it die, calls wait for its restart: none is lost
                max_task_retries=-1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True),
            )
            .remote()
        )
        self.service = LedgerService(self.relay, run_dir, owner, self._on_place)
        self.service.start()

    def slots(self) -> int:
        if isinstance(self.max_parallel, int):
            return max(1, self.max_parallel)
        threads = self._default_threads()
        return max(1, sum(int(n.get("CPU", 0)) // threads for n in self._nodes().values()))

    def has_room(self, footprint: int, wants_gpu: bool, alone: bool) -> bool:
        # Ray queues what does not fit now; only an explicit limit holds jobs back here.
        return not isinstance(self.max_parallel, int) or self.running < self.max_parallel

    def start(self, order: Order, alone: bool) -> Handle:
        with self._connection():
            return self._start(order)

    def _start(self, order: Order) -> Handle:
        self.running += 1
        handle = Handle(order, started=None)
        job = order.job
        threads = int(job.spec["model"].get("threads") or self._default_threads())
        gpus = 1 if order.wants_gpu and self._cluster_gpus() else 0
        nodes = self._nodes()
        bad = self.bad_nodes.get(job.id, set())
        fits = [i for i, r in nodes.items() if _fits(r, threads, order.footprint, gpus)]
        if not fits or not set(fits) - bad:
            reason = _no_node(job.id, threads, order.footprint, gpus, nodes, bool(fits))
            _write_log(order.log, f"attempt {order.attempt} of {job.id}: {reason}\n")
            handle.private = _Task(None, Ending(False, reason, permanent=True))
            return handle
        options: dict[str, Any] = {
            "num_cpus": threads,
            "num_gpus": gpus,
            "max_retries": 0,
            "retry_exceptions": False,
            "name": f"ggufbench {job.id} attempt {order.attempt}",
            "runtime_env": {"env_vars": _task_env(threads)},
        }
        if order.footprint:
            options["memory"] = order.footprint
        if bad:
            options["label_selector"] = {"ray.io/node-id": f"!in({','.join(sorted(bad))})"}
        task = self.attempt_task.options(**options)
        handle.private = _Task(task.remote(task_order(order, threads), self.relay))
        return handle

    def expect_more(self) -> None:
        pass  # Ray starts its worker processes itself

    def poll(self, handle: Handle) -> Ending | None:
        task: _Task = handle.private
        self._note_place(handle)
        if task.ending is None:
            with self._connection():
                if not ray.wait([task.ref], timeout=0)[0]:
                    return None
                task.ending = self._ending(handle, task.ref)
        self._release(task)
        return task.ending

    def kill(self, handle: Handle) -> None:
        with self._connection():
            self._cancel(handle)
        self._release(handle.private)

    def stop(self, handles: list[Handle], grace_s: float) -> None:
        with self._connection():
            self._stop(handles, grace_s)

    def _stop(self, handles: list[Handle], grace_s: float) -> None:
        if self.service is not None:  # each worker stops at its next call to the ledger
            self.service.stop_attempts([(h.order.job.id, h.order.attempt) for h in handles])
        refs = [h.private.ref for h in handles if h.private.ref is not None]
        ready = ray.wait(refs, num_returns=len(refs), timeout=grace_s)[0] if refs else []
        for handle in handles:
            if handle.private.ref is not None and handle.private.ref not in ready:
                self._cancel(handle)
                _write_log(handle.order.log, "stopped by a signal: the task was cancelled\n")
            elif handle.private.ref is not None:
                self._ending(handle, handle.private.ref)  # its log
            self._release(handle.private)

    def close(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None
        if ray.is_initialized():
            ray.shutdown()

    @contextmanager
    def _connection(self) -> Iterator[None]:
        """Ray's calls; a ClusterLost once Ray's client has given up reconnecting."""
        try:
            yield
        except ConnectionError:  # Ray's client's, once it gave up reconnecting
            raise ClusterLost(
                f"the connection to the Ray cluster at {self.address} was lost and Ray's client"
                " could not reconnect, which ends the run's tasks; the answers committed are"
                f" kept: go on with: ggufbench resume {self.run_dir}"
            ) from None

    # -- endings -------------------------------------------------------------
    def _ending(self, handle: Handle, ref: Any) -> Ending:
        order = handle.order
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as exc:
            reason = lost_reason(exc, handle.node or "its Ray node")
            _write_log(order.log, f"attempt {order.attempt} of {order.job.id}: {reason}\n")
            return Ending(False, reason)
        _write_log(order.log, out["log"])
        ending = ending_of(out["code"], out["log"].splitlines()[-200:])
        if out["code"] == EXIT_NODE_FILE:  # another node may have the file: retry there
            self.bad_nodes.setdefault(order.job.id, set()).add(out["node_id"])
            return Ending(False, ending.reason, permanent=False)
        return ending

    def _cancel(self, handle: Handle) -> None:
        """End the task's worker process at once."""
        ref = handle.private.ref
        if ref is not None:
            try:
                ray.cancel(ref, force=True)
            except ray.exceptions.RayError:
                pass  # it has ended already

    def _release(self, task: _Task) -> None:
        if not task.released:
            task.released = True
            self.running -= 1

    # -- where attempts run ----------------------------------------------------
    def _on_place(self, placed: Placed) -> None:
        """An attempt said where it runs (called on the ledger service's thread)."""
        self.placed[(placed.job_id, placed.attempt)] = placed

    def _note_place(self, handle: Handle) -> None:
        placed = self.placed.pop((handle.order.job.id, handle.order.attempt), None)
        if placed is not None:
            handle.node = str(placed.place.get("host"))
            handle.pid = placed.place.get("pid")
            handle.started = handle.started or time.time()

    def _nodes(self) -> dict[str, dict[str, float]]:
        """The alive nodes that can run jobs: node id -> resources."""
        return {
            n["NodeID"]: n["Resources"]
            for n in ray.nodes()
            if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1
        }

    def _default_threads(self) -> int:
        largest = max((int(r.get("CPU", 0)) for r in self._nodes().values()), default=1)
        return max(1, min(MIN_THREADS_PER_JOB, largest))

    def _cluster_gpus(self) -> bool:
        return any(r.get("GPU", 0) >= 1 for r in self._nodes().values())


def task_order(order: Order, threads: int) -> dict[str, Any]:
    """What a task needs of its order, as plain data."""
    job = order.job
    return {
        "job": {
            "id": job.id,
            "model": job.model,
            "benchmark": job.benchmark,
            "kind": job.kind,
            "spec": job.spec,
            "attempts": job.attempts,
        },
        "attempt": order.attempt,
        "owner": order.owner,
        "threads": threads,
        "request_timeout_s": order.request_timeout_s,
        "sha256": order.sha256,
    }


def reachable(address: str) -> str:
    """The address to give ``ray.init``, once something answers there; a ConfigError if not."""
    if address == "auto":
        target = _auto_address()
        if target is None:
            raise ConfigError(
                "execution.address is auto but no Ray cluster runs on this machine; start one "
                "with: ray start --head, or give the head's address as host:port"
            )
    else:
        target = address
    host, _, port = target.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ConfigError(
            f"the Ray cluster at {target} cannot be reached ({why}); start it with: "
            "ray start --head, or fix execution.address (--address)"
        ) from None
    if target.startswith("ray://") and not _has_client():
        raise ConfigError(
            f"{target} needs Ray's client, which is not installed; install it with: "
            "pip install 'ray[client]', or run ggufbench on a node of the cluster"
        )
    return target


def _client_init(target: str) -> None:
    """Connect through Ray's client: this process stays outside the cluster, and the head runs
    its Ray driver, whose own log lines the client would print here.

    The head starts a server of its own for each connection. Soon after the head starts,
    that server can fail to come up ("Initialization failure from server"), and the next
    connection gets a fresh one, so that failure is tried again (retries.py); Ray's client
    has already disconnected after it. The last failure is raised as Ray raised it.
    """
    from ggufbench.backends._base import Retryable, RetryPolicy
    from ggufbench.retries import call

    def once() -> None:
        try:
            ray.init(address=target, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionAbortedError as exc:  # the head's answer to the connection
            raise Retryable(str(exc)) from exc

    logging.getLogger(CLIENT_LOGS).addFilter(_errors_only)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns before it raises; the ConfigError says it
        try:
            call(once, RetryPolicy(retries=CLIENT_INIT_RETRIES))
        except Retryable as exc:
            raise exc.__cause__ or exc from None


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def _auto_address() -> str | None:
    """The cluster ``ray start`` recorded on this machine (or RAY_ADDRESS), as host:port."""
    from ray._private import services  # Ray's own resolution of "auto"

    try:
        return services.canonicalize_bootstrap_address("auto")
    except Exception:  # noqa: BLE001 - nothing found is the answer
        return None


def _has_client() -> bool:
    try:
        import grpc  # noqa: F401
    except ImportError:
        return False
    return True


def lost_reason(exc: Exception, node: str) -> str:
    """Why Ray says a task ended without a result, in one sentence naming its node."""
    errors = ray.exceptions
    if isinstance(exc, errors.OutOfMemoryError):
        return f"Ray's memory monitor killed the worker on {node}: out of memory"
    if isinstance(exc, errors.NodeDiedError | errors.LocalRayletDiedError):
        return f"{node} was lost while it ran the attempt"
    if isinstance(exc, errors.WorkerCrashedError):
        return f"the worker on {node} died (the node was lost, or the process was killed)"
    if isinstance(exc, errors.TaskCancelledError):
        return f"the attempt on {node} was cancelled"
    if isinstance(exc, errors.RayTaskError):
        cause = exc.cause if exc.cause is not None else exc
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
        return f"the attempt on {node} failed: {first[:300]}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"Ray ended the attempt on {node}: {type(exc).__name__} {first[:300]}".strip()


def _fits(resources: dict[str, float], cpus: int, memory: int, gpus: int) -> bool:
    return (
        resources.get("CPU", 0) >= cpus
        and resources.get("memory", 0) >= memory
        and resources.get("GPU", 0) >= gpus
    )


def _no_node(
    job_id: str, cpus: int, memory: int, gpus: int, nodes: dict[str, Any], some_fit: bool
) -> str:
    if some_fit:
        return (
            f"no node of the Ray cluster that can run {job_id} has its model file as the run"
            " started with; make the same file visible at the same path on the nodes"
        )
    largest = max(nodes.values(), key=lambda r: (r.get("CPU", 0), r.get("memory", 0)))
    need = f"{cpus} CPUs, {memory / 2**30:.1f} GiB of memory" + (f", {gpus} GPU" if gpus else "")
    have = f"{int(largest.get('CPU', 0))} CPUs, {largest.get('memory', 0) / 2**30:.1f} GiB"
    return (
        f"{job_id} needs {need}, more than any node of the Ray cluster offers (the largest:"
        f" {have}); set threads, lower n_ctx, or add a larger node"
    )


def _task_env(threads: int) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.update({k: os.environ[k] for k in FORWARDED_ENV if k in os.environ})
    return env


def _write_log(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
