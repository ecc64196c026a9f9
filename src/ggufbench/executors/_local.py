"""Job attempts as worker processes on this machine: ``python -m ggufbench.worker``.

One process per attempt, so a segfault, an out-of-memory kill or a hang stays
inside it. Jobs start while the slots (from the cores, or
``max_parallel_jobs``) and the memory budget (RAM and each GPU's memory
against each job's footprint) allow; a job alone always starts. A job offloaded
to a GPU gets the GPU with the most free memory as its ``CUDA_VISIBLE_DEVICES``.
A spare worker (:mod:`ggufbench.spare`) imports while the last job runs and
takes the next one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ggufbench.executors._base import Ending, Handle, Order, ending_of, log_tail
from ggufbench.resources import Budget, Machine, slots, threads_per_job
from ggufbench.spare import Spare

WORKER_CMD = [sys.executable, "-m", "ggufbench.worker"]


@dataclass
class _Process:
    proc: subprocess.Popen[bytes]
    gpu: int | None
    released: bool = False


@dataclass
class LocalExecutor:
    machine: Machine
    max_parallel: int | str = "auto"
    worker_cmd: list[str] = field(default_factory=lambda: list(WORKER_CMD))
    spare: Spare | None = None
    name: str = "local"

    def __post_init__(self) -> None:
        self.budget = Budget(self.machine)
        self.running = 0
        self.run_dir = Path()
        if self.spare is not None and self.spare.worker_cmd != self.worker_cmd:
            self.spare = None  # a spare must run the same program as a fresh worker would

    def attach(self, run_dir: Path, owner: str) -> None:
        self.run_dir = run_dir

    def slots(self) -> int:
        return slots(self.machine, self.max_parallel)

    def has_room(self, footprint: int, wants_gpu: bool, alone: bool) -> bool:
        if self.running >= self.slots():
            return False
        return self.budget.choose(footprint, wants_gpu, alone)[0]

    def start(self, order: Order, alone: bool) -> Handle:
        _, gpu = self.budget.take(order.footprint, order.wants_gpu, alone=alone)
        threads = threads_per_job(self.machine, self.slots())
        args = [str(self.run_dir), order.job.id, order.owner, "--threads", str(threads)]
        if order.request_timeout_s:
            args += ["--request-timeout", str(order.request_timeout_s)]
        if order.sha256:
            args += ["--sha256", order.sha256]
        own_env = {} if gpu is None else {"CUDA_VISIBLE_DEVICES": str(gpu)}
        proc = self.spare.take(args, own_env, order.log) if self.spare is not None else None
        if proc is None:
            with open(order.log, "ab") as fh:
                proc = subprocess.Popen(
                    [*self.worker_cmd, *args],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env={**worker_env(), **own_env},
                    stdin=subprocess.DEVNULL,
                )
        self.running += 1
        return Handle(order, time.time(), "", proc.pid, _Process(proc, gpu))

    def expect_more(self) -> None:
        if self.spare is not None:
            self.spare.start()  # the next job's worker imports while this one runs

    def poll(self, handle: Handle) -> Ending | None:
        own: _Process = handle.private
        code = own.proc.poll()
        if code is None:
            return None
        self._release(handle)
        return ending_of(code, log_tail(handle.order.log))

    def kill(self, handle: Handle) -> None:
        _kill(handle.private.proc)
        self._release(handle)

    def stop(self, handles: list[Handle], grace_s: float) -> None:
        procs = [h.private.proc for h in handles]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.time() + grace_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                _kill(proc)
        for handle in handles:
            self._release(handle)

    def close(self) -> None:
        if self.spare is not None:
            self.spare.close()  # idempotent: a closed spare holds nothing

    def _release(self, handle: Handle) -> None:
        own: _Process = handle.private
        if not own.released:
            own.released = True
            self.budget.give(handle.order.footprint, own.gpu)
            self.running -= 1


def worker_env() -> dict[str, str]:
    """The environment of every worker, spares included."""
    return dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
