"""Answers are committed within FLUSH_S of being computed, while the backend is still busy.

A worker killed (SIGKILL) right after its progress counts an answer finds that
answer in the ledger, although the rest of its batch was still being computed.
Run as a script, this file is that worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from ggufbench.backends._base import BackendInfo, GenRequest, GenResult
from ggufbench.cache_key import cache_key
from ggufbench.cached import CachedBackend
from ggufbench.ledger import JobRow, Ledger

JOB = "m/demo"
REQUESTS = [GenRequest(prompt=p, max_tokens=8) for p in ("a", "b", "c", "d")]
INFO = BackendInfo("fake", "model-a", {})
GIVE_UP_S = 30.0  # far beyond FLUSH_S: only a commit that never comes reaches it


class FakeBatch:
    """A fake streaming backend: answers two prompts, then computes the rest for ever.

    A fake because the real engine cannot be held part way through a batch.
    """

    info = INFO

    def generate_iter(self, requests: Sequence[GenRequest]) -> Iterator[tuple[int, GenResult]]:
        for i in (0, 1):
            yield i, GenResult(requests[i].prompt.upper(), "stop", 1, 2)
        print("answered 2", flush=True)  # both answers are with the wrapper now
        time.sleep(600)
        raise AssertionError("the test kills this worker long before")

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        raise AssertionError("the streaming method must be used")


def test_answers_are_committed_while_the_rest_of_the_batch_computes(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", create=True)
    owner = ledger.claim()
    ledger.add_jobs([JobRow(JOB, "m", "demo", "lm_eval", {})])
    worker = subprocess.Popen(
        [sys.executable, __file__, str(ledger.path), owner], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline() == "answered 2\n"
        give_up = time.monotonic() + GIVE_UP_S
        while ledger.job(JOB).done < 2 and time.monotonic() < give_up:
            time.sleep(0.05)
        assert worker.poll() is None  # still computing the rest of its batch
        os.kill(worker.pid, signal.SIGKILL)  # right after its progress counts both answers
        worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert ledger.job(JOB).done == 2
    keys = {cache_key(INFO, "generate", asdict(r)): r.prompt for r in REQUESTS}
    found = ledger.cache_get(list(keys))
    assert {keys[k]: GenResult(**v).text for k, v in found.items()} == {"a": "A", "b": "B"}
    ledger.close()


if __name__ == "__main__":
    path, token = sys.argv[1:]
    cached = CachedBackend(FakeBatch(), Ledger(Path(path)), token, JOB)  # type: ignore[arg-type]
    cached.generate(REQUESTS)
