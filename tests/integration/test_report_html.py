"""report.html in a real browser, report --baseline, and compare, on real runs of two
SmolLM2 variants (the shipped Q4_1 file and a Q2_K file made by llama.cpp's quantizer).

The browser is Debian's headless Chromium driven by Playwright, which uses the
installed browser and downloads nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ggufbench, suite_text
from ggufbench.testmodels import derived_path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TASKS = ["demo_hellaswag", "demo_mmlu", "demo_gsm8k_cot"]


def chromium() -> Path:
    """Debian's Chromium; installed here when missing and allowed, else a clear failure."""
    if not CHROMIUM.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env, capture_output=True)
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        subprocess.run(install, check=False, env=env, capture_output=True)
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's Chromium with 'apt-get install chromium' "
            "(as root) to run the browser test of report.html"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def two_variants(tmp_path_factory, smollm2, tasks_dir) -> Path:
    """A finished run of SmolLM2 Q4_1 (baseline) and its Q2_K derivative, with fidelity."""
    root = tmp_path_factory.mktemp("report")
    suite = root / "suite.yaml"
    models = [("smol", smollm2), ("smol_q2k", derived_path(smollm2, "Q2_K"))]
    fidelity = "  - fidelity: {n_ctx: 256, chunks: 2}\n"
    text = suite_text(models, TASKS, tasks_dir, root / "runs", limit=6, extra=fidelity)
    suite.write_text(text.replace("  - alias: smol\n", "  - alias: smol\n    baseline: true\n"))
    done = ggufbench("run", str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


def scores_by_item(run_dir: Path, alias: str, bench: str, metric: str) -> dict[str, float]:
    """{"task|doc_id": score} of one metric, read straight from a samples file."""
    out = {}
    for line in (run_dir / "samples" / alias / f"{bench}.jsonl").read_text().splitlines():
        row = json.loads(line)
        for name, value in row["scores"].items():
            label = name if row["filter"] == "none" else f"{name},{row['filter']}"
            if label == metric:
                out[f"{row['task']}|{row['doc_id']}"] = value
    return out


def shown_keys(page) -> set[str]:
    """The item keys the explorer shows, over every page."""
    keys: set[str] = set()
    while True:
        keys |= set(
            page.eval_on_selector_all(
                "#explorer-table tbody tr.item", "rows => rows.map(r => r.dataset.key)"
            )
        )
        if page.is_disabled("#explorer-next"):
            return keys
        page.click("#explorer-next")


def test_report_html_in_a_real_browser(two_variants):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    run_dir = two_variants
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium()), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((run_dir / "report.html").as_uri())
        page.wait_for_selector("body[data-explorer=ready]", timeout=20_000)

        models = page.eval_on_selector_all(
            "#summary-table tbody tr", "rows => rows.map(r => r.dataset.model)"
        )
        assert models == ["smol", "smol_q2k"]
        assert page.locator("#plots img").count() >= 3  # scores, size, speed
        fidelity = page.eval_on_selector_all(
            "#fidelity-table tbody tr", "rows => rows.map(r => r.dataset.model)"
        )
        assert fidelity == ["smol", "smol_q2k"]
        plot = page.locator("#fidelity-plot img")
        assert plot.is_visible() and plot.evaluate("img => img.naturalWidth") > 0
        page.screenshot(path=str(run_dir / "report-page.png"), full_page=True)

        for bench in TASKS:
            page.select_option("#explorer-task", bench)
            metric = page.input_value("#explorer-metric")
            base = scores_by_item(run_dir, "smol", bench, metric)
            variant = scores_by_item(run_dir, "smol_q2k", bench, metric)
            assert base and base.keys() == variant.keys()
            assert shown_keys(page) == set(base)  # no filter: every item
            page.check("#filter-disagree")
            differ = {k for k in base if base[k] != variant[k]}
            assert shown_keys(page) == differ, (bench, metric)
            page.locator("#explorer").screenshot(path=str(run_dir / f"explorer-{bench}.png"))
            page.uncheck("#filter-disagree")
        browser.close()
    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_report_with_another_baseline_rewrites_summary_and_both_reports(two_variants, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(two_variants, run_dir)
    done = ggufbench("report", str(run_dir), "--baseline", "smol_q2k")
    assert done.returncode == 0, done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["baseline"] == "smol_q2k"
    assert "vs_baseline" in summary["models"]["smol"]["benchmarks"]["demo_hellaswag"]
    assert "vs_baseline" not in summary["models"]["smol_q2k"]["benchmarks"]["demo_hellaswag"]
    assert "Baseline: **smol_q2k**" in (run_dir / "report.md").read_text()
    assert "Baseline: <strong>smol_q2k</strong>" in (run_dir / "report.html").read_text()
    assert "summary.json" in done.stdout and "report.html" in done.stdout


def test_compare_pairs_shared_items_and_refuses_a_task_defined_differently(
    two_variants, tmp_path, smollm2, tasks_dir
):
    # last week's run: the Q2_K file on fewer items, and mmlu with another number of shots
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        suite_text([("q2k", derived_path(smollm2, "Q2_K"))], ["demo_hellaswag"], tasks_dir,
                   tmp_path / "runs", limit=4)
        + f"  - lm_eval: {{tasks: [demo_mmlu], limit: 2, num_fewshot: 1, "
        f"include_path: {tasks_dir}}}\n"
    )  # fmt: skip
    done = ggufbench("run", str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    (other,) = (tmp_path / "runs").iterdir()
    out = tmp_path / "cmp"
    run_a = two_variants.name
    done = ggufbench(
        "compare", str(two_variants), str(other), "--baseline", f"{run_a}:smol", "--out", str(out)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stdout.split())
    assert f"demo_hellaswag: compared on the 4 items every run has ({run_a} 6, {other.name} 4)" in (
        said
    )
    assert f"demo_mmlu is not compared between {run_a} and {other.name}: it is defined " in said
    assert "number of shots" in said
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == f"{run_a}:smol"
    variant = summary["models"][f"{other.name}:q2k"]["benchmarks"]
    assert variant["demo_mmlu"]["status"] == "not compared"
    vs = variant["demo_hellaswag"]["vs_baseline"]["acc"]
    assert vs["method"] == "paired" and vs["n"] == 4
    base = scores_by_item(two_variants, "smol", "demo_hellaswag", "acc")
    mine = scores_by_item(other, "q2k", "demo_hellaswag", "acc")
    assert vs["delta"] == pytest.approx(sum(mine[k] - base[k] for k in mine) / 4)
    assert (out / "report.md").is_file() and (out / "report.html").is_file()

    bad = ggufbench("compare", str(two_variants), str(other), "--baseline", "nope:smol")
    assert bad.returncode == 2 and "is not a model of these runs" in bad.stderr
