"""The run directory: its layout, run.json, the lock, and finding runs to resume."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ggufbench import __version__
from ggufbench.config import Suite, parse_suite, suite_to_yaml
from ggufbench.errors import LedgerError

UNFINISHED = ("running", "interrupted")


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: FileLock | None = None

    # -- layout ----------------------------------------------------------
    @property
    def ledger(self) -> Path:
        return self.path / "ledger.sqlite"

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def log_path(self, job_id: str, attempt: int) -> Path:
        return self.logs / f"{job_id.replace('/', '__')}.{attempt}.log"

    # -- run.json --------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        try:
            data = json.loads(self.run_json.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            raise LedgerError(
                f"{self.path} is not a ggufbench run directory (no run.json)"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LedgerError(
                f"{self.run_json} is damaged ({exc}); restore it or start a new run"
            ) from None
        if not isinstance(data, dict):
            raise LedgerError(
                f"{self.run_json} is damaged (not a JSON object); restore it or start a new run"
            )
        return data

    def update_meta(self, **fields: Any) -> None:
        """Write ``fields`` into run.json. New ``models`` records (a run starting or
        resuming) are refused while a model recorded before has changed behind its name."""
        data = self.meta()
        if "models" in fields:
            check_models_unchanged(data.get("models"))
        data.update(fields)
        write_json(self.run_json, data)

    def suite(self) -> Suite:
        import yaml

        path = self.path / "suite.yaml"
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise LedgerError(
                f"{path} cannot be read ({type(exc).__name__}); the run needs the suite it "
                "started with, restore it or start a new run"
            ) from None
        return parse_suite(data, self.path, source=str(path))

    # -- lock ------------------------------------------------------------
    def lock(self) -> None:
        """Hold the run's lock until this process exits (the OS frees it on kill -9)."""
        lock = FileLock(str(self.path / ".lock"))
        try:
            lock.acquire(timeout=0.5)
        except Timeout:
            raise LedgerError(
                f"{self.path} is being driven by another ggufbench process; wait for it or stop it"
            ) from None
        self._lock = lock

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def is_live(self) -> bool:
        """Whether some process holds the lock right now."""
        lock = FileLock(str(self.path / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False


def check_models_unchanged(recorded: Any) -> None:
    """Refuse, in one sentence, to go on with a run whose Ollama model has changed since
    run.json recorded it: another digest behind the same name would mix two models'
    answers in one run (``ollama.check_unchanged`` asks the server)."""
    if not isinstance(recorded, dict):
        return
    for record in recorded.values():
        if not isinstance(record, dict) or record.get("runner") != "ollama":
            continue
        if record.get("digest") and record.get("ollama_name"):
            from ggufbench.backends.ollama import check_unchanged

            check_unchanged(record["ollama_name"], record["digest"], record.get("base_url"))


def samples_file(run_dir: Path, alias: str, benchmark: str) -> Path:
    """Where a job's samples are: samples/<alias>/<benchmark>.jsonl."""
    return run_dir / "samples" / alias / f"{_file_name(benchmark)}.jsonl"


def results_file(run_dir: Path, alias: str, benchmark: str) -> Path:
    """Where a job's results are: results/<alias>/<benchmark>.json."""
    return run_dir / "results" / alias / f"{_file_name(benchmark)}.json"


def _file_name(benchmark: str) -> str:
    return benchmark.replace("/", "_")


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    os.replace(tmp, path)


def suite_digest(suite: Suite) -> tuple[str, str]:
    """The suite as written into a run, and the digest that finds its unfinished run.

    Where the jobs run (the executor and its address) changes no answer, so it is left
    out of the digest: ``run SUITE --executor ray`` resumes the same suite's local run.
    """
    text = suite_to_yaml(suite)
    placeless = suite.execution.model_copy(update={"executor": "local", "address": "auto"})
    same = suite_to_yaml(suite.model_copy(update={"execution": placeless}))
    return text, hashlib.sha256(same.encode("utf-8")).hexdigest()


def find_unfinished(suite: Suite) -> RunDir | None:
    """The newest run under output_root of this exact suite that did not finish."""
    _, digest = suite_digest(suite)
    root = suite.output_root
    if not root.is_dir():
        return None
    for path in sorted(root.iterdir(), reverse=True):
        if not (path / "run.json").is_file():
            continue
        run = RunDir(path)
        try:
            meta = run.meta()
        except LedgerError:
            continue
        if meta.get("suite_sha256") == digest and meta.get("status") in UNFINISHED:
            return run
    return None


def create_run(suite: Suite) -> RunDir:
    text, digest = suite_digest(suite)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = suite.output_root
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{suite.name}-{stamp}"
    n = 1
    while True:
        try:
            path.mkdir()
            break
        except FileExistsError:
            n += 1
            path = root / f"{suite.name}-{stamp}-{n}"
    (path / "logs").mkdir()
    (path / "suite.yaml").write_text(text, encoding="utf-8")
    write_json(
        path / "run.json",
        {
            "id": path.name,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(),
            "status": "running",
            "suite_sha256": digest,
            "creator": creator(),
            "environment": environment(),
            "attempts": [],
        },
    )
    return RunDir(path)


def creator() -> dict[str, Any]:
    """Who is running this process, and where: run.json's ``creator`` of a new run."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid with no name in the password database
        user = str(os.getuid())
    return {"uid": os.getuid(), "user": user, "host": socket.gethostname()}


def created_here(meta: dict[str, Any]) -> bool:
    """Whether the run was created by this user on this host (a run.json from
    before creators were recorded counts as someone else's)."""
    recorded = meta.get("creator")
    if not isinstance(recorded, dict):
        return False
    me = creator()
    return all(recorded.get(key) == me[key] for key in ("uid", "user", "host"))


def attempt_records(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """run.json's ``attempts``: every job attempt, where and on which device it ran."""
    return [
        {
            "job": a["job_id"],
            "attempt": a["n"],
            "status": a["status"],
            "started": _iso(a["started"]),
            "ended": _iso(a["ended"]),
            "host": a["host"],
            "pid": a["pid"],
            "device": a["device"],
            "cuda_visible_devices": a["cuda_visible_devices"],
            "log": a["log"],
            "error": a["error"],
        }
        for a in attempts
    ]


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).isoformat()


def environment() -> dict[str, Any]:
    from ggufbench.resources import probe

    machine = probe()
    env: dict[str, Any] = {
        "ggufbench": __version__,
        "python": sys.version.split()[0],
        "os": platform.platform(),
        "cpu": _cpu_name(),
        "cores": machine.cores,
        "ram_bytes": machine.total_ram,
        "gpus": [{"name": g.name, "memory_bytes": g.total_bytes} for g in machine.gpus],
    }
    try:
        import llama_cpp

        from ggufbench.build_info import llama_build

        build = llama_build()
        env["llama_cpp_python"] = llama_cpp.__version__
        env["llama_cpp_system"] = build["system_info"]
        env["ggml"] = build["ggml"]
    except Exception as exc:  # noqa: BLE001 - the environment record must never stop a run
        env["llama_cpp_python"] = f"unavailable: {exc}"
    try:
        from importlib.metadata import version

        env["lm_eval"] = version("lm_eval")
    except Exception:  # noqa: BLE001
        env["lm_eval"] = None
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
