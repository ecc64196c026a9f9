"""Differences from the baseline: paired over the same items when the samples reproduce
the reported values, otherwise the two standard errors combined."""

import json
import math

from ggufbench.report import add_vs_baseline, render
from ggufbench.report._paired import item_scores, versus
from ggufbench.rundir import samples_file


def lm_eval_lines(task: str, accs: list[float], flt: str = "none") -> list[dict]:
    return [
        {"task": task, "doc_id": i, "filter": flt, "target": 0, "scores": {"acc": a}}
        for i, a in enumerate(accs)
    ]


def write(run_dir, alias, bench, rows) -> None:
    path = samples_file(run_dir, alias, bench)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_scores_per_item_by_metric_and_filter(tmp_path):
    rows = lm_eval_lines("t", [1.0, 0.0]) + [
        {"task": "t", "doc_id": 0, "filter": "strict-match", "scores": {"exact_match": 1.0}},
        {"task": "t", "doc_id": 0, "filter": "none", "scores": {"ppl": [1.5, 3]}},  # not a mean
        {"doc_id": 7, "score": 4, "status": "judged"},
        {"doc_id": 8, "score": None, "status": "judge_failed"},
    ]
    write(tmp_path, "m", "t", rows)
    scores = item_scores(samples_file(tmp_path, "m", "t"))
    assert scores["acc"] == {("t", 0): 1.0, ("t", 1): 0.0}
    assert scores["exact_match,strict-match"] == {("t", 0): 1.0}
    assert scores["score"] == {("", 7): 4.0}
    assert "ppl" not in scores


def test_paired_error_is_the_spread_of_the_per_item_differences():
    mine = {("t", i): v for i, v in enumerate([1.0, 1.0, 0.0, 1.0])}
    base = {("t", i): v for i, v in enumerate([1.0, 0.0, 0.0, 1.0])}
    vs = versus(0.75, 0.25, 0.5, 0.2887, mine, base)
    # differences 0, 1, 0, 0: mean 0.25, sample deviation 0.5, error 0.5 / sqrt(4)
    assert vs == {"delta": 0.25, "stderr": 0.25, "method": "paired", "n": 4}


def test_falls_back_to_combined_errors_when_pairing_would_not_reproduce_the_values():
    mine = {("t", i): v for i, v in enumerate([1.0, 1.0, 0.0, 1.0])}
    base = {("t", i): v for i, v in enumerate([1.0, 0.0, 0.0, 1.0])}
    # a reported value that is not the mean of the items (a group averaged by subtask)
    vs = versus(0.7, 0.25, 0.5, 0.3, mine, base)
    assert vs["method"] == "independent" and math.isclose(vs["stderr"], math.hypot(0.25, 0.3))
    # items missing on one side
    fewer = dict(list(base.items())[:3])
    assert versus(0.75, 0.25, 1 / 3, 0.3, mine, fewer)["method"] == "independent"
    assert versus(0.75, None, 0.5, 0.3, None, None) == {
        "delta": 0.25,
        "stderr": None,
        "method": "none",
    }


def summary(base_status: str = "done") -> dict:
    def bench(value: float, status: str = "done") -> dict:
        return {"status": status, "metrics": {"acc": {"value": value, "stderr": 0.1}}}

    return {
        "run_id": "r",
        "status": "done",
        "baseline": "base",
        "models": {
            "base": {"benchmarks": {"t": bench(0.5, base_status)}},
            "new": {"benchmarks": {"t": bench(0.75)}},
        },
    }


def test_summary_and_report_carry_the_paired_difference(tmp_path):
    write(tmp_path, "base", "t", lm_eval_lines("t", [1.0, 0.0, 0.0, 1.0]))
    write(tmp_path, "new", "t", lm_eval_lines("t", [1.0, 1.0, 0.0, 1.0]))
    s = add_vs_baseline(summary(), tmp_path)
    assert "vs_baseline" not in s["models"]["base"]["benchmarks"]["t"]
    assert s["models"]["new"]["benchmarks"]["t"]["vs_baseline"]["acc"]["method"] == "paired"
    assert "| new | 0.7500 ± 0.1000 | +0.2500 (±0.2500, paired n=4) |" in render(s)
    # no samples on disk: the report still shows a difference, with combined errors
    s = add_vs_baseline(summary(), tmp_path / "elsewhere")
    assert s["models"]["new"]["benchmarks"]["t"]["vs_baseline"]["acc"]["method"] == "independent"
    assert "| new | 0.7500 ± 0.1000 | +0.2500 (±0.1414) |" in render(s)  # 1.77 errors: no *
    for entry in (s["models"]["base"]["benchmarks"]["t"], s["models"]["new"]["benchmarks"]["t"]):
        entry["metrics"]["acc"]["stderr"] = 0.05
    s = add_vs_baseline(s, tmp_path / "elsewhere")
    assert "| new | 0.7500 ± 0.0500 | +0.2500 (±0.0707) * |" in render(s)
    # a failed baseline job: nothing to compare with
    s = add_vs_baseline(summary("failed"), tmp_path)
    assert "vs_baseline" not in s["models"]["new"]["benchmarks"]["t"]
