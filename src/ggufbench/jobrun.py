"""One attempt of one job, wherever it runs: a local worker process
(:mod:`ggufbench.worker`) or a Ray task (:mod:`ggufbench.executors._ray_task`).

:func:`run_job` checks the model file the attempt sees against the run's record
(its sha256, cached per machine), builds the model's backend
(:func:`ggufbench.backends.make_backend`), runs the benchmark through the cache
wrapper and writes the result. :func:`attempt` turns how it ended into the
attempt's exit code, with the reason of a failure as the last line of its output.

Exit codes: 0 done; 3 an error retrying cannot fix (last line 'ggufbench-error: ...');
4 no longer the run's owner; 5 a backend error worth retrying; 6 the model file on
this node is missing or differs from the run's; 130 interrupted; anything else a crash.
"""

from __future__ import annotations

import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

__all__ = ["NodeFileError", "attempt", "check_files", "run_job"]


class NodeFileError(ModelFileError):
    """A job's model file is missing on this node, or differs from the run's record."""


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
    from ggufbench.backends import make_backend
    from ggufbench.benchmarks import run_benchmark
    from ggufbench.benchmarks._job import JobContext
    from ggufbench.cached import CachedBackend, Timing
    from ggufbench.ledger import Ledger

    ledger: AnswerStore = store or Ledger(run_dir / "ledger.sqlite")
    try:
        job = ledger.job(job_id)
        node = node or socket.gethostname()
        _record_place(ledger, owner, job_id, job.attempts, job.spec, node)
        found = check_files(job.spec, sha256, node)
        log_path = server_log(run_dir, job_id, job.attempts)
        backend = make_backend(job.spec["model"], threads, sha256=found, log_path=log_path)
        try:
            cached = CachedBackend(backend, ledger, owner, job_id, Timing(fixed_s=timeout))
            ctx = JobContext(
                run_dir,
                job_id,
                job.model,
                job.benchmark,
                job.spec,
                ledger,
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


def server_log(run_dir: Path, job_id: str, attempt: int) -> Path:
    """Where a server started for this attempt writes its output: beside the attempt's log."""
    from ggufbench.rundir import RunDir

    log = RunDir(run_dir).log_path(job_id, attempt)
    log.parent.mkdir(parents=True, exist_ok=True)
    return log.with_suffix(".server.log")


def check_files(spec: dict[str, Any], sha256: str | None, node: str) -> str | None:
    """The job's model file (against the run's record) and its judge's file are here;
    the model file's sha256 when the job reads one on this machine."""
    from ggufbench.gguf_file import sha256_of

    model = spec["model"]
    found = None
    if model.get("path") and model.get("runner") != "openai":
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
    return found


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
