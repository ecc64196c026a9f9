"""ggufbench run SUITE.yaml"""

from __future__ import annotations

from pathlib import Path

import typer

from ggufbench.cli._common import (
    ADDRESS_OPTION,
    EXECUTOR_OPTION,
    Executor,
    console,
    load_suite,
    split_list,
)


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        suite: Path = typer.Argument(..., help="the suite file (.yaml or .json)"),
        fresh: bool = typer.Option(
            False, "--fresh", help="start a new run even if one is unfinished"
        ),
        models: str | None = typer.Option(
            None, "--models", help="only these aliases, comma-separated"
        ),
        benchmarks: str | None = typer.Option(None, "--benchmarks", help="only these tasks"),
        limit: float | None = typer.Option(None, "--limit", help="items per task (or a fraction)"),
        executor: Executor | None = EXECUTOR_OPTION,
        address: str | None = ADDRESS_OPTION,
    ) -> None:
        """Run a suite; an unfinished run of the same suite is resumed."""
        from ggufbench.config import apply_overrides
        from ggufbench.orchestrate import run_suite

        spec = apply_overrides(
            load_suite(suite),
            split_list(models),
            split_list(benchmarks),
            limit,
            executor=executor.value if executor else None,
            address=address,
        )
        raise typer.Exit(run_suite(spec, console(), fresh=fresh))
