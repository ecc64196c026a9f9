"""What this machine has, and how many jobs it can run at once.

``max_parallel_jobs: auto`` takes the cores, the free RAM and the GPUs
(``nvidia-smi`` when present) against each job's footprint: weights plus KV
cache plus compute buffers, from the model's GGUF metadata. CPU threads are
divided between the jobs that run together.

When llama.cpp cannot load a model, :func:`load_error` tells a lack of memory
(retried: other jobs free theirs) from a bad file (not retried), by comparing the
model's footprint with the memory free where it loads.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ggufbench.errors import BackendError, GgufbenchError, ModelFileError

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

    def choose(self, footprint: int, wants_gpu: bool, alone: bool) -> tuple[bool, int | None]:
        """Whether a job fits now, and on which GPU; nothing is reserved. A job alone fits."""
        if wants_gpu and self.gpu_free:
            best = max(self.gpu_free, key=lambda i: self.gpu_free[i])
            return self.gpu_free[best] >= footprint or alone, best
        return self.used_ram + footprint <= self.ram or alone, None

    def take(self, footprint: int, wants_gpu: bool, alone: bool) -> tuple[bool, int | None]:
        """Reserve memory for a job; (ok, gpu index). A job alone always starts."""
        ok, gpu = self.choose(footprint, wants_gpu, alone)
        if not ok:
            return False, None
        if gpu is not None:
            self.gpu_free[gpu] -= footprint
        else:
            self.used_ram += footprint
        return True, gpu

    def give(self, footprint: int, gpu: int | None) -> None:
        if gpu is not None:
            self.gpu_free[gpu] += footprint
        else:
            self.used_ram -= footprint


def load_error(path: Path | str, cause: object, *, n_ctx: int, n_gpu_layers: int) -> GgufbenchError:
    """The error for a model that llama.cpp could not load (``cause``: what it said).

    Short of memory, it is a :class:`BackendError`, retried once other jobs have freed
    theirs, whose sentence gives the sizes; otherwise the file is at fault.
    """
    short = memory_shortfall(Path(path), n_ctx=n_ctx, n_gpu_layers=n_gpu_layers)
    if short is not None:
        return BackendError(short)
    return ModelFileError(f"llama.cpp could not load {path}: {cause}")


def memory_shortfall(path: Path, *, n_ctx: int, n_gpu_layers: int) -> str | None:
    """A sentence when the model's footprint exceeds the memory free now where it loads
    (the GPU's with ``n_gpu_layers`` != 0 on a machine with one, else RAM); None if it fits."""
    need = _need(path, n_ctx)
    if need is None:
        return None  # the file itself is at fault
    have, where = _free_for(n_gpu_layers)
    if need <= have:
        return None
    return (
        f"{path.name} needs about {need / 2**30:.1f} GiB (n_ctx {n_ctx}) but only "
        f"{have / 2**30:.1f} GiB of {where} is free; the job is retried when other jobs have "
        "freed theirs, or lower n_ctx or n_gpu_layers, or use a smaller quantization"
    )


def _need(path: Path, n_ctx: int) -> int | None:
    """The model's footprint; at least its file's size when even its metadata could not be
    mapped for lack of memory; None when the file is at fault."""
    from ggufbench.footprint import footprint_bytes
    from ggufbench.gguf_file import validate

    try:
        return footprint_bytes(validate(path), n_ctx)
    except GgufbenchError as exc:
        cause = exc.__cause__
        if isinstance(cause, MemoryError) or getattr(cause, "errno", None) == errno.ENOMEM:
            return path.stat().st_size  # the weights, which llama.cpp maps whole
        return None


def _free_for(n_gpu_layers: int) -> tuple[int, str]:
    """The memory free now where a model with ``n_gpu_layers`` loads, and its name."""
    machine = probe()
    gpu = _own_gpu(machine) if n_gpu_layers != 0 else None
    if gpu is not None:
        return gpu.free_bytes, f"GPU {gpu.index}"
    left = address_space_left()
    if left is not None and left < machine.available_ram:
        return left, "address space under this process's ulimit -v"
    return machine.available_ram, "RAM"


def address_space_left() -> int | None:
    """What this process may still map under ``ulimit -v`` (RLIMIT_AS); None: no limit.

    Past it llama.cpp cannot map a model, however much RAM is free (clusters often set it).
    """
    try:
        import resource
    except ImportError:  # not on a Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(0, soft - psutil.Process().memory_info().vms)


def _own_gpu(machine: Machine) -> Gpu | None:
    """The GPU this process loads onto: the one CUDA_VISIBLE_DEVICES names (the scheduler
    gives each worker one), else the one with the most free memory."""
    if not machine.gpus:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    chosen = [g for g in machine.gpus if str(g.index) == visible]
    return chosen[0] if chosen else max(machine.gpus, key=lambda g: g.free_bytes)
