"""report.html: the whole report in one self-contained file.

No network: the styles and the script are inline, plots are embedded PNGs, and
the explorer's data is compressed into the page. The page is built from the
summary and the run directories alone, so any run, old ones included, can be
rendered again by ``ggufbench report``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from ggufbench.report._explorer import (
    ANSWER_CHARS,
    OUTPUT_CHARS,
    PROMPT_CHARS,
    TARGET_CHARS,
    encode,
    explorer_data,
)
from ggufbench.report._fidelity import fidelity_view
from ggufbench.report._format import (
    benchmark_metrics,
    error_kind,
    interval,
    marker,
    num,
    primary_metrics,
    pvalue,
    size_mib,
)
from ggufbench.report._plots import fidelity_plot, plots
from ggufbench.report._problems import failed_jobs, withheld_counts

__all__ = ["render_html"]

TEMPLATES = Path(__file__).parent / "templates"
VERDICT_CLASS = {
    "better": "better",
    "worse": "worse",
    "no significant difference": "same",
    "not tested": "untested",
}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters |= {"num": num, "interval": interval, "pvalue": pvalue, "size": size_mib}
    return env


def _run_view(meta: dict[str, Any]) -> dict[str, Any]:
    env = meta.get("environment") or {}
    gpus = ", ".join(str(g.get("name")) for g in env.get("gpus") or []) or "none"
    ram = env.get("ram_bytes")
    machine = [
        ("CPU", f"{env.get('cpu', '?')} ({env.get('cores', '?')} cores)"),
        ("RAM", f"{ram / 2**30:.0f} GiB" if ram else "?"),
        ("GPU", gpus),
        ("OS", env.get("os", "?")),
    ]
    versions = [
        (name, env.get(key) or "?")
        for name, key in (
            ("ggufbench", "ggufbench"),
            ("Python", "python"),
            ("llama-cpp-python", "llama_cpp_python"),
            ("lm-eval", "lm_eval"),
        )
    ]
    return {
        "id": meta.get("id", "?"),
        "path": meta.get("path"),
        "created": meta.get("created", "?"),
        "status": meta.get("status", "?"),
        "machine": machine,
        "versions": versions,
        "system": env.get("llama_cpp_system"),
    }


def _cell(summary: dict[str, Any], alias: str, bench: str, metric: str) -> dict[str, Any]:
    entry = summary["models"][alias]["benchmarks"].get(bench)
    if not entry:
        return {"css": "empty", "value": "not run"}
    if entry.get("status") != "done":
        return {"css": "empty", "value": entry.get("status", "skipped")}
    m = entry.get("metrics", {}).get(metric) or {}
    cell: dict[str, Any] = {
        "css": "base" if alias == summary.get("baseline") else "untested",
        "value": num(m.get("value")),
        "ci": interval(m.get("ci95")),
        "ci_method": m.get("ci_method", ""),
    }
    vs = entry.get("vs_baseline", {}).get(metric)
    if vs:
        symbol, word = marker(vs)
        cell |= {
            "css": VERDICT_CLASS.get(vs.get("verdict", ""), "untested"),
            "delta": f"{vs['delta']:+.4f}",
            "delta_ci": interval(vs.get("ci95")),
            "symbol": symbol,
            "word": word,
            "title": f"{error_kind(vs)}; {vs.get('test') or 'no test'}: p = "
            f"{pvalue(vs.get('p'))}, Holm {pvalue(vs.get('p_holm'))}",
        }
    return cell


def _comparisons(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for alias, model in summary["models"].items():
        for bench, metrics in benchmark_metrics(summary).items():
            entry = model["benchmarks"].get(bench, {})
            for metric in metrics:
                vs = entry.get("vs_baseline", {}).get(metric)
                if vs:
                    symbol, word = marker(vs)
                    rows.append(
                        {"model": alias, "bench": bench, "metric": metric, "vs": vs,
                         "css": VERDICT_CLASS.get(vs.get("verdict", ""), "untested"),
                         "symbol": symbol, "word": word}
                    )  # fmt: skip
    return rows


def render_html(
    summary: dict[str, Any],
    run_dir: Path,
    runs: list[dict[str, Any]],
    *,
    title: str | None = None,
) -> str:
    """The page for ``summary``; ``runs`` are the run.json of every run it draws on."""
    primary = primary_metrics(summary)
    models = summary["models"]
    table = [
        {
            "alias": alias,
            "baseline": alias == summary.get("baseline"),
            "quant": models[alias].get("quant") or "–",
            "size": models[alias].get("size_bytes"),
            "cells": [_cell(summary, alias, b, m) for b, m in primary.items()],
        }
        for alias in models
    ]
    figures, plot_note = plots(summary)
    fidelity = fidelity_view(summary)
    if fidelity is not None:
        fidelity["figure"], fidelity["plot_note"] = fidelity_plot(summary, fidelity["compared"])
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=title or f"ggufbench report: {summary.get('run_id', '')}",
            summary=summary,
            runs=[_run_view(meta) for meta in runs],
            primary=primary,
            table=table,
            comparisons=_comparisons(summary),
            figures=figures,
            fidelity=fidelity,
            plot_note=plot_note,
            failures=failed_jobs(summary),
            withheld=withheld_counts(summary, run_dir),
            explorer=encode(explorer_data(summary, run_dir)),
            css=(TEMPLATES / "report.css").read_text("utf-8"),
            js=(TEMPLATES / "report.js").read_text("utf-8"),
            caps={
                "prompt": PROMPT_CHARS,
                "target": TARGET_CHARS,
                "output": OUTPUT_CHARS,
                "answer": ANSWER_CHARS,
            },
        )
    )
