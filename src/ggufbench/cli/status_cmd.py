"""ggufbench status RUN_DIR [--json]"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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
        run_id, run_status = escape(str(state["run_id"])), escape(str(state["status"]))
        out.print(f"run {run_id}: [bold]{run_status}[/] ({live})")
        table = Table("job", "status", "attempts", "progress", "rate", "where", "error")
        for job in state["jobs"]:
            progress = f"{job['done']}/{job['total']}" if job["total"] else "–"
            error = (job["error"] or "")[:80]
            where = " ".join(str(job.get(k) or "") for k in ("host", "device")).strip()
            rate = f"{job['rate']:.1f}/s" if job.get("rate") is not None else "–"
            cells = (job["id"], job["status"], str(job["attempts"]), progress, rate, where, error)
            table.add_row(*(Text(cell) for cell in cells))
        out.print(table)
