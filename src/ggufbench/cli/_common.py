"""Small helpers shared by the command modules."""

from __future__ import annotations

from rich.console import Console


def console() -> Console:
    return Console(highlight=False)


def split_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]
