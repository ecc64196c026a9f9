"""ggufbench compare RUN_A RUN_B [...] [--baseline RUN:ALIAS] [--out DIR]"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer

from ggufbench.cli._common import console


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        runs: list[Path] = typer.Argument(..., help="two or more run directories"),
        baseline: str | None = typer.Option(
            None,
            "--baseline",
            help="RUN:ALIAS, the model the others are compared with "
            "(default: the first run's baseline)",
        ),
        out: Path | None = typer.Option(
            None, "--out", help="folder for the reports (default: ./compare-DATE-TIME)"
        ),
    ) -> None:
        """Compare models across runs on the items they share: summary.json, report.md and
        report.html in a folder of their own."""
        from rich.markup import escape

        from ggufbench.errors import ConfigError
        from ggufbench.report import compare_runs, print_summary, write_report_files
        from ggufbench.rundir import write_json

        target = out or Path(f"compare-{dt.datetime.now():%Y%m%d-%H%M%S}")
        if target.exists() and not target.is_dir():
            raise ConfigError(f"--out {target} is a file; give a folder for the reports")
        if any(target.resolve() == run.resolve() for run in runs):
            raise ConfigError(f"--out {target} is one of the runs; give a folder of its own")
        comparison = compare_runs(runs, baseline)
        target.mkdir(parents=True, exist_ok=True)
        write_json(target / "summary.json", comparison.summary)
        write_report_files(target, comparison.summary, runs[0], comparison.runs)
        shown = console()
        for note in comparison.notes:
            shown.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        print_summary(shown, target)
        raise typer.Exit(comparison.exit_code)
