"""The ``ggufbench`` command: this file only assembles the commands.

Each command lives in its own module and exposes ``register(app)``.
"""

from __future__ import annotations

from ggufbench.cli._app import main

__all__ = ["main"]
