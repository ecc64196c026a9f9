"""Run results: summary.json and report.md."""

from __future__ import annotations

from pathlib import Path

from ggufbench.ledger import Ledger
from ggufbench.report._markdown import render
from ggufbench.report._paired import add_vs_baseline
from ggufbench.report._summary import build_summary, write_summary
from ggufbench.rundir import RunDir


def write_reports(run: RunDir, ledger: Ledger, status: str) -> Path:
    """Write summary.json and report.md; return the report's path."""
    summary = write_summary(run, ledger, status)
    path = run.path / "report.md"
    path.write_text(render(summary), encoding="utf-8")
    return path


__all__ = ["add_vs_baseline", "build_summary", "render", "write_reports", "write_summary"]
