"""ggufbench inspect MODEL.gguf [--json]"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ggufbench.cli._common import console

# Files larger than this show a spinner while their sha256 is computed.
_SLOW_HASH_BYTES = 1 << 30


def register(app: typer.Typer) -> None:
    @app.command()
    def inspect(
        model: Path = typer.Argument(..., help="a .gguf model file"),
        as_json: bool = typer.Option(False, "--json", help="print the metadata as JSON"),
        chat_template: bool = typer.Option(
            False, "--chat-template", help="also print the chat template text"
        ),
        sha256: bool = typer.Option(
            True, "--sha256/--no-sha256", help="compute the file's sha256 (cached per file)"
        ),
    ) -> None:
        """Show a GGUF model's architecture, size, quantization, context and sha256."""
        from ggufbench.gguf_file import sha256_of, validate

        info = validate(model)
        digest = None
        if sha256:
            slow = info.size_bytes > _SLOW_HASH_BYTES
            spinner = Console(stderr=True).status(f"computing the sha256 of {model.name}")
            with spinner if slow else contextlib.nullcontext():
                digest = sha256_of(model)
        data = info.to_dict(include_chat_template=chat_template)
        data["sha256"] = digest
        if as_json:
            typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
            return
        out = console()
        out.print(_table(data))
        if chat_template and info.chat_template:
            out.print("\n[bold]chat template[/]")
            out.print(info.chat_template, markup=False)


def _table(data: dict[str, Any]) -> Table:
    # Text, not markup: a file name or a model's name may hold [brackets].
    table = Table(title=Text(str(data["path"])), show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [
        ("architecture", data["architecture"]),
        ("name", data["name"] or "-"),
        ("parameters", f"{_human(data['n_params'], 1000, _COUNT)} ({data['n_params']:,})"),
        ("quantization", data["quant"]),
        ("bits per weight", f"{data['bits_per_weight']:.2f}"),
        ("trained context", _count(data["context_length"])),
        ("layers / heads / kv heads", _dims(data, "n_layer", "n_head", "n_head_kv")),
        ("embedding / head dim k, v", _dims(data, "n_embd", "head_dim_k", "head_dim_v")),
        ("vocabulary", _count(data["vocab_size"])),
        ("sliding window", _count(data["sliding_window"])),
        ("add BOS token", {True: "yes", False: "no", None: "-"}[data["add_bos_token"]]),
        ("chat template", "yes" if data["has_chat_template"] else "no"),
        ("size", f"{_human(data['size_bytes'], 1024, _BYTES)} ({data['size_bytes']:,} bytes)"),
        ("sha256", data["sha256"] or "-"),
    ]
    if data["n_shards"] > 1:
        rows.insert(-2, ("shards", str(data["n_shards"])))
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


_COUNT = ("", "K", "M", "B", "T")
_BYTES = ("bytes", "KiB", "MiB", "GiB", "TiB")


def _human(value: int, base: int, units: tuple[str, ...]) -> str:
    """1234567 -> "1.2 M" (base 1000) or "1.2 MiB" (base 1024)."""
    amount, index = float(value), 0
    while amount >= base and index < len(units) - 1:
        amount, index = amount / base, index + 1
    return f"{amount:.1f} {units[index]}" if index else f"{value} {units[0]}".rstrip()


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _dims(data: dict[str, Any], *keys: str) -> str:
    return " / ".join(_count(data[key]) for key in keys)
