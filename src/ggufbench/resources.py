"""What this machine has, and how many jobs it can run at once.

``max_parallel_jobs: auto`` takes the cores, the free RAM and the GPUs
(``nvidia-smi`` when present) against each job's footprint: weights plus KV
cache plus compute buffers, from the model's GGUF metadata. CPU threads are
divided between the jobs that run together.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

import psutil

# A CPU job below this many threads loses more to scheduling than it gains.
MIN_THREADS_PER_JOB = 4
MEMORY_HEADROOM = 0.85


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class Machine:
    cores: int
    total_ram: int
    available_ram: int
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def nvidia_gpus() -> tuple[Gpu, ...]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    query = "--query-gpu=index,name,memory.total,memory.free"
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            mib = 1024 * 1024
            gpus.append(Gpu(int(parts[0]), parts[1], int(parts[2]) * mib, int(parts[3]) * mib))
    return tuple(gpus)


def probe() -> Machine:
    mem = psutil.virtual_memory()
    return Machine(cpu_count(), mem.total, mem.available, nvidia_gpus())


def slots(machine: Machine, requested: int | str) -> int:
    """How many jobs may run at once, before memory is counted."""
    if isinstance(requested, int):
        return max(1, requested)
    cpu_slots = max(1, machine.cores // MIN_THREADS_PER_JOB)
    return max(cpu_slots, len(machine.gpus))


def threads_per_job(machine: Machine, running: int) -> int:
    return max(1, machine.cores // max(1, running))


class Budget:
    """Memory handed out to running jobs: RAM, and each GPU's memory."""

    def __init__(self, machine: Machine) -> None:
        self.ram = int(machine.available_ram * MEMORY_HEADROOM)
        self.gpu_free = {g.index: int(g.free_bytes * MEMORY_HEADROOM) for g in machine.gpus}
        self.used_ram = 0

    def take(self, footprint: int, wants_gpu: bool, alone: bool) -> tuple[bool, int | None]:
        """Reserve memory for a job; (ok, gpu index). A job alone always starts."""
        if wants_gpu and self.gpu_free:
            best = max(self.gpu_free, key=lambda i: self.gpu_free[i])
            if self.gpu_free[best] >= footprint or alone:
                self.gpu_free[best] -= footprint
                return True, best
            return False, None
        if self.used_ram + footprint <= self.ram or alone:
            self.used_ram += footprint
            return True, None
        return False, None

    def give(self, footprint: int, gpu: int | None) -> None:
        if gpu is not None:
            self.gpu_free[gpu] += footprint
        else:
            self.used_ram -= footprint
