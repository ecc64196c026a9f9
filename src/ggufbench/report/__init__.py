"""Run results: summary.json, report.md and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ggufbench.ledger import Ledger
from ggufbench.report._compare import Comparison, compare_runs
from ggufbench.report._html import render_html
from ggufbench.report._markdown import render
from ggufbench.report._paired import add_vs_baseline
from ggufbench.report._summary import build_summary, current_status, write_summary
from ggufbench.report._terminal import print_summary, terminal_table
from ggufbench.rundir import RunDir


def write_report_files(
    out: Path, summary: dict[str, Any], run_dir: Path, runs: list[dict[str, Any]]
) -> Path:
    """Write report.md and report.html into ``out``; return report.md's path.

    ``run_dir`` holds the samples of models that do not name their own run
    directory; ``runs`` are the run.json of every run the summary draws on.
    """
    path = out / "report.md"
    path.write_text(render(summary), encoding="utf-8")
    html = render_html(summary, run_dir, runs)
    (out / "report.html").write_text(html, encoding="utf-8")
    return path


def write_reports(run: RunDir, ledger: Ledger, status: str, baseline: str | None = None) -> Path:
    """Write summary.json, report.md and report.html with one baseline (the suite's
    unless given); return report.md's path (report.html is beside it)."""
    summary = write_summary(run, ledger, status, baseline)
    return write_report_files(run.path, summary, run.path, [run.meta()])


__all__ = [
    "Comparison",
    "add_vs_baseline",
    "build_summary",
    "compare_runs",
    "current_status",
    "print_summary",
    "render",
    "render_html",
    "terminal_table",
    "write_report_files",
    "write_reports",
    "write_summary",
]
