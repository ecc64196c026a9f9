"""One job attempt in its own process: ``python -m ggufbench.worker``.

The orchestrator starts one worker per running job, so a segfault, an
out-of-memory kill or a hang stays inside it. The worker stops by itself when
its orchestrator dies (its parent changes), and every write it makes is checked
against the run's owner token, so it can never write into a run that another
process has taken over.

A spare (``--standby``, :mod:`ggufbench.spare`) imports first and reads its job's
arguments, environment and log file from stdin. The attempt itself is
:mod:`ggufbench.jobrun`'s, which a Ray task (:mod:`ggufbench.executors._ray_task`)
runs the same way; its exit codes are listed there.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from ggufbench.executors._base import EXIT_NOT_OWNER
from ggufbench.jobrun import attempt, run_job

__all__ = ["main"]


def _watch_parent(parent: int) -> None:
    """Exit at once when the orchestrator that started us is gone."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(EXIT_NOT_OWNER)


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


if __name__ == "__main__":
    sys.exit(main())
