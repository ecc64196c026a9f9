"""ggufbench demo: the bundled suite on bundled models and data."""

from __future__ import annotations

from pathlib import Path

import typer

from ggufbench.cli._common import console


def demo_suite_text(output_root: Path) -> str:
    """The bundled suite with this machine's model paths filled in."""
    from ggufbench.benchmarks.elyza_data import demo_dataset_path
    from ggufbench.data import demo_tasks_path
    from ggufbench.testmodels import derived_path, gemma_path, smollm2_path

    out = console()
    with out.status("preparing the demo models (made once, then cached)"):
        smollm2 = smollm2_path()
        paths = {
            "smollm2": smollm2,
            "smollm2_q2_k": derived_path(smollm2, "Q2_K"),
            "gemma": gemma_path(),
            "tasks": demo_tasks_path(),
            "elyza_tasks": demo_dataset_path(),
            "elyza_judge": smollm2,
        }
    template = (Path(__file__).parent.parent / "data" / "demo_suite.yaml").read_text("utf-8")
    for key, value in paths.items():
        template = template.replace("{" + key + "}", str(value))
    return template.replace("output_root: runs", f"output_root: {output_root}")


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        output_root: Path = typer.Option(Path("runs"), help="where the run directory goes"),
        fresh: bool = typer.Option(
            False, "--fresh", help="start a new run even if one is unfinished"
        ),
        limit: int | None = typer.Option(
            None, "--limit", min=1, help="items per task (fidelity: chunks)"
        ),
    ) -> None:
        """Run the bundled demo suite: two real models, a derived variant, small tasks,
        and the variant's fidelity to the baseline."""
        from ggufbench.config import apply_overrides, load_suite
        from ggufbench.orchestrate import run_suite

        output_root = output_root.resolve()
        output_root.mkdir(parents=True, exist_ok=True)
        # In a folder of its own: every entry of output_root is read as a run.
        suite_file = output_root / "demo-suite" / "demo-suite.yaml"
        suite_file.parent.mkdir(exist_ok=True)
        suite_file.write_text(demo_suite_text(output_root), encoding="utf-8")
        console().print(f"demo suite written to {suite_file}")
        suite = apply_overrides(load_suite(suite_file), limit=limit)
        raise typer.Exit(run_suite(suite, console(), fresh=fresh))
