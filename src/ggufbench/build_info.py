"""Which llama.cpp build answers, and on which device.

An in-process answer depends on more than the model file and the settings: the
llama.cpp build (an AVX-512 CPU build and an AVX2 one round differently; a CUDA
build is another set of kernels) and the GPU that ran the offloaded layers.
:func:`runtime_identity` names both, for the cache key, so a run resumed on
another machine, with another build or with ``CUDA_VISIBLE_DEVICES`` changed
never mixes answers computed by different kernels. :func:`attempt_place` names
where an attempt runs, for run.json.

Everything is read from the llama.cpp library loaded in this process, once:
``llama_print_system_info`` (each backend's compiled features), ggml's version
and commit, and ggml's device registry (the devices this process can offload
to, after ``CUDA_VISIBLE_DEVICES``). Nothing here changes between two runs on
the same machine and build.
"""

from __future__ import annotations

import ctypes
import functools
import os
import socket
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Gpu",
    "attempt_place",
    "describe_device",
    "device_identity",
    "llama_build",
    "runtime_identity",
    "visible_gpus",
]

# ggml_backend_dev_type (ggml-backend.h): CPU 0, GPU 1, IGPU 2, ACCEL 3, META 4.
_GPU_TYPES = (1, 2)


@dataclass(frozen=True)
class Gpu:
    """A device llama.cpp can offload layers to: ``CUDA0``, ``NVIDIA H200``."""

    name: str
    description: str


def _system_info() -> str:
    import llama_cpp

    return bytes(llama_cpp.llama_print_system_info()).decode("utf-8", "replace").strip()


@functools.cache
def _ggml() -> Any:
    """ggml's shared library as llama-cpp-python loaded it, with the calls used here typed."""
    from llama_cpp._ggml import libggml

    for name in ("ggml_version", "ggml_commit"):
        getattr(libggml, name).restype = ctypes.c_char_p
        getattr(libggml, name).argtypes = []
    libggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    libggml.ggml_backend_dev_count.argtypes = []
    libggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    libggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(libggml, name).restype = ctypes.c_char_p
        getattr(libggml, name).argtypes = [ctypes.c_void_p]
    libggml.ggml_backend_dev_type.restype = ctypes.c_int
    libggml.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    return libggml


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


def _ggml_version() -> str:
    try:
        lib = _ggml()
        return f"{_text(lib.ggml_version())} ({_text(lib.ggml_commit())})"
    except (AttributeError, OSError, ImportError):  # an older ggml without these calls
        return "unknown"


def _gpus() -> tuple[Gpu, ...]:
    """The GPUs ggml registered in this process (none on a CPU build or with none visible)."""
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        return ()
    lib = _ggml()
    found = []
    for index in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(index)
        if lib.ggml_backend_dev_type(dev) in _GPU_TYPES:
            name = _text(lib.ggml_backend_dev_name(dev))
            found.append(Gpu(name, _text(lib.ggml_backend_dev_description(dev))))
    return tuple(found)


@functools.cache
def llama_build() -> dict[str, str]:
    """The llama.cpp build loaded in this process: versions and compiled features."""
    import llama_cpp

    return {
        "llama_cpp_python": llama_cpp.__version__,
        "ggml": _ggml_version(),
        "system_info": _system_info(),
    }


@functools.cache
def visible_gpus() -> tuple[Gpu, ...]:
    """The GPUs this process can offload to, probed once."""
    return _gpus()


def device_identity(n_gpu_layers: int) -> dict[str, Any]:
    """Where a model loaded with ``n_gpu_layers`` computes.

    GPU models, not indexes: the same model of GPU under another index gives the
    same answers. The visible GPUs count even with no layer offloaded, because
    llama.cpp may still send large host-side operations to a GPU.
    """
    gpus = visible_gpus()
    return {
        "offloaded": bool(gpus) and n_gpu_layers != 0,
        "gpus": sorted(g.description for g in gpus),
    }


def runtime_identity(n_gpu_layers: int) -> dict[str, Any]:
    """The build and device part of an in-process answer's identity."""
    return {"build": llama_build(), "device": device_identity(n_gpu_layers)}


def describe_device(n_gpu_layers: int) -> str:
    """``cpu``, or the GPUs the layers are offloaded to (``CUDA0 NVIDIA H200``)."""
    gpus = visible_gpus()
    names = ", ".join(f"{g.name} {g.description}" for g in gpus)
    if not gpus:
        return "cpu"
    if n_gpu_layers == 0:
        return f"cpu (no layers offloaded; visible: {names})"
    return names


def attempt_place(model: dict[str, Any]) -> dict[str, Any]:
    """Where this process runs a job's model: host, pid, device, CUDA_VISIBLE_DEVICES."""
    from ggufbench.plan import loads_here

    if loads_here(model):  # in this process, or in a llama-server started for the job
        device = describe_device(int(model.get("n_gpu_layers", 0)))
    else:
        device = f"server {model.get('base_url') or ''}".strip()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": device,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
