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
        from ggufbench.errors import ConfigError
        from ggufbench.ledger import Ledger
        from ggufbench.report import add_vs_baseline, render, write_summary
        from ggufbench.rundir import RunDir

        run = RunDir(run_dir)
        status = run.meta().get("status", "unknown")
        if status == "running" and not run.is_live():
            status = "interrupted"
        ledger = Ledger(run.ledger)
        summary = write_summary(run, ledger, status)
        ledger.close()
        if baseline:
            if baseline not in summary["models"]:
                known = ", ".join(summary["models"])
                raise ConfigError(
                    f"--baseline {baseline} is not a model of this run; use one of {known}"
                )
            summary["baseline"] = baseline
            add_vs_baseline(summary, run.path)
        text = render(summary)
        (run.path / "report.md").write_text(text, encoding="utf-8")
        console().print(text, markup=False, highlight=False)
