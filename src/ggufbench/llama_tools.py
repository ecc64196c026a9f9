"""llama.cpp's own programs (llama-perplexity, llama-server), built once per machine.

They are built with CMake from the llama.cpp source vendored in the llama-cpp-python
sdist of the version installed here, so the reference tools run the same kernels as
the in-process engine. A build lives in the ggufbench cache folder::

    $GGUFBENCH_CACHE/llama.cpp/<version>-<cpu key>/bin/llama-perplexity
                                                  /bin/llama-server
                                                  /src, /build   (kept: a later tool builds
                                                                  incrementally)

The CPU key hashes what ``-march=native`` turns on (or the CPU's flags), the machine
and the CMake arguments, like the Makefile's key for llama-cpp-python itself: a build
is never reused on a CPU that cannot run it. Only the requested targets are built,
Release, static, without tests, examples, curl, OpenSSL or the web UI download.
A file lock makes two concurrent builders wait for one build; binaries are copied
into ``bin`` under a temporary name and renamed, so a half-built tool is never used.

    python -m ggufbench.llama_tools build [--tool llama-perplexity --tool llama-server]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock

from ggufbench.errors import GgufbenchError
from ggufbench.gguf_file import cache_root

__all__ = ["TOOLS", "LlamaToolError", "build", "tool_dir", "tool_path"]

TOOLS = ("llama-perplexity", "llama-server")
BUILD_JOBS = 2
_CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # no download of the web UI at build time
)


class LlamaToolError(GgufbenchError):
    """A llama.cpp program cannot be built here."""


def llama_cpp_version() -> str:
    """The installed llama-cpp-python's version (the one pyproject pins)."""
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        raise LlamaToolError(
            "llama-cpp-python is not installed, so its llama.cpp source version is unknown; "
            "run 'make install'"
        ) from None


def _cmake_args() -> list[str]:
    return [*_CMAKE_ARGS, *shlex.split(os.environ.get("CMAKE_ARGS", ""))]


def cpu_key() -> str:
    """12 hex digits naming the CPU features, the machine and the CMake arguments."""
    compiler = os.environ.get("CC") or "cc"
    try:
        probe = subprocess.run(
            [compiler, "-march=native", "-Q", "--help=target"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        probe = b""
    if not probe:
        probe = _cpu_flags()
    text = probe + platform.machine().encode() + " ".join(_cmake_args()).encode()
    return hashlib.sha256(text).hexdigest()[:12]


def _cpu_flags() -> bytes:
    try:
        for line in Path("/proc/cpuinfo").read_bytes().splitlines():
            if line.startswith((b"flags", b"Features")):
                return line
    except OSError:
        pass
    return platform.processor().encode()


def tool_dir(version: str | None = None) -> Path:
    """The build folder for this llama-cpp-python version on this CPU."""
    return cache_root() / "llama.cpp" / f"{version or llama_cpp_version()}-{cpu_key()}"


def tool_path(tool: str = "llama-perplexity") -> Path:
    """The built program, building it (and only it) on first use."""
    return build([tool])[tool]


def build(tools: Sequence[str] = TOOLS, *, quiet: bool = True) -> dict[str, Path]:
    """Build the missing ones of ``tools``; return every tool's binary path."""
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        raise LlamaToolError(
            f"unknown llama.cpp tool {unknown[0]!r}; use one of {', '.join(TOOLS)}"
        )
    version = llama_cpp_version()
    root = tool_dir(version)
    paths = {tool: root / "bin" / tool for tool in tools}
    if all(p.is_file() for p in paths.values()):
        return paths
    _check_toolchain()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "build.lock")):
        missing = [t for t, p in paths.items() if not p.is_file()]
        if missing:
            source = _source(root, version, quiet=quiet)
            _compile(source, root / "build", missing, quiet=quiet)
            _install(root / "build" / "bin", root / "bin", missing)
    return paths


def _check_toolchain() -> None:
    if shutil.which("cmake") is None:
        raise LlamaToolError(
            "cmake is not installed, so llama.cpp's tools cannot be built; "
            "install it (e.g. 'apt-get install cmake' or 'pip install cmake')"
        )
    compilers = [os.environ.get("CXX") or "", "c++", "g++", "clang++"]
    if not any(c and shutil.which(c) for c in compilers):
        raise LlamaToolError(
            "no C++ compiler was found, so llama.cpp's tools cannot be built; "
            "install one (e.g. 'apt-get install g++') or set CXX"
        )


def _source(root: Path, version: str, *, quiet: bool) -> Path:
    """llama.cpp's source tree from the llama-cpp-python sdist, unpacked once."""
    source = root / "src"
    if (source / "CMakeLists.txt").is_file():
        return source
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        _run(
            # Only this package as an sdist: ":all:" would also build its build
            # dependencies (scikit-build-core, hatchling, ...) from source.
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary"]
            + ["llama-cpp-python", f"llama-cpp-python=={version}", "-d", tmp],
            what=f"downloading the llama-cpp-python {version} sdist",
            quiet=quiet,
        )
        archives = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not archives:
            raise LlamaToolError(
                f"pip downloaded no llama-cpp-python {version} sdist; check that PyPI is reachable"
            )
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(archives[0]) as archive:
            archive.extractall(unpacked, filter="data")
        vendored = next(unpacked.glob("*/vendor/llama.cpp"), None)
        if vendored is None or not (vendored / "CMakeLists.txt").is_file():
            raise LlamaToolError(f"the llama-cpp-python {version} sdist holds no llama.cpp source")
        shutil.rmtree(source, ignore_errors=True)
        os.replace(vendored, source)
    return source


def _compile(source: Path, build_dir: Path, tools: Sequence[str], *, quiet: bool) -> None:
    _run(
        ["cmake", "-S", str(source), "-B", str(build_dir), *_cmake_args()],
        what="configuring llama.cpp",
        quiet=quiet,
    )
    _run(
        ["cmake", "--build", str(build_dir), "--config", "Release", "--target", *tools]
        + ["-j", str(BUILD_JOBS)],
        what=f"building {', '.join(tools)}",
        quiet=quiet,
    )


def _install(built: Path, bin_dir: Path, tools: Sequence[str]) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        tmp = bin_dir / f".{tool}.{os.getpid()}.tmp"
        shutil.copy2(built / tool, tmp)
        os.replace(tmp, bin_dir / tool)


def _run(command: list[str], *, what: str, quiet: bool) -> None:
    print(f"llama_tools: {what}", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=quiet, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-5:] if quiet else []
        detail = f": {' / '.join(tail)}" if tail else ""
        raise LlamaToolError(f"{what} failed (exit {done.returncode}){detail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ggufbench.llama_tools")
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build llama.cpp tools into the cache")
    build_cmd.add_argument("--tool", action="append", choices=TOOLS, help="default: all")
    build_cmd.add_argument("--verbose", action="store_true", help="show the compiler's output")
    args = parser.parse_args(argv)
    try:
        paths = build(args.tool or TOOLS, quiet=not args.verbose)
    except GgufbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
