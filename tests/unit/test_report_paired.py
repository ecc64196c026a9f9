"""Differences from the baseline: paired over the same items when the samples reproduce
the reported values, otherwise the two standard errors combined."""

import json
import math

from scipy import stats

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
    assert {k: vs[k] for k in ("delta", "stderr", "method", "n", "stderr_kind")} == {
        "delta": 0.25,
        "stderr": 0.25,
        "method": "paired",
        "n": 4,
        "stderr_kind": "paired",
    }
    # one discordant pair, won by the variant: McNemar's p is 1
    assert vs["mcnemar"] == {"p": 1.0, "baseline_only": 0, "variant_only": 1}
    assert vs["test"] == "McNemar exact" and vs["p"] == 1.0
    # every resample's mean is a multiple of 1/4 between 0 and 1
    assert vs["ci_method"] == "paired bootstrap" and vs["ci95"] == [0.0, 0.75]


def test_a_1_to_5_score_is_tested_by_a_paired_t_test():
    mine = {("", i): v for i, v in enumerate([5.0, 4.0, 3.0, 5.0, 2.0, 4.0])}
    base = {("", i): v for i, v in enumerate([4.0, 4.0, 2.0, 3.0, 2.0, 5.0])}
    x, b = list(mine.values()), list(base.values())
    vs = versus(sum(x) / 6, 0.5, sum(b) / 6, 0.5, mine, base)
    assert vs["test"] == "paired t-test" and "mcnemar" not in vs
    assert math.isclose(vs["p"], stats.ttest_rel(x, b).pvalue)


def test_items_that_move_together_within_subtasks_get_the_clustered_error():
    # subtask a: the variant loses every item; subtask b: no change
    mine = {("a", i): 0.0 for i in range(4)} | {("b", i): 1.0 for i in range(4)}
    base = {("a", i): 1.0 for i in range(4)} | {("b", i): 1.0 for i in range(4)}
    vs = versus(0.5, 0.2, 1.0, 0.0, mine, base)
    # d: four -1 then four 0; mean -0.5; residual sums -2 and +2: sqrt(8) / 8
    assert vs["stderr_kind"] == "clustered by subtask" and vs["n_clusters"] == 2
    assert math.isclose(vs["stderr"], math.sqrt(8) / 8)
    assert vs["ci_method"] == "normal, clustered by subtask"
    assert vs["test"] == "z-test, clustered by subtask"
    assert math.isclose(vs["p"], 2 * stats.norm.sf(0.5 / (math.sqrt(8) / 8)))
    assert vs["mcnemar"]["baseline_only"] == 4  # still reported


def test_falls_back_to_combined_errors_when_pairing_would_not_reproduce_the_values():
    mine = {("t", i): v for i, v in enumerate([1.0, 1.0, 0.0, 1.0])}
    base = {("t", i): v for i, v in enumerate([1.0, 0.0, 0.0, 1.0])}
    # a reported value that is not the mean of the items (a group averaged by subtask)
    vs = versus(0.7, 0.25, 0.5, 0.3, mine, base)
    assert vs["method"] == "independent" and math.isclose(vs["stderr"], math.hypot(0.25, 0.3))
    assert vs["stderr_kind"] == "independent" and vs["test"] == "z-test, independent errors"
    assert vs["note"].startswith("Not paired: the mean of the item scores is not the reported")
    # items missing on one side
    fewer = dict(list(base.items())[:3])
    vs = versus(0.75, 0.25, 1 / 3, 0.3, mine, fewer)
    assert vs["method"] == "independent"
    assert "baseline 3, this model 4, 3 in both" in vs["note"]
    assert math.isclose(vs["p"], 2 * stats.norm.sf((0.75 - 1 / 3) / math.hypot(0.25, 0.3)))
    vs = versus(0.75, None, 0.5, 0.3, None, None)
    assert vs["method"] == "none" and vs["stderr"] is None and "p" not in vs


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
    vs = s["models"]["new"]["benchmarks"]["t"]["vs_baseline"]["acc"]
    assert vs["method"] == "paired" and vs["p_holm"] == 1.0 and vs["significant"] is False
    assert (
        "| new | 0.7500 ± 0.1000 [0.554, 0.946] | +0.2500 ± 0.2500 [0.000, 0.750] "
        "(paired, n=4) | McNemar exact: 1.000 → 1.000 (flips 0↓ 1↑) | = n.s. |"
    ) in render(s)
    # no samples on disk: the report still shows a difference, with combined errors
    s = add_vs_baseline(summary(), tmp_path / "elsewhere")
    vs = s["models"]["new"]["benchmarks"]["t"]["vs_baseline"]["acc"]
    assert vs["method"] == "independent" and vs["verdict"] == "no significant difference"
    assert "| new | 0.7500 ± 0.1000 [0.554, 0.946] | +0.2500 ± 0.1414 [-0.027, 0.527] " in (
        render(s)
    )
    assert "- new: Not paired: the samples have no per-item score" in render(s)
    for entry in (s["models"]["base"]["benchmarks"]["t"], s["models"]["new"]["benchmarks"]["t"]):
        entry["metrics"]["acc"]["stderr"] = 0.05
    s = add_vs_baseline(s, tmp_path / "elsewhere")
    assert "z-test, independent errors: <0.001 → <0.001 | ▲ better |" in render(s)
    # a failed baseline job: nothing to compare with
    s = add_vs_baseline(summary("failed"), tmp_path)
    assert "vs_baseline" not in s["models"]["new"]["benchmarks"]["t"]


def test_holm_runs_across_every_comparison_and_knows_which_way_is_better(tmp_path):
    def bench(value: float, stderr: float, up: bool = True) -> dict:
        metric = {"value": value, "stderr": stderr, "higher_is_better": up}
        return {"status": "done", "metrics": {"m": metric}}

    s = {
        "run_id": "r",
        "status": "done",
        "baseline": "base",
        "models": {
            "base": {"benchmarks": {"x": bench(10, 0.1, False), "y": bench(0.5, 0.01)}},
            "a": {"benchmarks": {"x": bench(10.5, 0.1, False), "y": bench(0.52, 0.01)}},
        },
    }
    add_vs_baseline(s, tmp_path)
    x = s["models"]["a"]["benchmarks"]["x"]["vs_baseline"]["m"]
    y = s["models"]["a"]["benchmarks"]["y"]["vs_baseline"]["m"]
    # y: z = 0.02 / 0.01414 = 1.41, p = 0.157 alone; Holm doubles the smaller of two p
    assert math.isclose(y["p_holm"], min(1.0, max(2 * x["p"], y["p"])))
    assert math.isclose(x["p_holm"], 2 * x["p"])
    assert x["significant"] and x["verdict"] == "worse"  # a higher perplexity is worse
    assert not y["significant"] and y["verdict"] == "no significant difference"
