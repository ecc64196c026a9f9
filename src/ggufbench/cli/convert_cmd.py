"""ggufbench convert OLD.json: the legacy shape as the equivalent YAML suite."""

from __future__ import annotations

from pathlib import Path

import typer

from ggufbench.cli._common import load_suite


def register(app: typer.Typer) -> None:
    @app.command()
    def convert(
        legacy: Path = typer.Argument(..., help='a file in the {"gguf_models": [...]} shape'),
    ) -> None:
        """Print the YAML suite that a legacy JSON file stands for, with comments."""
        from ggufbench.config import read_suite_file
        from ggufbench.errors import ConfigError
        from ggufbench.legacy import is_legacy, legacy_yaml, read_legacy

        data = read_suite_file(legacy)
        if not is_legacy(data):
            raise ConfigError(
                f"{legacy} has no gguf_models key, so it is not in the legacy shape; "
                "run it as it is"
            )
        load_suite(legacy)  # every check a suite passes; ignored keys are warned about
        typer.echo(legacy_yaml(read_legacy(data), legacy.name), nl=False)
