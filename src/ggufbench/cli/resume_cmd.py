"""ggufbench resume RUN_DIR"""

from __future__ import annotations

from pathlib import Path

import typer

from ggufbench.cli._common import console


def register(app: typer.Typer) -> None:
    @app.command()
    def resume(run_dir: Path = typer.Argument(..., help="a run directory")) -> None:
        """Continue a run: nothing that finished is computed again."""
        from ggufbench.orchestrate import resume_run

        raise typer.Exit(resume_run(run_dir, console()))
