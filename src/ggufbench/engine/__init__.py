"""The in-process scoring and generation engine over llama.cpp (see docs/engine.md)."""

from __future__ import annotations

from ggufbench.engine._generate import GenDone, GenJob, generate
from ggufbench.engine._loglik import Scored, score
from ggufbench.engine._probe import invariant_width
from ggufbench.engine._runtime import Runtime, default_threads
from ggufbench.engine._segments import newline_shape, segment_ends, segments
from ggufbench.engine._text import TextTail

__all__ = [
    "GenDone",
    "GenJob",
    "Runtime",
    "Scored",
    "TextTail",
    "default_threads",
    "generate",
    "invariant_width",
    "newline_shape",
    "score",
    "segment_ends",
    "segments",
]
