"""Plots of a report, drawn with matplotlib (the ``plots`` extra) at report time."""

from __future__ import annotations

from typing import Any

__all__ = ["plots"]


def plots(summary: dict[str, Any]) -> tuple[list[dict[str, str]], str | None]:
    """([{title, png (base64), alt}], a note when plots cannot be drawn)."""
    return [], None
