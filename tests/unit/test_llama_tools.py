"""Building llama.cpp's tools: cache folder, toolchain checks and the build lock.

Nothing is compiled here (a build takes many minutes): where a finished build is
needed, placeholder files stand in for the binaries, and are named so.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock

from ggufbench import llama_tools
from ggufbench.llama_tools import LlamaToolError, build, cpu_key, tool_dir


def placeholder_binaries(root: Path, tools: tuple[str, ...] = llama_tools.TOOLS) -> None:
    """Stand-ins for built programs: empty files where a build would put them."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    for tool in tools:
        (root / "bin" / tool).write_bytes(b"")


def test_the_build_lives_in_the_cache_under_version_and_cpu_key(ggufbench_cache: Path):
    key = cpu_key()
    assert len(key) == 12 and int(key, 16) >= 0 and cpu_key() == key
    version = llama_tools.llama_cpp_version()
    assert tool_dir() == ggufbench_cache / "llama.cpp" / f"{version}-{key}"


def test_other_cmake_arguments_are_another_build(monkeypatch: pytest.MonkeyPatch):
    key = cpu_key()
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_CUDA=ON")
    assert cpu_key() != key


def test_a_finished_build_is_returned_without_building():
    placeholder_binaries(tool_dir())
    paths = build()
    assert set(paths) == set(llama_tools.TOOLS)
    assert all(p.parent == tool_dir() / "bin" for p in paths.values())
    assert not (tool_dir() / "src").exists()


def test_an_unknown_tool_is_one_sentence():
    with pytest.raises(LlamaToolError, match="unknown llama.cpp tool 'llama-nope'"):
        build(["llama-nope"])


def test_missing_cmake_is_one_sentence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LlamaToolError, match="cmake is not installed"):
        build(["llama-perplexity"])


def test_missing_compiler_is_one_sentence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / "cmake").symlink_to("/usr/bin/cmake")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(LlamaToolError, match="no C\\+\\+ compiler"):
        build(["llama-perplexity"])


def test_the_command_line_prints_the_sentence_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert llama_tools.main(["build", "--tool", "llama-server"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cmake is not installed") and "Traceback" not in err


def test_a_second_builder_waits_for_the_first_and_builds_nothing():
    root = tool_dir()
    root.mkdir(parents=True)
    result: dict[str, object] = {}

    def second() -> None:
        result["paths"] = build(["llama-perplexity"])

    with FileLock(str(root / "build.lock")):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # waiting for the lock, having started nothing
        assert [p.name for p in root.iterdir()] == ["build.lock"]
        placeholder_binaries(root)  # what the first builder leaves when it finishes
    thread.join(timeout=30)
    assert result["paths"] == {"llama-perplexity": root / "bin" / "llama-perplexity"}
    assert not (root / "src").exists() and not (root / "build").exists()
