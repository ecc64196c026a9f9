"""ggufbench audit verify|export DB: check and dump the gateway's audit log."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ggufbench.cli._common import console


def register(app: typer.Typer) -> None:
    audit = typer.Typer(help="Check or export the gateway's audit log.", no_args_is_help=True)

    @audit.command()
    def verify(
        db: Path = typer.Argument(..., help="the file given to serve --audit-db"),
        head: str | None = typer.Option(
            None, help="a head hash recorded earlier; it must still be in the chain"
        ),
    ) -> None:
        """Check that the log is intact: append-only triggers, sequence and hash chain."""
        from ggufbench.gateway import verify as verify_log

        report = verify_log(db, head=head)
        message = f"[green]ok[/] {db}: {report.rows} rows intact, head {report.head}"
        console().print(message, soft_wrap=True)

    @audit.command()
    def export(
        db: Path = typer.Argument(..., help="the file given to serve --audit-db"),
        output: Path | None = typer.Option(
            None, "--output", "-o", help="JSONL file (default: stdout)"
        ),
    ) -> None:
        """Write every audit row as one JSON line."""
        from ggufbench.gateway import export as export_log

        if output is None:
            export_log(db, sys.stdout)
            return
        with output.open("w", encoding="utf-8") as out:
            count = export_log(db, out)
        console().print(f"{count} rows written to {output}")

    app.add_typer(audit, name="audit")
