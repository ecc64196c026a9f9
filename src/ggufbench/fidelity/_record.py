"""The two things a chunk leaves behind, as bytes: the baseline's record and a variant's stats.

Both are written as a short JSON header and raw little-endian arrays, with no
timestamps or padding, so the same numbers always give the same bytes (the
request cache and the resume check compare them). A hand-written layout rather
than ``np.savez``: a zip archive carries dates and is not byte-stable.

Baseline record, per scored token (``8 (k + m) + 24`` bytes):

- ``top_ids``   int32[k]   the base's k most likely tokens, most likely first (ties: lower id)
- ``top_logp``  float32[k] their log-probabilities
- ``tail_ids``  int32[m]   m draws from the other tokens, in proportion to their probability
- ``tail_logp`` float32[m] their log-probabilities
- ``tail``     float64    log of the probability of every other token together
- ``target``   float64    log-probability of the actual next token
- ``argmax``   int32      the base's most likely token (the first of equal maxima)

and the chunk's index and all its ``n_ctx`` tokens (int32; 2 KiB a chunk), so a
variant scores exactly the baseline's tokens, as llama-perplexity's base file does.

Variant stats: the chunk's sums (float64), its count and same-top count, and
every token's KLD and Δp as float32 (8 bytes per scored token), which the
percentiles need.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

__all__ = ["SUMS", "BaselineRecord", "ChunkStats"]

# The sums a chunk contributes; names as perplexity.cpp's kl_divergence_result.
SUMS = (
    "sum_nll",
    "sum_nll2",
    "sum_nll_base",
    "sum_nll_base2",
    "sum_nll_nll_base",
    "sum_kld",
    "sum_kld2",
    "sum_p_diff",
    "sum_p_diff2",
    "sum_p_diff4",
    "sum_tail_mass",
    "sum_tail_var",
)


def _pack(magic: bytes, header: dict[str, Any], arrays: list[np.ndarray]) -> bytes:
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = b"".join(
        np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes() for a in arrays
    )
    return magic + struct.pack("<I", len(head)) + head + body


def _unpack(magic: bytes, data: bytes, what: str) -> tuple[dict[str, Any], memoryview]:
    if not data.startswith(magic):
        raise ValueError(f"not a {what} (wrong magic)")
    (size,) = struct.unpack_from("<I", data, len(magic))
    start = len(magic) + 4
    header: dict[str, Any] = json.loads(data[start : start + size])
    return header, memoryview(data)[start + size :]


def _take(view: memoryview, offset: int, dtype: str, shape: tuple[int, ...]) -> tuple[Any, int]:
    count = int(np.prod(shape))
    array = np.frombuffer(view, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=offset)
    return array.astype(dtype).reshape(shape), offset + array.nbytes


@dataclass(frozen=True, eq=False)
class BaselineRecord:
    """What the baseline's pass keeps of one chunk: enough for every statistic."""

    MAGIC: ClassVar[bytes] = b"GBFIDB1\n"
    _ARRAYS: ClassVar[tuple[str, ...]] = (
        "targets",
        "top_ids",
        "top_logp",
        "tail_ids",
        "tail_logp",
        "tail",
        "target",
        "argmax",
    )

    n_vocab: int
    targets: npt.NDArray[np.int32]
    top_ids: npt.NDArray[np.int32]  # [n, k]
    top_logp: npt.NDArray[np.float32]  # [n, k]
    tail_ids: npt.NDArray[np.int32]  # [n, m]
    tail_logp: npt.NDArray[np.float32]  # [n, m]
    tail: npt.NDArray[np.float64]
    target: npt.NDArray[np.float64]
    argmax: npt.NDArray[np.int32]
    # The chunk's index and all its n_ctx tokens, so a variant scores exactly these.
    chunk: int = 0
    window: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1])

    @property
    def m(self) -> int:
        return int(self.tail_ids.shape[1])

    _DTYPES: ClassVar[dict[str, str]] = {
        "targets": "int32", "top_ids": "int32", "top_logp": "float32", "tail_ids": "int32",
        "tail_logp": "float32", "tail": "float64", "target": "float64", "argmax": "int32",
    }  # fmt: skip

    def __len__(self) -> int:
        return len(self.targets)

    @classmethod
    def concat(cls, parts: list[BaselineRecord]) -> BaselineRecord:
        """The records of consecutive blocks of rows as one."""
        arrays: dict[str, Any] = {
            name: np.concatenate([getattr(p, name) for p in parts]) for name in cls._ARRAYS
        }
        return cls(n_vocab=parts[0].n_vocab, **arrays)

    def to_bytes(self) -> bytes:
        header = {
            "n": len(self), "k": self.k, "m": self.m, "n_vocab": self.n_vocab,
            "chunk": self.chunk, "n_ctx": len(self.window),
        }  # fmt: skip
        arrays = [getattr(self, name) for name in self._ARRAYS] + [self.window]
        return _pack(self.MAGIC, header, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> BaselineRecord:
        header, view = _unpack(cls.MAGIC, data, "fidelity baseline record")
        n, k, m = int(header["n"]), int(header["k"]), int(header["m"])
        shapes = {"top_ids": (n, k), "top_logp": (n, k), "tail_ids": (n, m), "tail_logp": (n, m)}
        arrays, at = {}, 0
        for name in cls._ARRAYS:
            arrays[name], at = _take(view, at, cls._DTYPES[name], shapes.get(name, (n,)))
        window, at = _take(view, at, "int32", (int(header["n_ctx"]),))
        if at != len(view):
            raise ValueError("a fidelity baseline record has trailing bytes")
        chunk, n_vocab = int(header["chunk"]), int(header["n_vocab"])
        return cls(n_vocab=n_vocab, chunk=chunk, window=window, **arrays)


@dataclass(frozen=True, eq=False)
class ChunkStats:
    """One variant chunk's contribution to the figures; :func:`combine` adds them up."""

    MAGIC: ClassVar[bytes] = b"GBFIDV1\n"

    chunk: int
    count: int
    n_same_top: int
    sums: dict[str, float] = field(repr=False)
    kld: npt.NDArray[np.float32] = field(repr=False)
    p_diff: npt.NDArray[np.float32] = field(repr=False)

    def to_bytes(self) -> bytes:
        header = {
            "chunk": self.chunk,
            "count": self.count,
            "n_same_top": self.n_same_top,
            # float.hex: exact and the same text on every platform
            "sums": {name: float(self.sums[name]).hex() for name in SUMS},
        }
        return _pack(self.MAGIC, header, [self.kld, self.p_diff])

    @classmethod
    def from_bytes(cls, data: bytes) -> ChunkStats:
        header, view = _unpack(cls.MAGIC, data, "fidelity chunk result")
        n = int(header["count"])
        kld, at = _take(view, 0, "float32", (n,))
        p_diff, at = _take(view, at, "float32", (n,))
        if at != len(view):
            raise ValueError("a fidelity chunk result has trailing bytes")
        sums = {name: float.fromhex(header["sums"][name]) for name in SUMS}
        return cls(
            int(header["chunk"]),
            n,
            int(header["n_same_top"]),
            sums,
            kld,
            p_diff,
        )
