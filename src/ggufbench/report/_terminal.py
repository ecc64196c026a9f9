"""The summary table in the terminal, printed when a run ends and by ``ggufbench report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ggufbench.report._fidelity import fidelity_entries, terminal_cell
from ggufbench.report._format import interval, marker, num, primary_metrics, size_mib

__all__ = ["print_summary", "terminal_table"]

STYLES = {"better": "bold blue", "worse": "bold dark_orange"}
LEGEND = (
    "▲ better, ▼ worse than the baseline: significant after Holm's correction (p < 0.05); "
    "= no significant difference; [ ] 95% intervals"
)


def _cell(summary: dict[str, Any], alias: str, bench: str, metric: str) -> Text:
    entry = summary["models"][alias]["benchmarks"].get(bench)
    if not entry or entry.get("status") != "done":
        return Text((entry or {}).get("status", "–"), style="dim")
    m = entry.get("metrics", {}).get(metric) or {}
    text = Text(num(m.get("value")))
    text.append(f" {interval(m.get('ci95'))}".rstrip(), style="dim")
    vs = entry.get("vs_baseline", {}).get(metric)
    if vs:
        symbol, word = marker(vs)
        style = STYLES.get(vs.get("verdict", ""), "")
        text.append(f"\n{symbol} {vs['delta']:+.4f}", style=style)
        text.append(f" {interval(vs.get('ci95'))}".rstrip(), style="dim")
        if word != "not tested":
            text.append(f" {word}", style=style)
    elif alias == summary.get("baseline"):
        text.append("\nbaseline", style="dim")
    return text


def terminal_table(summary: dict[str, Any]) -> Table:
    """Models × tasks on each task's main metric, differences marked by symbol and colour."""
    primary = primary_metrics(summary)
    # names from the user's files are Text, never read as rich markup
    title = Text(f"{summary.get('run_id', '')}: {summary.get('status', '')}")
    table = Table(title=title, caption=LEGEND, show_lines=True)
    table.add_column("model")
    table.add_column("quant")
    table.add_column("size", justify="right")
    for bench, metric in primary.items():
        table.add_column(Text(f"{bench}\n{metric}"))
    fidelity = dict(fidelity_entries(summary))
    if fidelity:
        table.add_column(Text("fidelity\nvs the baseline"))
    for alias, model in summary["models"].items():
        name = f"{alias}\n(baseline)" if alias == summary.get("baseline") else alias
        cells = [_cell(summary, alias, b, m) for b, m in primary.items()]
        if fidelity:
            cells.append(_fidelity_cell(fidelity.get(alias)))
        table.add_row(
            Text(name), Text(model.get("quant") or "–"), size_mib(model.get("size_bytes")), *cells
        )
    return table


def _fidelity_cell(entry: dict[str, Any] | None) -> Text:
    """Mean KLD and same top p against the baseline (the baseline: its PPL)."""
    lines = terminal_cell(entry)
    if lines is None:
        return Text("–", style="dim")
    first, second = lines
    text = Text(first, style="" if entry and entry.get("status") == "done" else "dim")
    if second:
        text.append(f"\n{second}", style="dim" if second == "baseline" else "")
    return text


def print_summary(console: Console, run_dir: Path) -> None:
    """Print the summary table of the report in ``run_dir`` and where its files are."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text("utf-8"))
    except (OSError, ValueError):
        console.print(
            f"no summary in {run_dir}; rebuild it with: ggufbench report {run_dir}", markup=False
        )
        return
    console.print(terminal_table(summary))
    for name in ("summary.json", "report.md", "report.html"):
        if (run_dir / name).is_file():
            shown = f"{name}: {run_dir / name}"
            console.print(shown, markup=False, highlight=False, soft_wrap=True)
