"""A GGUF model in this process as the gateway's model.

The backend's ``stream`` is blocking, so each generation runs in a worker
thread that hands pieces to the event loop. One model context serves one
generation at a time: a lock held by the worker thread, for the whole
generation, makes the next one wait even when the previous request was
cancelled and its thread is still finishing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ggufbench.backends._base import Backend, GenRequest
from ggufbench.errors import GgufbenchError
from ggufbench.gateway._model import Finish, GenParams, ModelFailed

log = logging.getLogger("ggufbench.gateway")


class LocalModel:
    """A :class:`~ggufbench.backends._base.Backend` behind the gateway."""

    max_parallel: int | None = 1

    def __init__(self, backend: Backend, *, identity: str, name: str) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self.identity = identity
        self.name = name

    @classmethod
    def load(
        cls, path: Path, *, n_ctx: int, n_gpu_layers: int, n_threads: int | None, name: str | None
    ) -> LocalModel:
        """Load a GGUF file; a bad file raises :class:`ModelFileError` naming it."""
        from ggufbench.backends.llama_cpp import LlamaCppBackend
        from ggufbench.gguf_file import sha256_of, validate

        validate(path)
        identity = f"sha256:{sha256_of(path)} {path.name}"
        backend = LlamaCppBackend(
            path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, identity=identity
        )
        return cls(backend, identity=identity, name=name or path.stem)

    def _request(self, params: GenParams) -> GenRequest:
        return GenRequest(
            messages=params.messages,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed or 0,
        )

    def _run(self, params: GenParams, put: Callable[[object], None], stop: threading.Event) -> None:
        """Worker thread: generate, hand every piece to ``put``, end with Finish or error."""
        with self._lock:
            try:
                put(self._generate(params, put, stop))
            except GgufbenchError as exc:
                put(ModelFailed(f"the model failed to generate ({type(exc).__name__})"))
            except Exception as exc:  # a crash in native code must not kill the gateway
                log.error("in-process generation failed: %s", type(exc).__name__)
                put(ModelFailed(f"the model failed to generate ({type(exc).__name__})"))

    def _generate(
        self, params: GenParams, put: Callable[[object], None], stop: threading.Event
    ) -> Finish:
        backend = self._backend
        pieces = backend.stream(self._request(params))
        try:
            for piece in pieces:
                if stop.is_set():
                    break
                put(piece)
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        reason = getattr(backend, "last_finish_reason", "stop")
        n_tokens = getattr(backend, "last_n_tokens", None)
        return Finish(
            "length" if reason == "length" else "stop", self._prompt_tokens(params), n_tokens
        )

    def _prompt_tokens(self, params: GenParams) -> int | None:
        tokenize: Any = getattr(self._backend, "tokenize", None)
        if tokenize is None:
            return None
        try:
            prompt = self._backend.apply_chat_template(params.messages)
            return len(tokenize(prompt, add_bos=False))
        except Exception:  # the count is informative only
            return None

    async def stream(self, params: GenParams) -> AsyncIterator[str | Finish]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening
                stop.set()

        worker = loop.run_in_executor(None, self._run, params, put, stop)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
                if isinstance(item, Finish):
                    return
        finally:
            stop.set()
            worker.add_done_callback(lambda f: f.exception())

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            self._backend.close()
