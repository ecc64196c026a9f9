"""Numbers and verdicts as text, the same in report.md, report.html and the terminal."""

from __future__ import annotations

from typing import Any

from ggufbench.plan import FIDELITY

PRIMARY = (
    "acc_norm",
    "acc",
    "exact_match,strict-match",
    "exact_match,flexible-extract",
    "exact_match",
    "score",
    "word_perplexity",
    "f1",
)

# verdict -> (symbol, short word); the symbol carries the meaning without colour
MARKERS = {
    "better": ("▲", "better"),
    "worse": ("▼", "worse"),
    "no significant difference": ("=", "n.s."),
    "not tested": ("–", "not tested"),
}


def benchmark_metrics(summary: dict[str, Any]) -> dict[str, list[str]]:
    """Every (benchmark, metric) that some model reports, the primary metric first; fidelity,
    whose figures are against the baseline already, has views of its own."""
    found: dict[str, list[str]] = {}
    for model in summary["models"].values():
        for bench, entry in model["benchmarks"].items():
            if bench == FIDELITY:
                continue
            names = found.setdefault(bench, [])
            for m in entry.get("metrics", {}):
                if m not in names:
                    names.append(m)
    for names in found.values():
        names.sort(key=lambda m: (PRIMARY.index(m) if m in PRIMARY else len(PRIMARY), m))
    return found


def primary_metrics(summary: dict[str, Any]) -> dict[str, str]:
    """{benchmark: the metric shown in the summary tables}."""
    return {b: names[0] for b, names in benchmark_metrics(summary).items() if names}


def num(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def interval(ci: list[float] | None, digits: int = 3) -> str:
    return "" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def pvalue(p: float | None) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def marker(vs: dict[str, Any] | None) -> tuple[str, str]:
    """(symbol, word) for a comparison's verdict."""
    verdict = (vs or {}).get("verdict") or "not tested"
    return MARKERS.get(verdict, MARKERS["not tested"])


def error_kind(vs: dict[str, Any]) -> str:
    """Which error a difference carries, in a few words."""
    kind = vs.get("stderr_kind") or vs.get("method") or "none"
    n = f", n={vs['n']}" if vs.get("n") else ""
    return f"{kind}{n}"


def size_mib(n: int | None) -> str:
    return "–" if not n else f"{n / 2**20:.0f} MiB"
