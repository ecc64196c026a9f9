"""How much memory a model needs once loaded by llama.cpp, from its GGUF metadata.

The estimate is an upper bound built from four parts (bytes):

- **weights**: the file size (llama.cpp maps the file; every tensor is used).
- **kv_cache**: f16 keys and values for every cell of every layer::

      n_layer * cells * n_head_kv * (head_dim_k + head_dim_v) * 2

  with ``cells = n_ctx * n_seq``. ``n_head_kv`` is the largest per-layer value
  when the metadata lists one per layer. Sliding-window layers keep the full
  size, as llama.cpp does by default (``swa_full``); with ``swa_full=False``
  and metadata that says which layers slide, those layers hold
  ``min(cells, sliding_window * n_seq + n_ubatch)`` cells.
- **compute**: llama.cpp's graph buffer for one micro-batch of ``n_ubatch``
  tokens, f32. The allocator reuses memory, so the peak is the larger of the
  logits and the attention scores, plus the activations alive beside them::

      4 * n_ubatch * (max(n_vocab, n_head * cells) + 4 * n_ff + 10 * n_embd)

  Measured against llama.cpp's own report (SmolLM2-135M at 2k and 8k context,
  gemma-3-270m at 2k and 8k) this is 0-20% above the real buffer, never below.
- **logits**: the logits kept on the host, f32: one row per sequence, or one
  row per context position with ``logits_all`` (as loglikelihood scoring
  through llama-cpp-python needs), plus llama.cpp's output buffer of
  ``n_ubatch`` rows in that case.

The Python interpreter of the worker process is not included.

An ELYZA job with an in-process judge (``benchmarks/elyza_job.py``) closes its
model before it loads the judge, in the same worker, so the job needs the larger
of the two footprints, never their sum (:func:`with_judge`). That holds when the
judge is the model's own file too: it is loaded a second time, after the first
copy is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ggufbench.gguf_file import GgufInfo

__all__ = ["Footprint", "footprint", "footprint_bytes", "with_judge"]

KV_BYTES = 2  # f16
F32_BYTES = 4


@dataclass(frozen=True)
class Footprint:
    """A model's estimated memory needs, in bytes, part by part."""

    weights: int
    kv_cache: int
    compute: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.logits


def footprint(
    info: GgufInfo,
    n_ctx: int,
    n_seq: int = 1,
    *,
    n_ubatch: int = 512,
    logits_all: bool = False,
    swa_full: bool = True,
) -> Footprint:
    """Estimate the memory for ``n_seq`` sequences of ``n_ctx`` tokens each.

    ``n_ctx <= 0`` means the trained context length, as in llama.cpp.
    """
    if n_ctx <= 0:
        n_ctx = info.context_length or 4096
    n_seq = max(1, n_seq)
    cells = n_ctx * n_seq
    n_ubatch = max(1, min(n_ubatch, cells))
    n_vocab = info.vocab_size or 0
    attention = (info.n_head or 0) * cells
    activations = 4 * (info.n_ff or 0) + 10 * (info.n_embd or 0)
    compute = F32_BYTES * n_ubatch * (max(n_vocab, attention) + activations)
    rows = cells + n_ubatch if logits_all else n_seq
    return Footprint(
        weights=info.size_bytes,
        kv_cache=_kv_cache_bytes(info, cells, n_seq, n_ubatch, swa_full),
        compute=compute,
        logits=F32_BYTES * n_vocab * rows,
    )


def footprint_bytes(info: GgufInfo, n_ctx: int, n_seq: int = 1) -> int:
    """Weights + KV cache + compute buffer + logits, in bytes, with llama.cpp's defaults."""
    return footprint(info, n_ctx, n_seq).total


def with_judge(model: int, judge: int) -> int:
    """An ELYZA job's footprint: its model and its in-process judge are loaded one after
    the other in the job's worker, so only the larger of the two needs to fit."""
    return max(model, judge)


def fidelity_footprint(info: GgufInfo, n_ctx: int, n_batch: int) -> int:
    """A fidelity job's memory: the model with one stream of ``n_ctx`` cells decoded in
    micro-batches of ``n_batch``, llama.cpp's logits of a micro-batch's scored rows
    (``min(n_batch, n_ctx / 2)`` rows of the vocabulary, float32), and the job's scratch
    row and mask of the vocabulary (docs/fidelity.md, bounded disk and memory)."""
    vocab = info.vocab_size or 0
    rows = min(n_batch, n_ctx // 2)
    return footprint(info, n_ctx, n_ubatch=n_batch).total + F32_BYTES * vocab * rows + 5 * vocab


def _kv_cache_bytes(info: GgufInfo, cells: int, n_seq: int, n_ubatch: int, swa_full: bool) -> int:
    if not (info.n_layer and info.n_head_kv and info.head_dim_k and info.head_dim_v):
        return 0  # no attention metadata: a recurrent model, whose state is small
    per_cell = info.n_head_kv * (info.head_dim_k + info.head_dim_v) * KV_BYTES
    n_swa = info.n_swa_layers or 0
    if swa_full or not info.sliding_window or n_swa == 0:
        return info.n_layer * cells * per_cell
    swa_cells = min(cells, info.sliding_window * n_seq + n_ubatch)
    return ((info.n_layer - n_swa) * cells + n_swa * swa_cells) * per_cell
