"""Small helpers shared by the command modules."""

from __future__ import annotations

import warnings
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from ggufbench.config import Suite


class Executor(str, Enum):
    """Where jobs run: execution.executor, overridden by --executor."""

    local = "local"
    ray = "ray"


EXECUTOR_OPTION = typer.Option(
    None, "--executor", help="where jobs run: local processes, or a Ray cluster"
)
ADDRESS_OPTION = typer.Option(
    None, "--address", help="the Ray cluster: auto, host:port or ray://host:10001"
)


def console() -> Console:
    return Console(highlight=False)


def split_list(value: str | None) -> list[str] | None:
    """A comma-separated option as a list; None when the option is not given."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def load_suite(path: Path) -> Suite:
    """Read a suite file; each key it ignores is printed as a warning on stderr."""
    from ggufbench import config
    from ggufbench.errors import SuiteWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SuiteWarning)
        suite = config.load_suite(path)
    for item in caught:
        if issubclass(item.category, SuiteWarning):
            warn(str(item.message))
        else:  # not ours: shown as Python shows it
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return suite


def warn(message: str) -> None:
    """One sentence on stderr, beside the CLI's errors."""
    from ggufbench.cli._app import err

    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
