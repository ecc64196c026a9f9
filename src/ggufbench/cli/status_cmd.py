"""ggufbench status RUN_DIR [--json]"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ggufbench.cli._common import console


def register(app: typer.Typer) -> None:
    @app.command()
    def status(
        run_dir: Path = typer.Argument(..., help="a run directory"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """Show a run's progress, live or stopped."""
        from ggufbench.rundir import RunDir
        from ggufbench.status import read_status

        state = read_status(RunDir(run_dir))
        if as_json:
            typer.echo(json.dumps(state, indent=2))
            return
        out = console()
        live = "driven by a live process" if state["live"] else "no process drives it"
        out.print(f"run {state['run_id']}: [bold]{state['status']}[/] ({live})")
        table = Table("job", "status", "attempts", "progress", "error")
        for job in state["jobs"]:
            progress = f"{job['done']}/{job['total']}" if job["total"] else "–"
            table.add_row(
                job["id"], job["status"], str(job["attempts"]), progress, (job["error"] or "")[:80]
            )
        out.print(table)
