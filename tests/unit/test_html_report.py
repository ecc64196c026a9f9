"""report.html, the plots and the terminal table, from a run directory written here."""

import base64
import gzip
import json
import re
import sys

from rich.console import Console

from ggufbench.report import add_vs_baseline, render, render_html, terminal_table
from ggufbench.report._explorer import (
    ANSWER_CHARS,
    OUTPUT_CHARS,
    PROMPT_CHARS,
    TARGET_CHARS,
    explorer_data,
)
from ggufbench.report._plots import plots
from ggufbench.rundir import samples_file

META = {
    "id": "r1",
    "created": "2026-01-01T00:00:00+00:00",
    "status": "done",
    "environment": {"cpu": "Test CPU", "cores": 2, "lm_eval": "0.4.13", "python": "3.11.7"},
}


def write(run_dir, alias, bench, rows) -> None:
    path = samples_file(run_dir, alias, bench)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def elyza_row(i: int, score, output: str = "answer", **extra) -> dict:
    return {"doc_id": i, "input": f"question {i}", "target": "model answer", "output": output,
            "score": score, "status": "judged" if score else "judge_failed", **extra}  # fmt: skip


def acc_rows(accs: list[float]) -> list[dict]:
    return [
        {
            "task": "t",
            "doc_id": i,
            "filter": "none",
            "target": 0,
            "scores": {"acc": a},
            "resps": [[[-1.0, False]], [[-2.0, False]]],
            "prompt_hash": "x",
        }  # fmt: skip
        for i, a in enumerate(accs)
    ]


def entry(metrics: dict, **extra) -> dict:
    return {"status": "done", "metrics": metrics, "compute_s": 2.0, "gen_tokens": 0,
            "requests": {"total": 8, "computed": 8, "from_cache": 0}, **extra}  # fmt: skip


def make_run(tmp_path) -> dict:
    write(tmp_path, "base", "t", acc_rows([1, 0, 0, 1, 1, 0]))
    write(tmp_path, "new", "t", acc_rows([1, 1, 0, 0, 1, 1]))
    write(tmp_path, "base", "elyza_tasks_100", [elyza_row(i, 3) for i in range(3)])
    withheld = {"thinking": {"sha256": "ab", "length": 5, "withheld_reason": "unclosed section"}}
    write(tmp_path, "new", "elyza_tasks_100", [elyza_row(0, None, None, **withheld)]
          + [elyza_row(i, 4) for i in (1, 2)])  # fmt: skip
    acc = {"value": 0.5, "stderr": 0.2236}
    summary = {
        "run_id": "r1",
        "status": "done",
        "baseline": "base",
        "models": {
            "base": {"quant": "Q8_0", "size_bytes": 200 * 2**20, "benchmarks": {
                "t": entry({"acc": acc}),
                "elyza_tasks_100": entry({"score": {"value": 3.0, "stderr": 0.1}},
                                         distribution={"3": 3}),
            }},
            "new": {"quant": "Q4_K_M", "size_bytes": 110 * 2**20, "benchmarks": {
                "t": entry({"acc": {"value": 4 / 6, "stderr": 0.2108}}),
                "elyza_tasks_100": entry({"score": {"value": 4.0, "stderr": 0.1}},
                                         distribution={"4": 2}),
                "broken": {"status": "failed", "error": "the model file is truncated",
                           "attempts": 3, "metrics": {}},
            }},
        },
    }  # fmt: skip
    return add_vs_baseline(summary, tmp_path)


def unpack(html: str) -> dict:
    payload = re.search(r'<script type="application/octet-stream" id="explorer-data">(.*?)<', html)
    assert payload
    return json.loads(gzip.decompress(base64.b64decode(payload.group(1))))


def test_the_page_is_self_contained_and_has_every_part(tmp_path):
    summary = make_run(tmp_path)
    html = render_html(summary, tmp_path, [META])
    assert "http://" not in html and "https://" not in html and "<link" not in html
    table = html[html.index('id="summary-table"') : html.index("</table>")]
    assert re.findall(r'<tr data-model="([^"]+)"', table) == ["base", "new"]
    assert "Test CPU (2 cores)" in html and "lm-eval 0.4.13" in html
    assert "the model file is truncated" in html  # failed jobs with their reasons
    assert "unclosed section: 1" in html  # withheld outputs counted by reason
    data = unpack(html)
    assert data["models"] == ["base", "new"] and data["baseline"] == "base"
    items = data["tasks"]["t"]["items"]
    assert [i["m"][1]["s"]["acc"] for i in items] == [1, 1, 0, 0, 1, 1]
    first = data["tasks"]["elyza_tasks_100"]["items"][0]
    assert first["p"] == "question 0" and first["m"][1]["w"] == "unclosed section"
    assert "f" in first["m"][1]  # a failed judgement


def test_plots_are_drawn_or_the_page_says_how_to_get_them(tmp_path, monkeypatch):
    summary = make_run(tmp_path)
    figures, note = plots(summary)
    assert note is None and len(figures) == 4  # scores, size, speed, ELYZA
    assert all(base64.b64decode(f["png"])[:4] == b"\x89PNG" for f in figures)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    html = render_html(summary, tmp_path, [META])
    assert "Plots need matplotlib, which is not installed" in html and "<img" not in html
    assert "pip install &#39;ggufbench[plots]&#39;" in html


def test_a_plot_that_fails_is_named_and_the_others_are_drawn(tmp_path):
    summary = make_run(tmp_path)
    summary["models"]["new"]["size_bytes"] = "unknown"  # as a damaged run.json could have it
    figures, note = plots(summary)
    assert len(figures) == 3 and note.startswith("Some plots could not be drawn: size against")


def test_an_item_costs_at_most_the_stated_characters(tmp_path):
    long = "x" * 50_000
    rows = [{"task": "g", "doc_id": 0, "filter": f, "target": long, "scores": {"em": 0},
             "resps": [[long]], "output": [long]} for f in ("strict", "flexible")]  # fmt: skip
    for alias in ("a", "b", "c"):
        write(tmp_path, alias, "g", rows)
    summary = {"baseline": "a", "models": {
        k: {"benchmarks": {"g": entry({"em,strict": {"value": 0.0, "stderr": 0.0}})}}
        for k in ("a", "b", "c")}}  # fmt: skip
    (item,) = explorer_data(summary, tmp_path)["tasks"]["g"]["items"]
    texts = [item["g"]] + [t for m in item["m"] for t in [m["o"], *m["a"].values()]]
    assert len(item["g"]) == TARGET_CHARS and item["m"][0]["o"] == long[: OUTPUT_CHARS - 1] + "…"
    per_item = PROMPT_CHARS + TARGET_CHARS + 3 * (OUTPUT_CHARS + 2 * ANSWER_CHARS)
    assert sum(map(len, texts)) <= per_item
    assert len(json.dumps(item)) <= per_item + 300  # keys, scores and quotes


def test_an_old_run_without_the_new_fields_still_renders(tmp_path):
    summary = {
        "run_id": "old",
        "status": "done",
        "baseline": "a",
        "models": {
            "a": {"benchmarks": {"t": {"status": "done", "metrics": {"acc": {"value": 0.5}}}}},
            "b": {"benchmarks": {"t": {"status": "done", "metrics": {"acc": {"value": 0.6}}}}},
        },
    }
    html = render_html(summary, tmp_path / "nowhere", [{"id": "old"}])
    assert 'data-model="b"' in html
    assert unpack(html)["tasks"] == {}
    assert "| b | 0.6000 | +0.1000 (none) | – | – |" in render(summary)


def test_the_terminal_table_marks_significant_differences(tmp_path):
    summary = make_run(tmp_path)
    vs = summary["models"]["new"]["benchmarks"]["elyza_tasks_100"]["vs_baseline"]["score"]
    # a failed judgement on one side: not paired, the two errors combined
    assert vs["note"].startswith("Not paired: the scored items differ (baseline 3, this model 2")
    assert vs["verdict"] == "better"  # +1 with an error of 0.14
    console = Console(width=200, record=True)
    console.print(terminal_table(summary))
    text = console.export_text()
    assert "▲ +1.0000" in text and "better" in text and "(baseline)" in text
    assert text.count("\n│ base") == 1 and text.count("\n│ new") == 1
