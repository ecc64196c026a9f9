"""ggufbench audit verify|export DB: check and dump the gateway's audit log."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer
from rich.markup import escape

from ggufbench.cli._common import console
from ggufbench.errors import ConfigError, GgufbenchError

_KEY_ENV_HELP = (
    "env var with the deployment's commitment key as 64 hex digits "
    "(default: the key file beside the log, DB.commitment-key)"
)


class NoSuchCommitment(GgufbenchError):
    """No audit row carries the commitment a client showed."""

    exit_code = 1


def _commitment_hex(text: str | None) -> str | None:
    if text is None:
        return None
    value = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ConfigError(
            f"--commitment {text} is not a commitment; give the 64 hex digits of "
            "thinking_commitment from the response"
        )
    return value


def _export_to_file(db: Path, output: Path, wanted: str | None) -> int:
    """Export into ``output`` through a temporary file, so a failed export leaves nothing."""
    import tempfile

    from ggufbench.gateway import export as export_log

    if output.is_dir():
        raise ConfigError(f"--output {output} is a folder; give a file name such as audit.jsonl")
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"--output {output}: the folder {folder} does not exist; create it")
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=folder)
    try:
        with open(fd, "w", encoding="utf-8") as out:
            count = export_log(db, out, wanted)
        Path(tmp).replace(output)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return count


def register(app: typer.Typer) -> None:
    audit = typer.Typer(help="Check or export the gateway's audit log.", no_args_is_help=True)

    @audit.command()
    def verify(
        db: Path = typer.Argument(..., help="the file given to serve --audit-db"),
        head: str | None = typer.Option(
            None, help="a head hash recorded earlier; it must still be in the chain"
        ),
        commitment_key_env: str | None = typer.Option(
            None, "--commitment-key-env", help=_KEY_ENV_HELP
        ),
    ) -> None:
        """Check that the log is intact: triggers, sequence, hash chain and commitments."""
        from ggufbench.gateway import key_from_env
        from ggufbench.gateway import verify as verify_log

        key = key_from_env(commitment_key_env) if commitment_key_env else None
        report = verify_log(db, head=head, key=key)
        message = (
            f"[green]ok[/] {escape(str(db))}: {report.rows} rows intact, "
            f"{report.commitments} commitments checked, head {report.head}"
        )
        console().print(message, soft_wrap=True)

    @audit.command()
    def export(
        db: Path = typer.Argument(..., help="the file given to serve --audit-db"),
        output: Path | None = typer.Option(
            None, "--output", "-o", help="JSONL file (default: stdout)"
        ),
        commitment: str | None = typer.Option(
            None, "--commitment", help="only the row with this thinking_commitment (64 hex)"
        ),
    ) -> None:
        """Write every audit row (or the one a client's commitment names) as one JSON line."""
        from ggufbench.gateway import export as export_log

        wanted = _commitment_hex(commitment)
        if output is None:
            count = export_log(db, sys.stdout, wanted)
        else:
            count = _export_to_file(db, output, wanted)
            console().print(f"{count} rows written to {output}", markup=False)
        if wanted is not None and count == 0:
            raise NoSuchCommitment(f"no row of the audit log {db} has the commitment {wanted}")

    app.add_typer(audit, name="audit")
