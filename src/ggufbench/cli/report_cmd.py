"""ggufbench report RUN_DIR [--baseline ALIAS]"""

from __future__ import annotations

from pathlib import Path

import typer

from ggufbench.cli._common import console


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        run_dir: Path = typer.Argument(..., help="a run directory"),
        baseline: str | None = typer.Option(None, "--baseline", help="compare with this alias"),
    ) -> None:
        """Rebuild summary.json and report.md from the ledger and print the report."""
        from ggufbench.ledger import Ledger
        from ggufbench.report import write_reports
        from ggufbench.rundir import RunDir

        run = RunDir(run_dir)
        status = run.meta().get("status", "unknown")
        if status == "running" and not run.is_live():
            status = "interrupted"
        ledger = Ledger(run.ledger)
        try:
            path = write_reports(run, ledger, status, baseline)
        finally:
            ledger.close()
        console().print(path.read_text("utf-8"), markup=False, highlight=False)
