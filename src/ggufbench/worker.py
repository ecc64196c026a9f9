"""One job attempt in its own process: ``python -m ggufbench.worker``.

The orchestrator starts one worker per running job, so a segfault, an
out-of-memory kill or a hang stays inside it. The worker stops by itself when
its orchestrator dies (its parent changes), and every write it makes is checked
against the run's owner token, so it can never write into a run that another
process has taken over.

A spare (``--standby``, :mod:`ggufbench.spare`) imports first and reads its job's
arguments, environment and log file from stdin. On Ray the same attempt runs
inside a task (:mod:`ggufbench.executors._ray_task`), with a ledger that lives
on the driver and a scratch folder for the job's files.

Before the first request the worker checks the model file it sees against the
run's record (its sha256, cached per machine): a missing or different file fails
the attempt with a sentence that names the node and the path.

Exit codes: 0 done; 3 an error retrying cannot fix (last line 'ggufbench-error: ...');
4 no longer the run's owner; 5 a backend error worth retrying; 6 the model file on
this node is missing or differs from the run's; 130 interrupted; anything else a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ggufbench.errors import ModelFileError
from ggufbench.executors._base import (
    ERROR_PREFIX,
    EXIT_BACKEND_ERROR,
    EXIT_NODE_FILE,
    EXIT_NOT_OWNER,
    EXIT_USER_ERROR,
)

if TYPE_CHECKING:
    from ggufbench.cached import AnswerStore

__all__ = ["ERROR_PREFIX", "EXIT_BACKEND_ERROR", "EXIT_NOT_OWNER", "EXIT_USER_ERROR", "attempt"]


class NodeFileError(ModelFileError):
    """A job's model file is missing on this node, or differs from the run's record."""


def _watch_parent(parent: int) -> None:
    """Exit at once when the orchestrator that started us is gone."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(EXIT_NOT_OWNER)


def make_backend(model: dict[str, Any], threads: int | None) -> Any:
    """The model's backend; for thinking models wrapped so only answers come out."""
    from ggufbench.thinking import thinking_format

    backend = _raw_backend(model, threads)
    fmt = thinking_format(model.get("thinking"))
    if fmt.style == "none":
        return backend
    from ggufbench.backends.thinking import ThinkingBackend

    return ThinkingBackend(backend, fmt)


def make_judge_backend(judge: dict[str, Any], threads: int | None, n_gpu_layers: int) -> Any:
    """The ELYZA judge from its settings (``JudgeSpec`` as JSON).

    An in-process GGUF judge is held to the scores 1-5 by choosing among them
    (``ChoiceJudge``); an HTTP judge gets the score grammar in its requests and
    the suite's ``concurrency``.
    """
    if judge["runner"] == "llama-cpp":
        from ggufbench.benchmarks.elyza_choice import ChoiceJudge

        settings = {
            "runner": "llama-cpp",
            "path": judge["path"],
            "n_ctx": judge["n_ctx"],
            "n_gpu_layers": n_gpu_layers,
            "n_batch": 512,
        }
        return ChoiceJudge(_raw_backend(settings, threads))
    if judge["runner"] == "openai":
        from ggufbench.backends.openai_http import OpenAIBackend

        return OpenAIBackend(
            judge["base_url"],
            judge["model"],
            api_key_env=judge.get("api_key_env"),
            concurrency=judge["concurrency"],
        )
    raise ValueError(f"unknown judge runner {judge['runner']}")


def _raw_backend(model: dict[str, Any], threads: int | None) -> Any:
    from ggufbench.gguf_file import sha256_of

    if model["runner"] == "llama-cpp":
        from ggufbench.backends.llama_cpp import LlamaCppBackend

        path = Path(model["path"])
        return LlamaCppBackend(
            path,
            n_ctx=model["n_ctx"],
            n_threads=model.get("threads") or threads,
            n_gpu_layers=model["n_gpu_layers"],
            n_batch=model["n_batch"],
            chat_template=model.get("chat_template"),
            identity=sha256_of(path),
        )
    if model["runner"] == "openai":
        from ggufbench.backends.openai_http import DEFAULT_CONCURRENCY, OpenAIBackend

        return OpenAIBackend(
            model["base_url"],
            model["model"],
            api_key_env=model.get("api_key_env"),
            concurrency=model.get("concurrency") or DEFAULT_CONCURRENCY,
        )
    raise ValueError(f"unknown runner {model['runner']}")


def run_job(
    run_dir: Path,
    job_id: str,
    owner: str,
    threads: int | None,
    timeout: float | None,
    *,
    store: AnswerStore | None = None,
    sha256: str | None = None,
    node: str | None = None,
) -> None:
    """Run one attempt of a job. ``store``: the run's ledger as this worker reaches it (by
    default the run directory's SQLite file); ``sha256``: the run's record of the model file;
    ``node``: this machine's name in errors and in the ledger (by default its host name)."""
    from ggufbench.benchmarks import run_benchmark
    from ggufbench.benchmarks._job import JobContext
    from ggufbench.cached import CachedBackend, Timing
    from ggufbench.ledger import Ledger

    ledger: AnswerStore = store or Ledger(run_dir / "ledger.sqlite")
    try:
        job = ledger.job(job_id)
        node = node or socket.gethostname()
        _record_place(ledger, owner, job_id, job.attempts, job.spec, node)
        check_files(job.spec, sha256, node)
        backend = make_backend(job.spec["model"], threads)
        try:
            cached = CachedBackend(backend, ledger, owner, job_id, Timing(fixed_s=timeout))
            ctx = JobContext(
                run_dir,
                job_id,
                job.model,
                job.benchmark,
                job.spec,
                cast("Ledger", ledger),  # any AnswerStore serves a job: it reads and commits
                owner,
                cached,
                extra={"threads": threads},
            )
            result = run_benchmark(job.kind, ctx)
            result["identity"] = backend.info.identity
            ledger.finish_job(owner, job_id, result)
        finally:
            backend.close()
    finally:
        ledger.close()


def check_files(spec: dict[str, Any], sha256: str | None, node: str) -> None:
    """The job's model file (against the run's record) and its judge's file are here."""
    from ggufbench.gguf_file import sha256_of

    model = spec["model"]
    if model.get("runner") == "llama-cpp" and model.get("path"):
        path = Path(model["path"])
        found = _sha256_on_node(path, node, sha256_of)
        if sha256 and found != sha256:
            raise NodeFileError(
                f"on {node}, {path} differs from the file this run started with (sha256"
                f" {found[:12]}... instead of {sha256[:12]}...); every node must see the same"
                " model file at the same path"
            )
    judge = (spec.get("benchmark") or {}).get("judge") or {}
    if judge.get("runner") == "llama-cpp" and judge.get("path"):
        _sha256_on_node(Path(judge["path"]), node, sha256_of)


def _sha256_on_node(path: Path, node: str, sha256_of: Any) -> str:
    if not path.is_file():
        raise NodeFileError(
            f"on {node}, {path} does not exist; every node must see the model files at the"
            " same path (shared storage, or a copy at that path on each node)"
        )
    digest: str = sha256_of(path)
    return digest


def _record_place(
    ledger: AnswerStore,
    owner: str,
    job_id: str,
    attempt: int,
    spec: dict[str, Any],
    node: str,
) -> None:
    """Write where this attempt runs into the ledger (run.json's ``attempts``) and its log."""
    from ggufbench.build_info import attempt_place

    place = {**attempt_place(spec["model"]), "host": node}
    ledger.record_place(owner, job_id, attempt, place)
    visible = place["cuda_visible_devices"]
    print(
        f"attempt {attempt} of {job_id} on {place['host']}, pid {place['pid']},"
        f" device: {place['device']}"
        + ("" if visible is None else f", CUDA_VISIBLE_DEVICES={visible}"),
        flush=True,
    )


def preload() -> str:
    """The slow imports of a job, none of which loads llama.cpp; a traceback if one failed."""
    try:
        import lm_eval.evaluator  # noqa: F401
        import lm_eval.tasks  # noqa: F401

        import ggufbench.benchmarks  # noqa: F401
        import ggufbench.cached  # noqa: F401
        import ggufbench.lmeval_adapter  # noqa: F401
    except Exception:
        return traceback.format_exc()
    return ""


def standby() -> int:
    """Be a spare (:mod:`ggufbench.spare`): import now, then run the one job read from stdin.

    Exits 0 without a job when stdin closes first. A failed import is reported in
    the job's log, and the job then runs as it would in a fresh worker.
    """
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    failed = preload()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    order = json.loads(line)
    fd = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    if failed:
        print(f"this worker's early imports failed:\n{failed}", file=sys.stderr)
    os.environ.update(order["env"])
    if failed or (order["env"] and "llama_cpp" in sys.modules):
        # llama.cpp reads CUDA_VISIBLE_DEVICES when it is loaded: start clean.
        os.execv(sys.executable, [sys.executable, "-m", "ggufbench.worker", *order["argv"]])
    return main(order["argv"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from ggufbench.spare import STANDBY_FLAG

    if argv == [STANDBY_FLAG]:
        return standby()
    parser = argparse.ArgumentParser(prog="python -m ggufbench.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("job_id")
    parser.add_argument("owner")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--request-timeout", type=float, default=None)
    parser.add_argument("--sha256", default=None, help="the run's record of the model file")
    args = parser.parse_args(argv)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    return attempt(
        lambda: run_job(
            args.run_dir,
            args.job_id,
            args.owner,
            args.threads,
            args.request_timeout,
            sha256=args.sha256,
        )
    )


def attempt(run: Callable[[], None]) -> int:
    """Run a job attempt; its exit code, with the reason of a failure as the last line on
    stderr (:data:`ERROR_PREFIX`)."""
    from ggufbench.backends._base import NotSupported
    from ggufbench.errors import BackendError, GgufbenchError
    from ggufbench.ledger import NotOwner

    try:
        run()
    except NotOwner as exc:  # another driver took the run over, or the driver stopped us
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return EXIT_NOT_OWNER
    except NotSupported as exc:  # the backend cannot do this task: retrying will not help
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except NodeFileError as exc:  # another node may have the file
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return EXIT_NODE_FILE
    except BackendError as exc:  # may pass: retried
        traceback.print_exc()
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return EXIT_BACKEND_ERROR
    except GgufbenchError as exc:  # will not pass by retrying: bad task, bad file
        traceback.print_exc()
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (KeyboardInterrupt, SystemExit):
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
