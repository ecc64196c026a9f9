"""ggufbench resume RUN_DIR"""

from __future__ import annotations

from pathlib import Path

import typer

from ggufbench.cli._common import ADDRESS_OPTION, EXECUTOR_OPTION, Executor, console


def register(app: typer.Typer) -> None:
    @app.command()
    def resume(
        run_dir: Path = typer.Argument(..., help="a run directory"),
        executor: Executor | None = EXECUTOR_OPTION,
        address: str | None = ADDRESS_OPTION,
    ) -> None:
        """Continue a run: nothing that finished is computed again."""
        from ggufbench.orchestrate import resume_run

        chosen = executor.value if executor else None
        raise typer.Exit(resume_run(run_dir, console(), executor=chosen, address=address))
