"""Plots of a report, drawn with matplotlib (the ``plots`` extra) at report time.

Figures are made with matplotlib's object API on the Agg canvas (no pyplot, no
global state) and embedded as base64 PNG. Models keep one colour and one marker
in every plot, from the Okabe-Ito palette, which colour-blind readers can tell
apart; the marker tells them apart without colour.
"""

from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING, Any

from ggufbench.report._format import primary_metrics
from ggufbench.report._paired import higher_is_better

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["fidelity_plot", "plots"]

MISSING = (
    "Plots need matplotlib, which is not installed: run pip install 'ggufbench[plots]' "
    "(or pip install matplotlib), then ggufbench report RUN_DIR to draw them."
)
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*"]
ELYZA = "elyza_tasks_100"
# 1..5 from orange (bad) through grey to blue (good): a colour-blind-safe diverging scale
SCORE_COLOURS = ["#B35806", "#F1A340", "#D9D9D9", "#92C5DE", "#2166AC"]
DPI = 100


def plots(summary: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """([{title, alt, png (base64), width}], a sentence when plots cannot be drawn)."""
    try:
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        return [], MISSING
    style = {alias: i for i, alias in enumerate(summary["models"])}
    figures, failed = [], []
    for name, draw in (
        ("scores", lambda: _scores(summary, style)),
        ("size against score", lambda: _size_vs_score(summary, style)),
        ("speed", lambda: _speed(summary, style)),
        ("ELYZA scores", lambda: _elyza(summary)),
    ):
        try:
            drawn = draw()
        except Exception as exc:  # noqa: BLE001 - a plot must never cost the rest of the report
            failed.append(f"{name} ({type(exc).__name__}: {exc})")
            continue
        if drawn is not None:
            figures.append(drawn)
    note = f"Some plots could not be drawn: {'; '.join(failed)}." if failed else None
    return figures, note


def fidelity_plot(
    summary: dict[str, Any], compared: list[tuple[str, dict[str, Any]]]
) -> tuple[dict[str, Any] | None, str | None]:
    """The KLD distribution of each model compared with the baseline (from its percentiles),
    and a sentence when it cannot be drawn."""
    if not compared:
        return None, None
    try:
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        return None, MISSING
    style = {alias: i for i, alias in enumerate(summary["models"])}
    try:
        return _kld_spread(compared, style), None
    except Exception as exc:  # noqa: BLE001 - a plot must never cost the rest of the report
        return None, f"The fidelity plot could not be drawn ({type(exc).__name__}: {exc})."


def _kld_spread(
    compared: list[tuple[str, dict[str, Any]]], style: dict[str, int]
) -> dict[str, Any]:
    """Per model: box 10-90%, whiskers 1-99%, a bar at the median, its marker at the mean and
    a cross at the maximum, on a log scale (a KLD of 0 is drawn at the scale's floor)."""
    spreads = [
        (alias, e["details"]["kld_percentiles"], e["metrics"]["kld"]["value"])
        for alias, e in compared
    ]
    positive = [v for _, q, mean in spreads for v in (*q.values(), mean) if v > 0]
    floor = min(positive, default=1e-6) / 2

    def at(value: float) -> float:
        return max(value, floor)

    fig = _figure(8.5, 1.0 + 0.5 * len(spreads))
    ax = fig.subplots()
    for y, (alias, q, mean) in enumerate(spreads):
        colour, marker = COLOURS[style[alias] % 8], MARKERS[style[alias] % 8]
        ax.plot([at(q["1.0"]), at(q["99.0"])], [y, y], color=colour, linewidth=1.2)
        ax.barh(y, at(q["90.0"]) - at(q["10.0"]), left=at(q["10.0"]), height=0.5,
                color=colour, alpha=0.35, edgecolor=colour)  # fmt: skip
        ax.plot([at(q["median"])] * 2, [y - 0.25, y + 0.25], color="#000000", linewidth=2)
        ax.plot(at(mean), y, marker=marker, color=colour, markeredgecolor="#000000", markersize=8)
        ax.plot(at(q["max"]), y, marker="x", color=colour, markersize=7)
    ax.set_xscale("log")
    ax.set_yticks(range(len(spreads)), [a for a, _, _ in spreads])
    ax.set_ylim(len(spreads) - 0.5, -0.5)
    ax.set_xlabel("KL divergence from the baseline per scored token (nats, log scale)", fontsize=9)
    ax.grid(axis="x", alpha=0.3, which="both")
    return _png(
        fig,
        "Each model's KL divergence from the baseline per scored token: box from the 10th to "
        "the 90th percentile, whiskers from the 1st to the 99th, black bar at the median, the "
        "model's marker at the mean, × at the maximum.",
        "distribution of each model's per-token KL divergence from the baseline",
    )


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure, title: str, alt: str) -> dict[str, Any]:
    """The figure as a base64 PNG of 128 colours: a third of the bytes, the same to the eye."""
    from PIL import Image  # matplotlib's own dependency

    drawn = io.BytesIO()
    fig.savefig(drawn, format="png", dpi=DPI)
    image = Image.open(drawn).convert("RGB").quantize(128, method=Image.Quantize.MEDIANCUT)
    small = io.BytesIO()
    image.save(small, format="PNG", optimize=True)
    return {
        "title": title,
        "alt": alt,
        "width": int(fig.get_figwidth() * DPI),
        "png": base64.b64encode(small.getvalue()).decode("ascii"),
    }


def _grid(n: int, per_row: int = 3) -> tuple[int, int]:
    cols = min(n, per_row)
    return math.ceil(n / cols), cols


def _done_metric(summary: dict[str, Any], alias: str, bench: str, metric: str) -> dict | None:
    entry = summary["models"][alias]["benchmarks"].get(bench) or {}
    m = entry.get("metrics", {}).get(metric)
    return m if entry.get("status") == "done" and m and m.get("value") is not None else None


def _scores(summary: dict[str, Any], style: dict[str, int]) -> dict[str, Any] | None:
    """Per task, each model's score with its 95% interval; the baseline as a dashed line."""
    primary = primary_metrics(summary)
    if not primary:
        return None
    aliases = list(summary["models"])
    rows, cols = _grid(len(primary))
    fig = _figure(4.2 * cols, 0.6 + (0.42 * len(aliases) + 0.9) * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (bench, metric) in zip(axes, primary.items(), strict=False):
        for y, alias in enumerate(aliases):
            m = _done_metric(summary, alias, bench, metric)
            if m is None:
                continue
            ci = m.get("ci95") or [m["value"], m["value"]]
            i = style[alias]
            ax.errorbar(
                m["value"], y, xerr=[[m["value"] - ci[0]], [ci[1] - m["value"]]],
                fmt=MARKERS[i % 8], color=COLOURS[i % 8], capsize=3, markersize=6,
            )  # fmt: skip
            vs = summary["models"][alias]["benchmarks"][bench].get("vs_baseline", {})
            mark = {"better": "▲", "worse": "▼"}.get(vs.get(metric, {}).get("verdict"), "")
            if mark:
                ax.annotate(mark, (ci[1], y), xytext=(4, -4), textcoords="offset points")
        base = _done_metric(summary, str(summary.get("baseline")), bench, metric)
        if base is not None:
            ax.axvline(base["value"], color="#555555", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(aliases)), aliases)
        ax.set_ylim(len(aliases) - 0.5, -0.5)
        ax.set_title(bench, fontsize=10)
        ax.set_xlabel(metric, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(primary) :]:
        ax.set_visible(False)
    return _png(
        fig,
        "Each model's score per task with its 95% interval; dashed: the baseline; "
        "▲/▼: significantly better/worse after Holm.",
        "scores per task with 95% intervals",
    )


def _pareto(points: list[tuple[float, float, str]], up: bool) -> list[tuple[float, float, str]]:
    """The points that no other point beats on both size (smaller) and score."""
    front = []
    for size, score, alias in points:
        better = [
            (s2, v2)
            for s2, v2, a2 in points
            if a2 != alias
            and s2 <= size
            and (v2 >= score if up else v2 <= score)
            and (s2 < size or v2 != score)
        ]
        if not better:
            front.append((size, score, alias))
    return sorted(front)


def _size_panel(
    ax: Axes, points: list[tuple[float, float, str]], up: bool, style: dict[str, int]
) -> None:
    x_span = (max(p[0] for p in points) - min(p[0] for p in points)) or 1.0
    y_span = (max(p[1] for p in points) - min(p[1] for p in points)) or 1.0
    placed: list[tuple[float, float]] = []
    for size, score, alias in sorted(points):
        i = style[alias]
        ax.scatter(size, score, color=COLOURS[i % 8], marker=MARKERS[i % 8], s=40, zorder=3)
        near = sum(  # labels of points this close are stacked, not drawn over each other
            1 for x, y in placed if abs(x - size) < 0.08 * x_span and abs(y - score) < 0.08 * y_span
        )
        ax.annotate(alias, (size, score), xytext=(5, 4 - 11 * near), textcoords="offset points",
                    fontsize=8)  # fmt: skip
        placed.append((size, score))
    front = _pareto(points, up)
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#333333",
                linewidth=1, linestyle=":", zorder=2)  # fmt: skip
    ax.scatter([p[0] for p in front], [p[1] for p in front], s=140, facecolors="none",
               edgecolors="#333333", linewidths=1.2, zorder=4, label="Pareto front")  # fmt: skip
    ax.set_xlabel("file size (MiB)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.2)


def _size_vs_score(summary: dict[str, Any], style: dict[str, int]) -> dict[str, Any] | None:
    """File size against score, per task and on average, with the Pareto front ringed."""
    sizes = {
        a: m["size_bytes"] / 2**20 for a, m in summary["models"].items() if m.get("size_bytes")
    }
    if len(sizes) < 2:
        return None
    panels: list[tuple[str, str, list[tuple[float, float, str]], bool]] = []
    averaged: dict[str, list[float]] = {a: [] for a in sizes}
    tasks_in_average = []
    for bench, metric in primary_metrics(summary).items():
        found = {a: _done_metric(summary, a, bench, metric) for a in sizes}
        points = [(sizes[a], m["value"], a) for a, m in found.items() if m is not None]
        up = higher_is_better(metric, next((m for m in found.values() if m), None))
        if points:
            panels.append((bench, metric, points, up))
        if up and bench != ELYZA and all(m and 0 <= m["value"] <= 1 for m in found.values()):
            tasks_in_average.append(bench)
            for a, m in found.items():
                averaged[a].append(float(m["value"]))  # type: ignore[index]
    if tasks_in_average:
        points = [(sizes[a], sum(v) / len(v), a) for a, v in averaged.items()]
        what = f"mean of {len(tasks_in_average)} task(s)"
        panels.append(("average", what, points, True))
    if not panels:
        return None
    rows, cols = _grid(len(panels))
    fig = _figure(4.2 * cols, 3.3 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (bench, metric, points, up) in zip(axes, panels, strict=False):
        _size_panel(ax, points, up, style)
        ax.set_title(bench, fontsize=10)
        ax.set_ylabel(metric + ("" if up else " (lower is better)"), fontsize=9)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8, loc="best")
    note = (
        " The average is over the tasks every model finished whose main metric is a "
        f"proportion, higher for better: {', '.join(tasks_in_average)}."
        if tasks_in_average
        else ""
    )
    return _png(
        fig,
        "File size against score; ringed: the Pareto front (no other file is both smaller "
        "and better)." + note,
        "file size against score with the Pareto front",
    )


SPEED_PANELS = (  # (x label, summary field): a job appears in each panel it has a count for
    ("generated tokens/s", "gen_tokens"),
    ("input tokens/s (tokens read)", "input_tokens"),
)


SpeedRow = tuple[str, float, str]  # "benchmark · alias", the rate, alias


def _speed_panels(summary: dict[str, Any]) -> list[tuple[str, list[SpeedRow]]]:
    """Per model and job, over the time spent computing: generated tokens per second,
    input tokens per second, and requests per second for a job that counted neither (a
    run from before input tokens were recorded); (x label, rows) of each panel drawn."""
    panels: dict[str, list[SpeedRow]] = {}
    for alias, model in summary["models"].items():
        for bench, e in model["benchmarks"].items():
            compute = e.get("compute_s") or 0
            if e.get("status") != "done" or compute <= 0:
                continue
            counts = [(label, e.get(field)) for label, field in SPEED_PANELS if e.get(field)]
            if not counts and (e.get("requests") or {}).get("computed"):
                counts = [("requests/s", e["requests"]["computed"])]
            for label, count in counts:
                panels.setdefault(label, []).append((f"{bench} · {alias}", count / compute, alias))
    order = [label for label, _ in SPEED_PANELS] + ["requests/s"]
    return [(label, sorted(panels[label])) for label in order if label in panels]


def _speed(summary: dict[str, Any], style: dict[str, int]) -> dict[str, Any] | None:
    """The speed panels (:func:`_speed_panels`), stacked."""
    shown = _speed_panels(summary)
    if not shown:
        return None
    heights = [0.7 + 0.28 * len(rows) for _, rows in shown]
    fig = _figure(7.5, sum(heights))
    axes = fig.subplots(len(shown), 1, squeeze=False, height_ratios=heights).ravel()
    for ax, (label, rows) in zip(axes, shown, strict=True):
        colours = [COLOURS[style[a] % 8] for _, _, a in rows]
        ax.barh(range(len(rows)), [v for _, v, _ in rows], color=colours)
        ax.set_yticks(range(len(rows)), [name for name, _, _ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(label, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        for y, (_, v, _) in enumerate(rows):
            text = f"{v:.1f}" if v < 100 else f"{v:,.0f}"
            ax.annotate(text, (v, y), xytext=(3, -3), textcoords="offset points", fontsize=8)
        ax.margins(x=0.15)
    return _png(
        fig,
        "Speed per model and job, over the time spent computing (cached answers excluded): "
        "generated tokens per second for generation jobs; input tokens per second for "
        "likelihood and fidelity jobs (the tokens the model read: each request's context "
        "and continuation, each text's windows, each chunk); requests per second for a job "
        "that counted no tokens.",
        "speed per model and job",
    )


def _elyza(summary: dict[str, Any]) -> dict[str, Any] | None:
    """ELYZA-tasks-100: how many answers scored 1..5, per model."""
    rows = []
    for alias, model in summary["models"].items():
        e = model["benchmarks"].get(ELYZA) or {}
        dist = e.get("distribution") or {}
        if e.get("status") == "done" and dist:
            rows.append((alias, [int(dist.get(str(k), 0)) for k in range(1, 6)]))
    if not rows:
        return None
    fig = _figure(8.5, 0.9 + 0.42 * len(rows))
    ax = fig.subplots()
    for y, (_, counts) in enumerate(rows):
        total = sum(counts) or 1
        left = 0.0
        for k, count in enumerate(counts):
            share = 100 * count / total
            ax.barh(y, share, left=left, color=SCORE_COLOURS[k], edgecolor="white",
                    label=str(k + 1) if y == 0 else None)  # fmt: skip
            if count:
                ax.text(left + share / 2, y, str(count), ha="center", va="center", fontsize=8)
            left += share
    ax.set_yticks(range(len(rows)), [a for a, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of scored answers (%); numbers: answers", fontsize=9)
    ax.legend(title="score", ncols=5, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return _png(
        fig,
        "ELYZA-tasks-100: the judge's 1-5 scores per model (failed judgements left out).",
        "distribution of ELYZA 1-5 scores per model",
    )
