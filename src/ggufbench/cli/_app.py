"""The typer application and the one place user errors become exit codes."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from ggufbench.errors import GgufbenchError

app = typer.Typer(
    name="ggufbench",
    help="Benchmark and compare GGUF models: lm-eval tasks and ELYZA-tasks-100, resumable.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, each with register(app). A module that is not there yet is skipped.
COMMANDS = (
    "run",
    "resume",
    "status",
    "report",
    "compare",
    "check",
    "inspect",
    "demo",
    "convert",
    "serve",
    "audit",
)

err = Console(stderr=True)


def _register() -> None:
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"ggufbench.cli.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name == f"ggufbench.cli.{name}_cmd":
                continue
            raise
        module.register(app)


def fail(exc: GgufbenchError) -> None:
    """Print a user error as one sentence and exit with its code."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise SystemExit(exc.exit_code)


def main() -> None:
    _register()
    try:
        app()
    except GgufbenchError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
