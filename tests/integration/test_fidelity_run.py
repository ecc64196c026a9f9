"""Fidelity through the real ``ggufbench run``: SmolLM2 Q4_1 as the baseline, a variant made
by llama.cpp's quantizer, and gemma-3 (another tokenizer, skipped with its sentence); then a
run killed with -9 part way through the variant's job and resumed gives the same figures."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ggufbench, start_ggufbench
from ggufbench.fidelity import VARIANT_KIND
from ggufbench.testmodels import derived_path, gemma_path

N_CTX, CHUNKS = 256, 4  # several chunks: one alone can be computed before a poll sees it
SKIPPED = (
    "gemma is skipped: its tokenizer differs from the baseline base's, so their next-token "
    "distributions cannot be compared token by token"
)


@pytest.fixture(scope="module")
def models(smollm2: Path) -> dict[str, Path]:
    return {"base": smollm2, "q4": derived_path(smollm2, "Q4_K_M"), "gemma": gemma_path()}


def write_suite(path: Path, models: dict[str, Path], root: Path) -> Path:
    lines = ["name: fid", f"output_root: {root}", "models:"]
    for alias, file in models.items():
        lines += [f"  - alias: {alias}", f"    path: {file}"]
        lines += ["    baseline: true"] if alias == "base" else []
    lines += [
        "defaults: {runner: llama-cpp, n_ctx: 1024, n_gpu_layers: 0}",
        "benchmarks:",
        f"  - fidelity: {{n_ctx: {N_CTX}, chunks: {CHUNKS}}}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def query(root: Path, sql: str) -> list[tuple]:
    for ledger in root.glob("*/ledger.sqlite"):
        try:
            db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
            try:
                return db.execute(sql).fetchall()
            finally:
                db.close()
        except sqlite3.OperationalError:  # the ledger is being created
            return []
    return []


def wait_part_way_through(root: Path, proc: subprocess.Popen, job: str) -> None:
    """Until ``job`` runs with part of its chunks committed and its worker has said where."""
    sql = (
        "SELECT COUNT(*) FROM jobs j WHERE id = '" + job + "' AND status = 'running'"
        " AND done > 0 AND done < total AND EXISTS (SELECT 1 FROM attempts a"
        " WHERE a.job_id = j.id AND a.n = j.attempts AND a.host IS NOT NULL)"
    )
    deadline = time.time() + 600
    while not (query(root, sql) or [(0,)])[0][0]:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        assert time.time() < deadline, "the variant's job never got part way"
        time.sleep(0.05)


def fidelity_of(run_dir: Path) -> dict[str, dict]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {alias: m["benchmarks"]["fidelity"] for alias, m in summary["models"].items()}


def check_reference(run_dir: Path) -> None:
    found = fidelity_of(run_dir)
    q4, base = found["q4"], found["base"]
    assert q4["status"] == "done" and q4["n_samples"] == CHUNKS * (N_CTX - 1 - N_CTX // 2)
    names = {"kld", "same_top_p", "ppl", "ppl_base", "ppl_ratio", "ln_ppl_ratio", "delta_p",
             "rms_delta_p"}  # fmt: skip
    assert set(q4["metrics"]) == names
    assert all(set(m) >= {"value", "stderr"} for m in q4["metrics"].values())
    assert q4["metrics"]["kld"]["value"] > 0 and 0 < q4["metrics"]["same_top_p"]["value"] <= 1
    assert set(q4["details"]["kld_percentiles"]) >= {"max", "median", "min", "99.0"}
    assert q4["details"]["baseline"] == "base" and "vs_baseline" not in q4
    assert base["metrics"]["ppl"] == q4["metrics"]["ppl_base"]  # the same numbers, exactly
    assert q4["input_tokens"] == base["input_tokens"] == CHUNKS * N_CTX  # each pass's chunks
    assert found["gemma"]["status"] == "skipped" and found["gemma"]["error"] == SKIPPED
    state = json.loads(ggufbench("status", str(run_dir), "--json").stdout)
    jobs = {job["id"]: (job["status"], job["error"]) for job in state["jobs"]}
    assert jobs["gemma/fidelity"] == ("skipped", SKIPPED) and jobs["q4/fidelity"] == ("done", None)
    md = (run_dir / "report.md").read_text()
    assert "## Fidelity" in md and f"- {SKIPPED}" in md
    compute_s = q4["compute_s"]  # chunks, then input tokens, per second; none generated
    speed = f"| {CHUNKS / compute_s:.2f} | {CHUNKS * N_CTX / compute_s:.1f} | – |"
    assert f"| q4 | fidelity | {q4['wall_s']:.1f} | {CHUNKS} | 0 {speed}" in md
    kld = q4["metrics"]["kld"]
    assert f"| q4 | {kld['value']:.6f} ± {kld['stderr']:.6f} |" in md
    html = (run_dir / "report.html").read_text()
    assert 'id="fidelity-table"' in html and 'id="fidelity-plot"' in html
    # the compact record, not a full-vocabulary logit file: 49,152 logits per scored token
    # would be 49 MB here
    sizes = [p.stat().st_size for p in run_dir.rglob("*") if p.is_file()]
    assert max(sizes) < 5 * 2**20


def test_fidelity_run_then_kill9_part_way_and_resume(tmp_path, models):
    done = ggufbench("run", str(write_suite(tmp_path / "ref.yaml", models, tmp_path / "ref")))
    assert done.returncode == 0, done.stdout + done.stderr
    (ref_dir,) = (tmp_path / "ref").iterdir()
    check_reference(ref_dir)
    assert "vs the baseline" in done.stdout and "KLD " in done.stdout

    root = tmp_path / "runs"
    suite = write_suite(tmp_path / "suite.yaml", models, root)
    proc = start_ggufbench("run", str(suite), output=subprocess.PIPE)
    wait_part_way_through(root, proc, "q4/fidelity")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    ((kept,),) = query(root, f"SELECT COUNT(*) FROM cache WHERE kind = '{VARIANT_KIND}'")
    assert 0 < kept < CHUNKS

    (run_dir,) = root.iterdir()
    resumed = ggufbench("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    ref, now = fidelity_of(ref_dir), fidelity_of(run_dir)
    for alias in ("base", "q4"):
        assert now[alias]["metrics"] == ref[alias]["metrics"]
        assert now[alias]["details"] == ref[alias]["details"]
    assert (now["gemma"]["status"], now["gemma"]["error"]) == ("skipped", SKIPPED)
    q4 = now["q4"]
    assert q4["attempts"] == 2 and now["base"]["attempts"] == 1
    assert q4["requests"] == {"total": CHUNKS, "computed": CHUNKS - kept, "from_cache": kept}
    assert q4["input_tokens"] == (CHUNKS - kept) * N_CTX  # the cached chunks add nothing
