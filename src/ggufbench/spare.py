"""A spare worker: a worker process started before it is needed.

A worker spends about a second importing lm-eval and its datasets stack before
it can run a job. A spare does that while the orchestrator is busy elsewhere
(the preflight checks, or a running job), then waits for one job on its stdin:
the worker's arguments, the job's own environment variables and its log file.
A job still gets a process of its own, so a crash stays inside it. The spare
imports nothing that reads the GPU environment (llama.cpp is loaded only after
the job's ``CUDA_VISIBLE_DEVICES`` is set). It exits when its parent dies, and
a spare let go unused is killed. A spare that cannot take a job is replaced by
a fresh worker, so a spare never costs a job.

The standard library's ``multiprocessing`` forkserver would share the imports
too, but its children are not the orchestrator's, and the scheduler waits on,
signals and times out its workers as plain ``subprocess`` children.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

__all__ = ["Spare"]

STANDBY_FLAG = "--standby"


class Spare:
    """At most one waiting worker process."""

    def __init__(self, worker_cmd: list[str], env: dict[str, str]) -> None:
        self.worker_cmd = worker_cmd
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start a spare unless one is waiting."""
        if self.proc is not None:
            if self.proc.poll() is None:
                return
            _end(self.proc)
        try:
            self.proc = subprocess.Popen(
                [*self.worker_cmd, STANDBY_FLAG],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=self.env,
            )
        except OSError:
            self.proc = None

    def take(
        self, argv: list[str], env: dict[str, str], log: Path
    ) -> subprocess.Popen[bytes] | None:
        """Hand the waiting spare a job; None when there is none that can take it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is not None or proc.stdin is None:
            _end(proc)
            return None
        order = {"argv": argv, "env": env, "log": str(log)}
        try:
            proc.stdin.write(json.dumps(order).encode() + b"\n")
            proc.stdin.close()
        except OSError:  # it died while we wrote
            _end(proc)
            return None
        return proc

    def close(self) -> None:
        """Let a waiting spare go: it is killed (it holds no job)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _end(proc)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Stop a spare that holds no job: it has nothing to lose."""
    proc.kill()
    proc.wait()
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
