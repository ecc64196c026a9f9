"""ELYZA-format tasks judged by a local GGUF model (SmolLM2), through the real CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import ggufbench, summary_of, write_suite

# Written for this test, in the ELYZA-tasks-100 schema; not from any published set.
TASKS = [
    {
        "input": "りんごが3個あります。2個もらいました。全部で何個ですか。",
        "output": "5個です。",
        "eval_aspect": "- 5個と答えていれば5点\n- それ以外: 1点",
    },
    {
        "input": "「ありがとう」を英語にしてください。",
        "output": "Thank you.",
        "eval_aspect": "- Thank you と訳していれば5点",
    },
]


def test_local_gguf_judge_scores_elyza_format_tasks(tmp_path: Path, smollm2: Path) -> None:
    dataset = tmp_path / "my_tasks.csv"
    with dataset.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["input", "output", "eval_aspect"])
        writer.writeheader()
        writer.writerows(TASKS)
    suite = write_suite(
        tmp_path,
        f"""name: judged
models:
  - alias: smol
    path: {smollm2}
defaults: {{runner: llama.cpp, n_ctx: 2048, threads: 1}}
benchmarks:
  - elyza_tasks_100:
      dataset: {dataset}
      max_tokens: 24
      judge: {{runner: llama-cpp, path: {smollm2}, n_ctx: 2048}}
""",
    )
    done = ggufbench("run", str(suite), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir, summary = summary_of(tmp_path / "runs")
    entry = summary["models"]["smol"]["benchmarks"]["elyza_tasks_100"]
    assert entry["status"] == "done" and entry["n_samples"] == 2
    assert 1 <= entry["metrics"]["score"]["value"] <= 5
    assert sum(entry["distribution"].values()) == entry["n_scored"] == 2
    assert entry["failures"] == {"generation": 0, "judgement": 0, "no_final_answer": 0}
    judge = entry["judge"]
    assert judge["runner"] == "llama-cpp" and judge["file"] == smollm2.name
    assert judge["model"] == summary["models"]["smol"]["sha256"]  # the judge file's sha256
    assert judge["prompt_version"] == "elyza-1to5-v1" and judge["n_params"] > 0
    assert entry["requests"] == {"total": 4, "computed": 4, "from_cache": 0, "failed": 0}

    rows = [json.loads(x) for x in (run_dir / "samples/smol/elyza_tasks_100.jsonl").open()]
    assert [r["input"] for r in rows] == [t["input"] for t in TASKS]
    for row in rows:
        assert row["status"] == "judged" and row["score"] in range(1, 6)
        assert isinstance(row["output"], str) and row["n_tokens"] <= 24
        assert row["target"] and row["eval_aspect"] and "thinking" not in row

    report = (run_dir / "report.md").read_text()
    assert "### elyza_tasks_100 — score" in report and "## ELYZA-tasks-100" in report
    assert "The judge has only 0.13B parameters" in report


def test_check_names_elyza_problems_before_anything_starts(tmp_path: Path, smollm2: Path) -> None:
    from ggufbench.testmodels import gemma_path

    suite = write_suite(
        tmp_path,
        f"""name: bad
models:
  - alias: no_template
    path: {gemma_path()}
benchmarks:
  - elyza_tasks_100:
      dataset: {tmp_path / "nope.jsonl"}
      judge: {{runner: llama-cpp, path: {tmp_path / "judge.gguf"}}}
""",
    )
    checked = ggufbench("check", str(suite), timeout=120)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    said = " ".join(checked.stderr.split())
    assert "3 problem(s) found, nothing was started" in said
    assert f"{tmp_path / 'nope.jsonl'} does not exist" in said
    assert "the ELYZA judge:" in said and "judge.gguf" in said
    assert "model 'no_template' has no chat template" in said and "set chat_template" in said
    assert "Traceback" not in checked.stderr
