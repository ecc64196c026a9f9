"""The figures from the chunks' results, with perplexity.cpp's definitions and errors.

Copied from llama.cpp's tools/perplexity/perplexity.cpp (``kl_divergence``):

- ``mean_and_uncertainty(sum, sum2, n)``: mean ``f = sum/n``, error
  ``sqrt((sum2/n - f^2) / (n - 1))``, 0 unless that variance is positive and n > 10;
- ``covariance(a, b, ab, n)``: ``(ab/n - (a/n)(b/n)) / (n - 1)``, 0 for n < 10;
- PPL = exp(mean NLL) with error PPL * error(mean NLL), the same for the base;
  ln(PPL(Q)/PPL(base)) = the difference of the means, error
  ``sqrt(e^2 + e_base^2 - 2 cov)``; the ratio is its exp, error ratio * that error;
  PPL(Q) - PPL(base) has error ``sqrt(u^2 + u_base^2 - 2 PPL PPL_base cov)``;
  the correlation is ``cov / (e * e_base)``;
- KLD and Δp: mean and error as above; RMS Δp = sqrt(mean Δp^2), error
  ``0.5 / RMS * error(mean Δp^2)`` (from the sums of Δp^2 and Δp^4);
- same top p: the share of tokens whose arg max agree, binomial error
  ``sqrt(p (1 - p) / (n - 1))``;
- percentiles of the sorted float32 values: ``p = fraction * (n - 1)`` in float32,
  linear between ``values[int(p)]`` and the next; the median is the middle value, or
  ``0.5f * (a + b)`` of the two middle ones; maximum and minimum the ends.

Errors whose square root would be of a rounding-negative number are 0 here (perplexity.cpp
prints nan). Everything is added with ``math.fsum`` over the chunks and the per-token
values are sorted, so the figures do not depend on the order of the chunks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from ggufbench.fidelity._record import SUMS, BaselineRecord, ChunkStats

__all__ = [
    "KLD_PERCENTILES",
    "P_DIFF_PERCENTILES",
    "baseline_figures",
    "combine",
    "format_figures",
    "percentile",
]

# (label, fraction) as perplexity.cpp prints them, top down.
KLD_PERCENTILES = (
    ("max", 1.0), ("99.9", 0.999), ("99.0", 0.990), ("95.0", 0.950), ("90.0", 0.900),
    ("median", 0.5), ("10.0", 0.100), ("5.0", 0.050), ("1.0", 0.010), ("0.1", 0.001),
    ("min", 0.0),
)  # fmt: skip
P_DIFF_PERCENTILES = (
    ("max", 1.0), ("99.9", 0.999), ("99.0", 0.990), ("95.0", 0.950), ("90.0", 0.900),
    ("75.0", 0.750), ("median", 0.5), ("25.0", 0.250), ("10.0", 0.100), ("5.0", 0.050),
    ("1.0", 0.010), ("0.1", 0.001), ("min", 0.0),
)  # fmt: skip


def mean_and_uncertainty(total: float, total2: float, count: int) -> tuple[float, float]:
    if count < 1:
        return 0.0, 0.0
    f = total / count
    df = total2 / count - f * f
    return f, math.sqrt(df / (count - 1)) if df > 0 and count > 10 else 0.0


def covariance(a: float, b: float, ab: float, count: int) -> float:
    if count < 10:
        return 0.0
    return (ab / count - (a / count) * (b / count)) / (count - 1)


def _sqrt(x: float) -> float:
    return math.sqrt(x) if x > 0 else 0.0


def percentile(values: npt.NDArray[np.float32], fraction: float) -> float:
    """perplexity.cpp's ``percentile`` of sorted float32 values, in float32 arithmetic."""
    if fraction <= 0:
        return float(values[0])
    if fraction >= 1:
        return float(values[-1])
    f32 = np.float32
    p = f32(fraction) * f32(len(values) - 1)
    ip = int(p)
    p = p - f32(ip)
    return float((f32(1) - p) * values[ip] + p * values[min(ip + 1, len(values) - 1)])


def _median(values: npt.NDArray[np.float32]) -> float:
    n = len(values)
    if n % 2:
        return float(values[n // 2])
    return float(np.float32(0.5) * (values[n // 2] + values[n // 2 - 1]))


def _quantiles(
    values: npt.NDArray[np.float32], points: tuple[tuple[str, float], ...]
) -> dict[str, float]:
    return {
        label: _median(values) if label == "median" else percentile(values, fraction)
        for label, fraction in points
    }


def _figure(value: float, stderr: float) -> dict[str, float]:
    return {"value": value, "stderr": stderr}


def combine(chunks: Iterable[ChunkStats]) -> dict[str, Any]:
    """Every figure llama-perplexity prints for a KLD run, from the chunks' results.

    Exactly the same result for the same set of chunks in any order; a chunk given
    twice is an error.
    """
    parts = sorted(chunks, key=lambda c: c.chunk)
    indexes = [c.chunk for c in parts]
    if len(set(indexes)) != len(indexes):
        raise ValueError("a fidelity chunk is given twice")
    if not parts:
        raise ValueError("no fidelity chunk to combine")
    s = {name: math.fsum(c.sums[name] for c in parts) for name in SUMS}
    n = sum(c.count for c in parts)
    kld_values = np.sort(np.concatenate([c.kld for c in parts]))
    p_diff_values = np.sort(np.concatenate([c.p_diff for c in parts]))

    nll, e = mean_and_uncertainty(s["sum_nll"], s["sum_nll2"], n)
    nll_base, e_base = mean_and_uncertainty(s["sum_nll_base"], s["sum_nll_base2"], n)
    cov = covariance(s["sum_nll"], s["sum_nll_base"], s["sum_nll_nll_base"], n)
    ppl, ppl_base = math.exp(nll), math.exp(nll_base)
    ln_ratio, ln_ratio_e = nll - nll_base, _sqrt(e * e + e_base * e_base - 2.0 * cov)
    ratio = math.exp(ln_ratio)
    u, u_base = ppl * e, ppl_base * e_base
    mse, mse_e = mean_and_uncertainty(s["sum_p_diff2"], s["sum_p_diff4"], n)
    rms = math.sqrt(mse)
    same = sum(c.n_same_top for c in parts) / n
    return {
        "n_tokens": n,
        "n_chunks": len(parts),
        "ppl": _figure(ppl, u),
        "ppl_base": _figure(ppl_base, u_base),
        "ppl_correlation": cov / (e * e_base) if e * e_base > 0 else 0.0,
        "ln_ppl_ratio": _figure(ln_ratio, ln_ratio_e),
        "ppl_ratio": _figure(ratio, ratio * ln_ratio_e),
        "ppl_diff": _figure(
            ppl - ppl_base, _sqrt(u * u + u_base * u_base - 2.0 * ppl * ppl_base * cov)
        ),
        "kld": _figure(*mean_and_uncertainty(s["sum_kld"], s["sum_kld2"], n)),
        "kld_percentiles": _quantiles(kld_values, KLD_PERCENTILES),
        "delta_p": _figure(*mean_and_uncertainty(s["sum_p_diff"], s["sum_p_diff2"], n)),
        "delta_p_percentiles": _quantiles(p_diff_values, P_DIFF_PERCENTILES),
        "rms_delta_p": _figure(rms, 0.5 / rms * mse_e if rms > 0 else 0.0),
        "same_top_p": _figure(same, _sqrt(same * (1.0 - same) / (n - 1)) if n > 1 else 0.0),
        "tail_mass": s["sum_tail_mass"] / n,
        "kld_sampling_stderr": math.sqrt(s["sum_tail_var"]) / n,
    }


def baseline_figures(records: Iterable[BaselineRecord]) -> dict[str, Any]:
    """The baseline's own perplexity from its records: exactly the ``ppl_base`` that
    :func:`combine` gives every variant measured on the same chunks.

    Each chunk's sums are taken as a variant's pass takes them (``chunk_stats``), then
    added with ``math.fsum``, so the order of the records does not matter. A generator
    of records keeps one in memory at a time.
    """
    sums, sums2, n, seen = [], [], 0, set()
    for record in records:
        if record.chunk in seen:
            raise ValueError("a fidelity chunk is given twice")
        seen.add(record.chunk)
        nll = -np.asarray(record.target, dtype=np.float64)
        sums.append(math.fsum(nll.tolist()))
        sums2.append(math.fsum((nll * nll).tolist()))
        n += len(nll)
    if not seen:
        raise ValueError("no fidelity chunk to combine")
    mean, e = mean_and_uncertainty(math.fsum(sums), math.fsum(sums2), n)
    ppl = math.exp(mean)
    return {"n_tokens": n, "n_chunks": len(seen), "ppl": _figure(ppl, ppl * e)}


def format_figures(f: dict[str, Any]) -> str:
    """The figures in llama-perplexity's layout and units (Δp and same top p in %)."""

    def pm(key: str, scale: float = 1.0, spec: str = "10.6f") -> str:
        return f"{scale * f[key]['value']:{spec}} ± {scale * f[key]['stderr']:{spec}}"

    lines = [
        f"Mean PPL(Q)                   : {pm('ppl')}",
        f"Mean PPL(base)                : {pm('ppl_base')}",
        f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * f['ppl_correlation']:6.2f}%",
        f"Mean ln(PPL(Q)/PPL(base))     : {pm('ln_ppl_ratio')}",
        f"Mean PPL(Q)/PPL(base)         : {pm('ppl_ratio')}",
        f"Mean PPL(Q)-PPL(base)         : {pm('ppl_diff')}",
        f"Mean    KLD: {pm('kld')}",
    ]
    lines += [f"{label:>7} KLD: {v:10.6f}" for label, v in f["kld_percentiles"].items()]
    lines.append(f"Mean    Δp: {pm('delta_p', 100, '6.3f')} %")
    lines += [f"{label:>7} Δp: {100 * v:6.3f}%" for label, v in f["delta_p_percentiles"].items()]
    lines.append(f"RMS Δp    : {pm('rms_delta_p', 100, '6.3f')} %")
    lines.append(f"Same top p: {pm('same_top_p', 100, '6.3f')} %")
    lines.append(
        f"({f['n_tokens']} tokens in {f['n_chunks']} chunks; mean tail mass {f['tail_mass']:.2e})"
    )
    return "\n".join(lines)
