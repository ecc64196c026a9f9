"""Fidelity in report.md, report.html and the terminal table, and out of the tests of scores."""

from __future__ import annotations

import base64
import json
import re
import sys

from rich.console import Console

from ggufbench.report import add_vs_baseline, render, render_html, terminal_table
from ggufbench.rundir import samples_file

KLD_PERCENTILES = {"max": 0.9, "99.9": 0.5, "99.0": 0.2, "95.0": 0.1, "90.0": 0.07,
                   "median": 0.02, "10.0": 0.004, "5.0": 0.002, "1.0": 0.0005, "0.1": 0.0001,
                   "min": 0.0}  # fmt: skip
SKIPPED = (
    "gemma is skipped: its tokenizer differs from the baseline base's, so their next-token "
    "distributions cannot be compared token by token"
)


def figure(value: float, stderr: float) -> dict[str, float]:
    return {"value": value, "stderr": stderr}


def fidelity_entry(kld: float) -> dict:
    metrics = {
        "kld": figure(kld, 0.001),
        "same_top_p": figure(0.9123, 0.0051),
        "ppl": figure(21.5, 1.2),
        "ppl_base": figure(20.0, 1.1),
        "ppl_ratio": figure(1.075, 0.004),
        "ln_ppl_ratio": figure(0.0723, 0.0037),
        "delta_p": figure(-0.0123, 0.0011),
        "rms_delta_p": figure(0.0456, 0.0021),
    }
    details = {"baseline": "base", "text": "/data/corpus.txt", "n_ctx": 512, "n_chunks": 4,
               "n_tokens": 1020, "kld_percentiles": KLD_PERCENTILES}  # fmt: skip
    return {"status": "done", "metrics": metrics, "n_samples": 1020, "details": details,
            "requests": {"total": 4, "computed": 4, "from_cache": 0}, "compute_s": 3.0}  # fmt: skip


def summary(tmp_path) -> dict:
    rows = [{"task": "t", "doc_id": i, "filter": "none", "scores": {"acc": a}}
            for i, a in enumerate([1, 0, 1, 1, 0, 1])]  # fmt: skip
    for alias in ("base", "q4"):
        path = samples_file(tmp_path, alias, "t")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    acc = {"status": "done", "metrics": {"acc": figure(4 / 6, 0.21)}}
    base = {"status": "done", "metrics": {"ppl": figure(20.0, 1.1)}, "n_samples": 1020,
            "details": {"baseline": "base", "n_ctx": 512}}  # fmt: skip
    skipped = {"status": "skipped", "metrics": {}, "error": SKIPPED}
    out = {
        "run_id": "r",
        "status": "done",
        "baseline": "base",
        "models": {
            "base": {"quant": "Q8_0", "benchmarks": {"t": dict(acc), "fidelity": base}},
            "q4": {"quant": "Q4_K_M", "benchmarks": {"t": dict(acc),
                                                    "fidelity": fidelity_entry(0.0512)}},
            "q2": {"quant": "Q2_K", "benchmarks": {"fidelity": fidelity_entry(0.3931)}},
            "gemma": {"quant": "Q4_K_M", "benchmarks": {"fidelity": skipped}},
        },
    }  # fmt: skip
    return add_vs_baseline(out, tmp_path)


def test_fidelity_stays_out_of_the_comparisons_and_holms_correction(tmp_path):
    s = summary(tmp_path)
    for model in s["models"].values():
        assert "vs_baseline" not in model["benchmarks"]["fidelity"]
        assert "ci95" not in model["benchmarks"]["fidelity"]["metrics"].get("kld", {})
    vs = s["models"]["q4"]["benchmarks"]["t"]["vs_baseline"]["acc"]
    assert vs["p_holm"] == vs["p"]  # the one test of the report


def test_report_md_has_a_row_of_figures_per_model_and_the_skip_sentence(tmp_path):
    md = render(summary(tmp_path))
    section = md[md.index("## Fidelity") :]
    assert "against the baseline base's on corpus.txt (1020 scored tokens in 4 chunks of 512)" in md
    assert "| base (baseline) | – | – | 20.0000 ± 1.1000 | – | – | – | – | 1020 |" in section
    assert (
        "| q4 | 0.051200 ± 0.001000 | 91.230 ± 0.510 % | 21.5000 ± 1.2000 | 1.075000 ± 0.004000 "
        "| 0.072300 ± 0.003700 | -1.230 ± 0.110 % | 4.560 ± 0.210 % | 1020 |"
    ) in section
    assert "| q2 | 0.000000 | 0.000500 | 0.002000 | 0.004000 | 0.020000 | 0.070000" in section
    assert f"- {SKIPPED}" in section
    assert "fidelity" not in md[: md.index("## Fidelity")].split("## Scores")[1]


def test_report_html_has_the_table_and_a_plot_of_each_kld_distribution(tmp_path, monkeypatch):
    s = summary(tmp_path)
    html = render_html(s, tmp_path, [{"id": "r"}])
    section = html[html.index('<section id="fidelity">') : html.index('<section id="plots">')]
    table = section[section.index('id="fidelity-table"') : section.index("</table>")]
    assert re.findall(r'<tr data-model="([^"]+)"', table) == ["base", "q4", "q2"]
    assert "0.393100 ± 0.001000" in table and "91.230 ± 0.510 %" in table
    assert "gemma is skipped: its tokenizer differs" in section
    png = re.search(r'id="fidelity-plot">\s*<img src="data:image/png;base64,([^"]+)"', section)
    assert png and base64.b64decode(png[1])[:4] == b"\x89PNG"
    summary_table = html[html.index('id="summary-table"') : html.index("</table>")]
    assert "fidelity" not in summary_table
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    html = render_html(s, tmp_path, [{"id": "r"}])
    section = html[html.index('<section id="fidelity">') : html.index('<section id="plots">')]
    assert "Plots need matplotlib" in section and "<img" not in section


def test_the_terminal_table_shows_mean_kld_and_same_top_p(tmp_path):
    console = Console(width=200, record=True)
    console.print(terminal_table(summary(tmp_path)))
    text = console.export_text()
    assert "vs the baseline" in text
    assert "KLD 0.0512 ± 0.0010" in text and "same top p 91.2 ± 0.5 %" in text
    assert "PPL 20.000 ± 1.100" in text and "skipped" in text


def test_a_report_without_fidelity_has_no_fidelity_section(tmp_path):
    s = summary(tmp_path)
    for model in s["models"].values():
        model["benchmarks"].pop("fidelity")
    assert "Fidelity" not in render(s)
    assert 'id="fidelity"' not in render_html(s, tmp_path, [{"id": "r"}])
    console = Console(width=200, record=True)
    console.print(terminal_table(s))
    assert "vs the baseline" not in console.export_text()
