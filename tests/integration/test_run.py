"""A whole run on the real SmolLM2 model, through the command line."""

import json

from conftest import ggufbench, read_samples, suite_text, summary_of


def test_whole_run(tmp_path, smollm2, tasks_dir):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        suite_text(
            [("smol", smollm2)],
            ["demo_hellaswag", "demo_gsm8k_cot", "demo_wikitext"],
            tasks_dir,
            tmp_path / "runs",
            limit=2,
        )
    )
    done = ggufbench("run", str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir, summary = summary_of(tmp_path / "runs")
    assert summary["status"] == "done" and summary["baseline"] == "smol"
    model = summary["models"]["smol"]
    assert model["quant"] == "Q4_1" and len(model["sha256"]) == 64
    benches = model["benchmarks"]
    assert set(benches) == {"demo_hellaswag", "demo_gsm8k_cot", "demo_wikitext"}
    assert 0 <= benches["demo_hellaswag"]["metrics"]["acc"]["value"] <= 1
    assert "exact_match,strict-match" in benches["demo_gsm8k_cot"]["metrics"]
    assert benches["demo_wikitext"]["metrics"]["word_perplexity"]["value"] > 1
    assert benches["demo_hellaswag"]["requests"]["total"] == 8  # 2 items x 4 endings
    assert benches["demo_hellaswag"]["requests"]["computed"] == 8
    # tokens read by the likelihood jobs, none by the generation job (it counts gen_tokens)
    assert benches["demo_hellaswag"]["input_tokens"] > 8  # more than a token a request
    assert benches["demo_wikitext"]["input_tokens"] > 0
    assert benches["demo_gsm8k_cot"]["input_tokens"] == 0 < benches["demo_gsm8k_cot"]["gen_tokens"]
    samples = read_samples(run_dir)
    gsm = [json.loads(line) for line in samples["samples/smol/demo_gsm8k_cot.jsonl"]]
    # one line per (document, filter): strict-match and flexible-extract
    assert sorted((s["doc_id"], s["filter"]) for s in gsm) == [
        (0, "flexible-extract"),
        (0, "strict-match"),
        (1, "flexible-extract"),
        (1, "strict-match"),
    ]
    assert benches["demo_gsm8k_cot"]["n_samples"] == 2
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["environment"]["llama_cpp_python"] and meta["environment"]["lm_eval"]
    assert (run_dir / "suite.yaml").is_file() and (run_dir / "status.json").is_file()
    report = (run_dir / "report.md").read_text()
    assert "demo_hellaswag" in report and "smol" in report and "Q4_1" in report
    assert "| input tokens/s | gen tokens/s |" in report

    status = ggufbench("status", str(run_dir), "--json")
    state = json.loads(status.stdout)
    assert state["status"] == "done" and state["live"] is False
    assert {j["status"] for j in state["jobs"]} == {"done"}

    again = ggufbench("report", str(run_dir), "--baseline", "nope")
    assert again.returncode == 2 and "not a model of this run" in again.stderr
