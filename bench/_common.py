"""Shared pieces of the bench scripts: models, requests, processes, the machine.

Everything here runs against local files only: models from the test packages
or a path, tasks from an lm-eval ``include_path``, a llama-cpp-python server on
127.0.0.1 started and stopped by the script.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def model_path(name: str) -> Path:
    """``smollm2``, ``gemma`` (the test models) or a path to a GGUF file."""
    from ggufbench.testmodels import gemma_path, smollm2_path

    if name == "smollm2":
        return smollm2_path()
    if name == "gemma":
        return gemma_path()
    path = Path(name).expanduser()
    if not path.is_file():
        raise SystemExit(f"{name}: not a GGUF file (or use smollm2 / gemma)")
    return path


def default_include_path() -> Path:
    from ggufbench.data import demo_tasks_path

    return demo_tasks_path()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import llama_cpp
    import lm_eval
    import psutil

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "lm_eval": getattr(lm_eval, "__version__", "?"),
        "llama_cpp_system": llama_cpp.llama_print_system_info().decode().strip(),
    }


# -- requests as lm-eval builds them ---------------------------------------------


@dataclass
class Captured:
    loglikelihood: list[tuple[str, str]]
    generate: list[tuple[str, dict[str, Any]]]
    docs: list[tuple[str, int, int]]  # (task, doc_id, n_choices) of loglikelihood requests


def capture_requests(
    task: str, include_path: Path, limit: int | None, num_fewshot: int | None
) -> Captured:
    """The requests lm-eval makes for a task, recorded by a model that answers nothing."""
    from lm_eval import simple_evaluate
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    class Recorder(LM):
        def __init__(self) -> None:
            super().__init__()
            self.out = Captured([], [], [])

        def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
            for r in requests:
                self.out.loglikelihood.append(tuple(r.args))  # type: ignore[arg-type]
                self.out.docs.append((r.task_name, r.doc_id, r.idx))
            return [(-1.0, False)] * len(requests)

        def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
            return [-1.0] * len(requests)

        def generate_until(self, requests: list[Any]) -> list[str]:
            self.out.generate += [(r.args[0], dict(r.args[1])) for r in requests]
            return [""] * len(requests)

    logging.disable(logging.WARNING)
    try:
        lm = Recorder()
        simple_evaluate(
            model=lm,
            tasks=[task],
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=TaskManager(include_path=str(include_path)),
        )
    finally:
        logging.disable(logging.NOTSET)
    return lm.out


# -- processes --------------------------------------------------------------------


def run_timed(
    cmd: list[str], *, cwd: Path | None = None, log: Path, timeout: float | None = None
) -> float | None:
    """Run a command to the end; its wall time in seconds. Output goes to ``log``.

    None when it ran past ``timeout`` seconds (it is killed then).
    """
    env = dict(os.environ, **OFFLINE)
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            proc = subprocess.run(
                cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return None
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{tail}")
    return wall


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_server(
    path: Path, *, n_ctx: int, threads: int, log: Path, alias: str = "model"
) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1; yields its base URL."""
    import httpx

    port = free_port()
    cmd = [
        PY, "-m", "llama_cpp.server",
        "--model", str(path), "--model_alias", alias,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
        "--verbose", "False",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"the server stopped:\n{log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start within 300 s")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def lm_eval_results(output_path: Path) -> dict[str, Any]:
    """The results JSON lm-eval wrote under ``--output_path``."""
    files = sorted(output_path.rglob("results_*.json"))
    if not files:
        raise SystemExit(f"lm-eval wrote no results under {output_path}")
    data: dict[str, Any] = json.loads(files[-1].read_text())
    return data


def lm_eval_samples(output_path: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(output_path.rglob("samples_*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def metric(results: dict[str, Any], task: str, name: str = "acc") -> float | None:
    """A metric of a task or group from lm-eval's results, filter 'none'."""
    for section in ("groups", "results"):
        row = (results.get(section) or {}).get(task)
        if row and f"{name},none" in row:
            return float(row[f"{name},none"])
    return None


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)
