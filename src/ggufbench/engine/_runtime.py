"""One GGUF model and one llama.cpp context, through llama-cpp-python's low-level API.

The runtime owns the native objects (model, context, batch) and offers the few
operations the scoring and generation code need: decode a batch with logits
only at chosen rows, drop positions from a sequence, and copy a sequence's KV
state out and back in. It holds one context at a time and swaps it when the
layout changes: one stream of ``n_ctx`` cells for scoring, several streams for
batched generation. Every context is made the same way (no flash attention,
full-size sliding-window cache, f16 KV), so a layout change never changes an
answer.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ggufbench.engine._threads import ThreadChooser
from ggufbench.errors import BackendError

__all__ = ["Runtime"]

# llama.cpp allocates KV cells in multiples of this.
CELL_QUANTUM = 256


def default_threads() -> int:
    """Half the logical CPUs, at least one: what llama-cpp-python picks."""
    return max(1, (os.cpu_count() or 2) // 2)


class Runtime:
    """A model loaded by llama.cpp and its current context."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int,
        n_batch: int,
        n_threads: int | None,
        n_gpu_layers: int,
    ) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self._lib = llama_cpp
        self.path = path
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        try:
            self.model = LlamaModel(path_model=str(path), params=params, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            from ggufbench.resources import load_error

            raise load_error(path, exc, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers) from exc
        self.n_ctx = max(CELL_QUANTUM, -(-n_ctx // CELL_QUANTUM) * CELL_QUANTUM)
        self.n_batch = n_batch
        self.n_threads = n_threads or default_threads()
        self.vocab = self.model.vocab
        self.n_vocab = self.model.n_vocab()
        self.add_bos = bool(self.model.add_bos_token())
        self.bos = self.model.token_bos()
        self.eos = self.model.token_eos()
        self.metadata: dict[str, str] = self.model.metadata()
        self._ctx: Any = None
        self._mem: Any = None
        self._layout: tuple[int, int] | None = None
        self._batch: Any = None
        self._batch_seqs: list[int] = []
        self._pieces: dict[int, bytes] = {}
        self._chooser = ThreadChooser(self.n_threads)
        self._forced_threads: int | None = None
        self._threads = 0
        self.decoded_tokens = 0

    # -- lifetime --------------------------------------------------------------
    def close(self) -> None:
        self._free_context()
        self.model.close()

    def _free_context(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
            self._ctx = None
            self._layout = None

    def use(self, streams: int, cells: int, *, threads: int | None = None) -> None:
        """Make the context hold ``streams`` sequences of ``cells`` KV cells each.

        One stream is the scoring layout; several streams (one per sequence,
        never shared) are the generation layout. Every stream starts empty.
        ``threads`` overrides the thread count for this context (it never
        changes a number; see docs/engine.md).
        """
        cells = max(CELL_QUANTUM, -(-cells // CELL_QUANTUM) * CELL_QUANTUM)
        self._forced_threads = threads
        threads = threads or self.n_threads
        if self._layout == (streams, cells):
            self.clear()
            self._set_threads(threads)
            return
        from llama_cpp._utils import suppress_stdout_stderr

        self._free_context()
        lib = self._lib
        params = lib.llama_context_default_params()
        params.n_ctx = streams * cells
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = streams
        params.kv_unified = False
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.swa_full = True
        params.n_threads = threads
        params.n_threads_batch = threads
        params.n_outputs_max = 0
        params.n_outputs_max_per_seq = 0
        params.no_perf = True
        with suppress_stdout_stderr(disable=False):  # llama.cpp's notes on the layout
            ctx = lib.llama_init_from_model(self.model.model, params)
        if not ctx:
            raise BackendError(
                f"llama.cpp could not make a context of {streams} x {cells} cells for "
                f"{self.path.name}; lower n_ctx"
            )
        self._ctx = ctx
        self._threads = threads
        self._mem = lib.llama_get_memory(ctx)
        self._layout = (streams, cells)
        self._batch = lib.llama_batch_init(self.n_batch, 0, 1)
        self._batch_seqs = [-1] * self.n_batch

    @property
    def streams(self) -> int:
        return self._layout[0] if self._layout else 0

    @property
    def cells(self) -> int:
        return self._layout[1] if self._layout else 0

    # -- decoding --------------------------------------------------------------
    def decode(
        self,
        tokens: Sequence[int],
        positions: Sequence[int],
        seqs: Sequence[int],
        outputs: Sequence[int],
    ) -> np.ndarray:
        """Decode one micro-batch; return the logits of the rows in ``outputs``.

        ``tokens``, ``positions`` and ``seqs`` give one row each; ``outputs`` are
        row indices in ascending order. The array is a view into llama.cpp's
        buffer, valid until the next decode.
        """
        n = len(tokens)
        if n == 0 or n > self.n_batch:
            raise ValueError(f"a micro-batch holds 1 to {self.n_batch} rows, not {n}")
        batch = self._batch
        batch.n_tokens = n
        tok = np.ctypeslib.as_array(batch.token, shape=(self.n_batch,))
        pos = np.ctypeslib.as_array(batch.pos, shape=(self.n_batch,))
        nseq = np.ctypeslib.as_array(batch.n_seq_id, shape=(self.n_batch,))
        want = np.ctypeslib.as_array(batch.logits, shape=(self.n_batch,))
        tok[:n] = tokens
        pos[:n] = positions
        nseq[:n] = 1
        want[:n] = 0
        want[np.asarray(outputs, dtype=np.intp)] = 1
        known = self._batch_seqs
        for i in range(n):
            if known[i] != seqs[i]:
                batch.seq_id[i][0] = seqs[i]
                known[i] = seqs[i]
        threads = self._forced_threads or self._chooser.pick(n)
        self._set_threads(threads)
        start = time.perf_counter()
        rc = self._lib.llama_decode(self._ctx, batch)
        if rc != 0:
            raise BackendError(
                f"llama_decode failed with code {rc} on {self.path.name} "
                f"({n} tokens at positions {positions[0]}..{positions[-1]})"
            )
        self.decoded_tokens += n
        if not outputs:
            self._chooser.observe(n, threads, time.perf_counter() - start)
            return np.empty((0, self.n_vocab), dtype=np.float32)
        ptr = self._lib.llama_get_logits(self._ctx)  # waits for the computation
        self._chooser.observe(n, threads, time.perf_counter() - start)
        return np.ctypeslib.as_array(ptr, shape=(len(outputs), self.n_vocab))

    def _set_threads(self, threads: int) -> None:
        if threads != self._threads:
            self._lib.llama_set_n_threads(self._ctx, threads, threads)
            self._threads = threads

    def clear(self) -> None:
        self._lib.llama_memory_clear(self._mem, True)

    def trim(self, seq: int, start: int) -> None:
        """Forget the positions of ``seq`` from ``start`` on (all of them for 0)."""
        if not self._lib.llama_memory_seq_rm(self._mem, seq, start, -1):
            raise BackendError(f"llama.cpp could not drop positions {start}.. of sequence {seq}")

    def save(self, seq: int) -> bytes:
        """The KV state of ``seq`` (its cells, in position order)."""
        size = self._lib.llama_state_seq_get_size(self._ctx, seq)
        buf = (ctypes.c_uint8 * size)()
        written = self._lib.llama_state_seq_get_data(self._ctx, buf, size, seq)
        return ctypes.string_at(buf, written)  # one copy; slicing the array goes int by int

    def load(self, seq: int, state: bytes) -> None:
        """Put a state from :meth:`save` into the empty sequence ``seq``."""
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if self._lib.llama_state_seq_set_data(self._ctx, buf, len(state), seq) == 0:
            raise BackendError(f"llama.cpp could not restore a saved prefix into sequence {seq}")

    def move(self, src: int, dst: int) -> None:
        """Move the KV state of sequence ``src`` into the empty sequence ``dst``.

        The bytes are copied as they are, so nothing computed later changes.
        """
        state = self.save(src)
        self.trim(dst, 0)
        self.load(dst, state)
        self.trim(src, 0)

    # -- tokens ----------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return list(self.model.tokenize(text.encode("utf-8"), add_bos, True))

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for in generated text (special tokens: none)."""
        found = self._pieces.get(token)
        if found is None:
            buf = ctypes.create_string_buffer(256)
            n = self._lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            found = buf.raw[: max(n, 0)]
            self._pieces[token] = found
        return found

    def is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))

    def token_text(self, token: int) -> str:
        return self.model.token_get_text(token) if token >= 0 else ""
