"""Request cache keys.

A key is the sha256 of everything that can change an answer: the backend's
identity (the model file's sha256, or URL and model name), its settings
(context length, decode chunking, chat template...), the engine version, the
request kind and the full request. For an in-process runner it also holds the
llama.cpp build and the device the layers run on (:mod:`ggufbench.build_info`),
so a run resumed on another machine or GPU never reuses answers computed by
other kernels. Two different model files can never share an answer, and
neither can two settings of the same file.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ggufbench.backends._base import BackendInfo

# Bump when the way answers are computed changes, so old cached answers are not reused.
ENGINE_VERSION = 1

# Runners whose answers are computed by the llama.cpp loaded in this process.
IN_PROCESS_RUNNERS = frozenset({"llama-cpp"})


def cache_key(info: BackendInfo, kind: str, request: Any) -> str:
    payload = {
        "engine": ENGINE_VERSION,
        "runner": info.runner,
        "identity": info.identity,
        "settings": info.settings,
        "kind": kind,
        "request": request,
    }
    if info.runner in IN_PROCESS_RUNNERS:
        from ggufbench.build_info import runtime_identity

        payload["runtime"] = runtime_identity(int(info.settings.get("n_gpu_layers", 0)))
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
