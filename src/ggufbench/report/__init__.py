"""Run results: summary.json, report.md and report.html."""

from __future__ import annotations

from pathlib import Path

from ggufbench.ledger import Ledger
from ggufbench.report._markdown import render
from ggufbench.report._paired import add_vs_baseline
from ggufbench.report._summary import build_summary, write_summary
from ggufbench.rundir import RunDir


def write_reports(run: RunDir, ledger: Ledger, status: str, baseline: str | None = None) -> Path:
    """Write summary.json and report.md with one baseline (the suite's unless given);
    return the report's path."""
    summary = write_summary(run, ledger, status, baseline)
    path = run.path / "report.md"
    path.write_text(render(summary), encoding="utf-8")
    return path


__all__ = ["add_vs_baseline", "build_summary", "render", "write_reports", "write_summary"]
