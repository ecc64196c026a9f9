"""ggufbench check SUITE.yaml"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ggufbench.cli._common import console, load_suite


def register(app: typer.Typer) -> None:
    @app.command()
    def check(suite: Path = typer.Argument(..., help="the suite file")) -> None:
        """Check a suite before running it: files, tasks, datasets, memory."""
        from ggufbench.orchestrate import preflight

        spec = load_suite(suite)
        out = console()
        report = preflight(spec, out)
        for alias, info in report.models.items():
            detail = info.get("quant") or info.get("base_url")
            out.print(f"[green]ok[/] {alias}: {escape(str(detail))}")
        out.print(f"[green]ok[/] {len(spec.models)} model(s), {len(spec.benchmarks)} benchmark(s)")
