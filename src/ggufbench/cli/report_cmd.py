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
        """Rebuild summary.json, report.md and report.html from the run directory, and
        print the summary table."""
        from ggufbench.ledger import Ledger
        from ggufbench.report import current_status, print_summary, write_reports
        from ggufbench.rundir import RunDir

        run = RunDir(run_dir)
        status = current_status(run)
        ledger = Ledger(run.ledger)
        try:
            write_reports(run, ledger, status, baseline)
        finally:
            ledger.close()
        print_summary(console(), run.path)
