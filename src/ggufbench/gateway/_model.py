"""What the gateway needs from a model: a stream of text pieces, then a finish.

Two implementations: :class:`~ggufbench.gateway._upstream.UpstreamModel` (an
OpenAI-compatible server) and :class:`~ggufbench.gateway._local.LocalModel`
(a GGUF file in this process). Errors are raised as :class:`ModelFailed` or
:class:`ModelTimeout`, whose messages never carry model output.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from ggufbench.errors import BackendError, BackendTimeout


class ModelFailed(BackendError):
    """The model could not answer (the gateway answers 502)."""


class ModelTimeout(BackendTimeout):
    """The model took longer than allowed (the gateway answers 504)."""


@dataclass(frozen=True)
class GenParams:
    """One generation: chat messages as (role, content) pairs and sampling bounds."""

    messages: tuple[tuple[str, str], ...]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None


@dataclass(frozen=True)
class Finish:
    """How a generation ended: ``length`` when the token limit stopped it."""

    reason: Literal["stop", "length"]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ModelClient(Protocol):
    """A model behind the gateway."""

    identity: str  # audited: "sha256:<file hash> <file name>" or "<base url> <model>"
    name: str  # the name shown by GET /v1/models
    max_parallel: int | None  # generations it can run at once (None: no limit of its own)

    def stream(self, params: GenParams) -> AsyncIterator[str | Finish]:
        """Yield text pieces as generated, then exactly one :class:`Finish`."""
        ...

    async def aclose(self) -> None: ...
