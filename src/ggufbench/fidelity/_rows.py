"""Per-row reductions of logits: what the baseline keeps, and what a variant measures.

Pure numpy on a block of logit rows, so the unit tests run them on synthetic logits.
Each row goes through one scratch buffer (it stays in the CPU cache), as in
engine/_loglik.py: ``exp`` in float32 as llama.cpp's ``expf``, every sum in float64
as perplexity.cpp accumulates its ``sum_exp``.

KL divergence from the compact record. With S the base's top-k tokens, T the rest,
P_T and Q_T the base's and the variant's probability of T, p~ and q~ the two
distributions renormalised over T::

    KLD(P||Q) = sum_S p_i log(p_i/q_i) + P_T log(P_T/Q_T) + P_T KLD(p~ || q~)

The first two terms are exact, and by the log-sum inequality they are a lower
bound of the KLD. The last is estimated from the record's m draws x_j from p~:
with r_j = q~(x_j) / p~(x_j), ``mean((r_j - 1) - log r_j)`` is unbiased (E[r] = 1),
never negative, and of small variance when p and q are close; each token also
gets the variance of its estimate, ``P_T^2 var(terms) / m``, from which the
figures report the sampling error of the mean KLD (docs/fidelity.md: the
measured error against the full vocabulary).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ggufbench.fidelity._record import BaselineRecord

__all__ = ["TokenValues", "baseline_rows", "top_k", "variant_rows"]

F64 = np.float64
# Below this share of the total, a tail mass taken as (total - top) has lost too many
# digits to cancellation, and it is summed directly instead.
_DIRECT_BELOW = 1e-9
# How far below the maximum the first search for the top k starts (nats); widened x4
# until at least k logits qualify.
_FIRST_SPAN = 16.0
# Entries per block of the tail's cumulative sum.
_BLOCK = 64


def top_k(row: npt.NDArray[np.float32], k: int, span: float = _FIRST_SPAN) -> npt.NDArray[np.int64]:
    """The ids of the k largest logits, largest first, lower id first among equals.

    Exact for any ``span``: every logit at or above a threshold no higher than the
    k-th largest is a candidate, and the candidates are sorted. The threshold keeps
    the work to the few thousand logits near the top (``np.argpartition`` over a
    262k vocabulary costs several times the softmax).
    """
    k = min(k, len(row))
    peak = float(row.max())
    while True:
        candidates = np.flatnonzero(row >= peak - span)
        if len(candidates) >= k or not math.isfinite(span):
            break
        span = span * 4 if span < 1e6 else math.inf
    values = row[candidates]
    if len(candidates) > 2 * k:  # keep those at or above the k-th largest value
        kth = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= kth
        candidates, values = candidates[keep], values[keep]
    order = np.lexsort((candidates, -values))
    return candidates[order[:k]]


def _softmax_parts(
    row: npt.NDArray[np.float32], buf: npt.NDArray[np.float32]
) -> tuple[int, float, float]:
    """(arg max, log-sum-exp, sum of exp) of a row; ``buf`` holds exp(row - max) after."""
    best = int(row.argmax())
    np.subtract(row, row[best], out=buf)
    np.exp(buf, out=buf)
    total = float(buf.sum(dtype=F64))
    return best, float(row[best]) + math.log(total), total


def _log_rest(
    row: npt.NDArray[np.float32],
    buf: npt.NDArray[np.float32],
    ids: npt.NDArray[np.int64],
    total: float,
) -> float:
    """log of the probability outside ``ids``; ``buf`` holds exp(row - max) and is changed."""
    rest = total - float(buf[ids].sum(dtype=F64))
    if rest <= _DIRECT_BELOW * total:
        buf[ids] = 0
        rest = float(buf.sum(dtype=F64))
    if rest > 0:
        return math.log(rest / total)
    # Every exp outside ``ids`` underflowed in float32: the log-sum-exp in float64.
    outside = np.delete(row, ids).astype(F64)
    if outside.size == 0 or not np.isfinite(outside.max()):
        return -math.inf
    peak = float(outside.max())
    return peak + math.log(float(np.exp(outside - peak).sum())) - float(row.max()) - math.log(total)


def _uniform(seed: bytes, row: int) -> float:
    """A number in [0, 1) fixed by the chunk's seed and the row (sha256: no RNG version drift)."""
    digest = hashlib.sha256(seed + row.to_bytes(4, "little")).digest()
    return int.from_bytes(digest[:7], "little") / 2.0**56


def _tail_sample(
    buf: npt.NDArray[np.float32], blocks: npt.NDArray[np.float32], m: int, u: float
) -> npt.NDArray[np.int64]:
    """m tokens drawn from the tail in proportion to their probability (systematic sampling).

    ``buf`` holds exp(row - max) with the top k set to 0; ``blocks`` is the same memory
    seen as rows of ``_BLOCK`` entries (zero padded). Draw j lands at ``(j + u) / m`` of
    the tail's cumulative mass, so each stands for 1/m of the tail. The cumulative sum
    is taken over block totals, then inside the few blocks hit: a float64 cumsum over the
    whole vocabulary would cost ten times the softmax.
    """
    totals = blocks.sum(axis=1, dtype=F64)
    ends = np.cumsum(totals)
    mass = float(ends[-1])
    if mass <= 0:
        return np.zeros(m, dtype=np.int64)
    points = (np.arange(m, dtype=F64) + u) * (mass / m)
    block = np.minimum(np.searchsorted(ends, points, side="right"), len(ends) - 1)
    hit, where = np.unique(block, return_inverse=True)
    inside = np.cumsum(blocks[hit], axis=1, dtype=F64)[where]
    rest = points - (ends[block] - totals[block])
    offset = np.minimum((inside <= rest[:, None]).sum(axis=1), _BLOCK - 1)
    ids = block * _BLOCK + offset
    # A draw that rounding put on a zero entry moves to the block's last nonzero entry.
    for j in np.flatnonzero(buf[np.minimum(ids, len(buf) - 1)] == 0):
        ids[j] = block[j] * _BLOCK + int(np.flatnonzero(blocks[block[j]])[-1])
    return ids


def baseline_rows(
    logits: npt.NDArray[np.float32],
    targets: npt.NDArray[np.int32],
    k: int,
    m: int,
    *,
    seed: bytes = b"",
    offset: int = 0,
) -> BaselineRecord:
    """The compact record of a block of rows; row i predicts ``targets[i]``.

    ``seed`` and ``offset`` (the block's first row in the chunk) fix the tail draws,
    so the same chunk always gives the same record.
    """
    n, n_vocab = logits.shape
    k = min(k, n_vocab)
    top_ids = np.empty((n, k), dtype=np.int32)
    top_logp = np.empty((n, k), dtype=np.float32)
    tail_ids = np.empty((n, m), dtype=np.int32)
    tail_logp = np.empty((n, m), dtype=np.float32)
    tail = np.empty(n, dtype=F64)
    target = np.empty(n, dtype=F64)
    argmax = np.empty(n, dtype=np.int32)
    blocks = np.zeros((-(-n_vocab // _BLOCK), _BLOCK), dtype=np.float32)
    buf = blocks.reshape(-1)[:n_vocab]
    span = _FIRST_SPAN
    for i, row in enumerate(logits):
        best, lse, total = _softmax_parts(row, buf)
        ids = top_k(row, k, span)
        # The next row's search starts a little wider than this row's top k spread.
        span = 1.25 * float(row[ids[0]] - row[ids[-1]]) + 0.5
        top_ids[i] = ids
        top_logp[i] = row[ids].astype(F64) - lse
        target[i] = float(row[targets[i]]) - lse
        argmax[i] = best
        tail[i] = _log_rest(row, buf, ids, total)
        buf[ids] = 0
        drawn = _tail_sample(buf, blocks, m, _uniform(seed, offset + i))
        tail_ids[i] = drawn
        tail_logp[i] = row[drawn].astype(F64) - lse
    return BaselineRecord(
        n_vocab,
        np.asarray(targets, dtype=np.int32),
        top_ids,
        top_logp,
        tail_ids,
        tail_logp,
        tail,
        target,
        argmax,
    )


@dataclass(frozen=True)
class TokenValues:
    """Per scored token of a variant, in float64: what the statistics are made of."""

    nll: npt.NDArray[np.float64]
    nll_base: npt.NDArray[np.float64]
    kld: npt.NDArray[np.float64]
    same_top: npt.NDArray[np.bool_]
    tail_mass: npt.NDArray[np.float64]
    tail_var: npt.NDArray[np.float64]  # the variance of each token's tail estimate

    @classmethod
    def concat(cls, parts: list[TokenValues]) -> TokenValues:
        """The values of consecutive blocks of rows as one."""
        names = ("nll", "nll_base", "kld", "same_top", "tail_mass", "tail_var")
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in names))

    @property
    def p_diff(self) -> npt.NDArray[np.float64]:
        """Δp: the variant's probability of the actual token minus the base's."""
        return np.exp(-self.nll) - np.exp(-self.nll_base)


def variant_rows(
    logits: npt.NDArray[np.float32], base: BaselineRecord, offset: int = 0
) -> TokenValues:
    """Compare a block of a variant's rows with rows ``offset..`` of the base's record."""
    n, n_vocab = logits.shape
    if n_vocab != base.n_vocab:
        raise ValueError(f"a {n_vocab}-token vocabulary against a {base.n_vocab}-token baseline")
    nll = np.empty(n, dtype=F64)
    kld = np.empty(n, dtype=F64)
    same = np.empty(n, dtype=np.bool_)
    buf = np.empty(n_vocab, dtype=np.float32)
    rows = slice(offset, offset + n)
    targets, argmax = base.targets[rows], base.argmax[rows]
    top_ids, top_logp, tail = base.top_ids[rows], base.top_logp[rows].astype(F64), base.tail[rows]
    tail_ids, tail_logp = base.tail_ids[rows], base.tail_logp[rows].astype(F64)
    tail_var = np.empty(n, dtype=F64)
    for i, row in enumerate(logits):
        best, lse, total = _softmax_parts(row, buf)
        nll[i] = lse - float(row[targets[i]])
        same[i] = best == argmax[i]
        ids = top_ids[i]
        logp = top_logp[i]
        logq = row[ids].astype(F64) - lse
        p = np.exp(logp)
        value = math.fsum(np.where(p > 0, p * (logp - logq), 0.0))
        log_pt = float(tail[i])
        spread = 0.0
        if log_pt > -math.inf:
            log_qt = _log_rest(row, buf, ids, total)
            # r = q~/p~ at the draws; (r - 1) - log r >= 0 has mean KLD(P|T || Q|T)
            log_r = (row[tail_ids[i]].astype(F64) - lse - log_qt) - (tail_logp[i] - log_pt)
            terms = np.expm1(log_r) - log_r
            mass = math.exp(log_pt)
            value += mass * (log_pt - log_qt + math.fsum(terms.tolist()) / len(terms))
            spread = mass * mass * float(terms.var(ddof=1)) / len(terms) if len(terms) > 1 else 0.0
        kld[i] = value
        tail_var[i] = spread
    return TokenValues(nll, -base.target[rows].copy(), kld, same, np.exp(tail), tail_var)
