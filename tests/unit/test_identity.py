"""The llama.cpp build and the device are part of an in-process answer's identity."""

import os
import socket
import subprocess
import sys

import pytest

from ggufbench import build_info
from ggufbench.backends._base import BackendInfo
from ggufbench.build_info import Gpu
from ggufbench.cache_key import cache_key

REQUEST = {"context": "x", "continuation": " y"}
LOCAL = BackendInfo("llama-cpp", "sha-a", {"n_ctx": 2048, "n_gpu_layers": -1})
CPU_ONLY = BackendInfo("llama-cpp", "sha-a", {"n_ctx": 2048, "n_gpu_layers": 0})
HTTP = BackendInfo("openai", "http://127.0.0.1:1/v1 m", {})
AVX2 = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | OPENMP = 1 |"


@pytest.fixture(autouse=True)
def fresh_probe():
    """Each test probes anew (the probe runs once per process otherwise)."""
    build_info.llama_build.cache_clear()
    build_info.visible_gpus.cache_clear()
    yield
    build_info.llama_build.cache_clear()
    build_info.visible_gpus.cache_clear()


def key(info: BackendInfo = LOCAL) -> str:
    return cache_key(info, "loglikelihood", REQUEST)


def test_the_identity_names_this_build() -> None:
    import llama_cpp

    build = build_info.llama_build()
    assert build["llama_cpp_python"] == llama_cpp.__version__
    assert build["system_info"].startswith("CPU :")
    assert build["ggml"] != ""


def test_the_probe_runs_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = build_info._system_info
    monkeypatch.setattr(build_info, "_system_info", lambda: calls.append(1) or real())
    first = key()
    assert key() == first and key(CPU_ONLY) != first
    assert calls == [1]


def test_a_new_process_on_this_machine_computes_the_same_key() -> None:
    code = (
        "from ggufbench.backends._base import BackendInfo\n"
        "from ggufbench.cache_key import cache_key\n"
        f"print(cache_key(BackendInfo{(LOCAL.runner, LOCAL.identity, LOCAL.settings)!r},"
        f" 'loglikelihood', {REQUEST!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == key()


def test_another_cpu_feature_set_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    here = key()
    monkeypatch.setattr(build_info, "_system_info", lambda: AVX2)
    build_info.llama_build.cache_clear()
    assert key() != here


def test_another_llama_cpp_version_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    here = key()
    monkeypatch.setattr(llama_cpp, "__version__", "0.0.1")
    build_info.llama_build.cache_clear()
    assert key() != here


def on_gpus(monkeypatch: pytest.MonkeyPatch, *gpus: Gpu) -> None:
    monkeypatch.setattr(build_info, "_gpus", lambda: gpus)
    build_info.visible_gpus.cache_clear()


def test_the_gpu_that_ran_the_layers_is_in_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    on_gpus(monkeypatch)
    cpu = key()
    on_gpus(monkeypatch, Gpu("CUDA0", "NVIDIA H200"))
    h200 = key()
    on_gpus(monkeypatch, Gpu("CUDA0", "NVIDIA A100-SXM4-80GB"))
    a100 = key()
    assert len({cpu, h200, a100}) == 3
    on_gpus(monkeypatch, Gpu("CUDA1", "NVIDIA H200"))  # same model of GPU, another index
    assert key() == h200


def test_no_layer_offloaded_is_another_device(monkeypatch: pytest.MonkeyPatch) -> None:
    on_gpus(monkeypatch, Gpu("CUDA0", "NVIDIA H200"))
    assert build_info.device_identity(-1)["offloaded"] is True
    assert build_info.device_identity(0)["offloaded"] is False
    assert key(CPU_ONLY) != key(LOCAL)


def test_http_answers_do_not_depend_on_the_local_build(monkeypatch: pytest.MonkeyPatch) -> None:
    here = key(HTTP)
    monkeypatch.setattr(build_info, "_system_info", lambda: AVX2)
    on_gpus(monkeypatch, Gpu("CUDA0", "NVIDIA H200"))
    assert key(HTTP) == here


def test_where_an_attempt_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    on_gpus(monkeypatch, Gpu("CUDA0", "NVIDIA H200"))
    place = build_info.attempt_place({"runner": "llama-cpp", "n_gpu_layers": -1})
    assert place["device"] == "CUDA0 NVIDIA H200" and place["cuda_visible_devices"] == "1"
    assert place["host"] == socket.gethostname() and place["pid"] == os.getpid()
    place = build_info.attempt_place({"runner": "llama-cpp", "n_gpu_layers": 0})
    assert place["device"].startswith("cpu")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    on_gpus(monkeypatch)
    place = build_info.attempt_place({"runner": "llama-cpp", "n_gpu_layers": -1})
    assert place["device"] == "cpu" and place["cuda_visible_devices"] is None
    http = build_info.attempt_place({"runner": "openai", "base_url": "http://h:1/v1"})
    assert http["device"] == "server http://h:1/v1"
