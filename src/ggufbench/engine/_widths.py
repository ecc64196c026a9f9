"""Measured step widths, remembered per model file, llama.cpp build and machine.

The probe (:mod:`._probe`) costs about a hundred token evaluations: a second on a
small model, minutes for a large one on a CPU. Its answer depends only on the
kernels llama.cpp picks, so it is kept in ``<cache>/step-widths.json`` under a key
of everything that picks them: the model's sha256, the llama-cpp-python version,
llama.cpp's system info (backends, CPU features), the machine's name, the GPU
layers, the micro-batch size and the probe's limit. Any change measures again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

__all__ = ["remembered_width"]

FILE_NAME = "step-widths.json"


def width_key(parts: dict[str, Any]) -> str:
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    full = dict(
        parts,
        llama_cpp=llama_cpp.__version__,
        system=info.decode() if isinstance(info, bytes) else str(info),
        machine=platform.node(),
    )
    return hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()


def remembered_width(cache: Path, parts: dict[str, Any], measure: Callable[[], int]) -> int:
    """The width stored for ``parts``, or ``measure()`` stored for next time.

    A cache that cannot be read or written only costs a new measurement.
    """
    key = width_key(parts)
    path = cache / FILE_NAME
    lock = FileLock(str(path) + ".lock", timeout=60)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock.acquire()  # a Timeout is an OSError too
    except OSError:
        return measure()
    try:
        known = _read(path)
        if isinstance(known.get(key), int):
            return int(known[key])
        known[key] = width = measure()
        with contextlib.suppress(OSError):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
            tmp.replace(path)
        return width
    finally:
        lock.release()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
