"""ggufbench: benchmark and compare GGUF models, resumable and exact."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
