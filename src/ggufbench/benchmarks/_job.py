"""What a benchmark gets from the worker that runs one of its jobs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ggufbench.cached import AnswerStore, CachedBackend
from ggufbench.rundir import results_file, samples_file


@dataclass
class JobContext:
    run_dir: Path
    job_id: str
    alias: str
    name: str  # the benchmark name: an lm-eval task, or elyza_tasks_100
    spec: dict[str, Any]  # the job spec from the plan
    ledger: AnswerStore  # the run's SQLite ledger, or on Ray the driver's relay
    owner: str
    cached: CachedBackend
    extra: dict[str, Any] = field(default_factory=dict)

    def result_path(self) -> Path:
        return results_file(self.run_dir, self.alias, self.name)

    def samples_path(self) -> Path:
        return samples_file(self.run_dir, self.alias, self.name)

    def write_json(self, path: Path, data: Any) -> None:
        _atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")

    def write_jsonl(self, path: Path, rows: list[dict[str, Any]]) -> None:
        lines = (json.dumps(r, ensure_ascii=False, default=str) for r in rows)
        _atomic(path, "".join(line + "\n" for line in lines))


def _atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
