"""The per-sample explorer's data: every item of every task, each model's output and score.

Written into report.html compressed (gzip, then base64) and read by its script.
Texts are capped so that an item costs at most PROMPT_CHARS + TARGET_CHARS +
OUTPUT_CHARS per model (+ ANSWER_CHARS per filter) characters before compression
(docs/report.md): the end of a prompt is kept (the question comes last in a
few-shot prompt), the start of a target and of an output.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

from ggufbench.report._format import benchmark_metrics
from ggufbench.report._samples import item_key, metric_name, read_rows, samples_of
from ggufbench.report._texts import LedgerTexts, json_cell

__all__ = ["ANSWER_CHARS", "OUTPUT_CHARS", "PROMPT_CHARS", "TARGET_CHARS", "explorer_data"]

PROMPT_CHARS = 1000
TARGET_CHARS = 300
OUTPUT_CHARS = 500
ANSWER_CHARS = 100
ELYZA_FAILED = {"generation_failed", "judge_failed", "no_answer"}


def head(text: str, cap: int) -> str:
    return text if len(text) <= cap else text[: cap - 1] + "…"


def tail(text: str, cap: int) -> str:
    return text if len(text) <= cap else "…" + text[-(cap - 1) :]


class _Texts:
    """The ledger texts of each run directory, read once."""

    def __init__(self) -> None:
        self._by_run: dict[Path, LedgerTexts] = {}

    def of(self, run_dir: Path) -> LedgerTexts:
        if run_dir not in self._by_run:
            self._by_run[run_dir] = LedgerTexts(run_dir / "ledger.sqlite")
        return self._by_run[run_dir]


def _lm_eval_output(row: dict[str, Any], texts: LedgerTexts, sha: str | None) -> dict[str, Any]:
    """Output, per-filter answers and a readable target of one lm-eval sample line."""
    resps = row.get("resps") or []
    firsts = [r[0] if isinstance(r, list) and r else r for r in resps]
    out: dict[str, Any] = {}
    target = row.get("target")
    if firsts and all(isinstance(r, str) for r in firsts):  # generate_until
        out["o"] = head(str(firsts[0]), OUTPUT_CHARS)
        answer = row.get("output")
        if isinstance(answer, list) and answer and isinstance(answer[0], str):
            out["a"] = {str(row.get("filter") or "none"): head(answer[0], ANSWER_CHARS)}
    elif firsts and all(isinstance(r, list) and r for r in firsts):  # log-likelihoods
        lls = [float(r[0]) for r in firsts]
        if len(lls) == 1:
            out["o"] = f"log-likelihood {lls[0]:.2f}"
        else:
            choices = texts.choices(sha, row.get("prompt_hash"), lls)
            out["o"] = head(_picks(lls, [c.strip() for c in choices]), OUTPUT_CHARS)
            if isinstance(target, int) and 0 <= target < len(choices):
                out["g"] = head(f"{target}: {choices[target].strip()}", TARGET_CHARS)
    else:
        out["o"] = head(json_cell(row.get("output")), OUTPUT_CHARS)
    out.setdefault("g", head(json_cell(target), TARGET_CHARS))
    return out


def _picks(lls: list[float], choices: list[str]) -> str:
    """The choice with the highest log-likelihood, and the one per character where that
    differs (lm-eval's acc_norm), named by their text where the ledger has it."""

    def named(i: int) -> str:
        return f"choice {i}: {choices[i]}" if choices else f"choice {i}"

    pick = max(range(len(lls)), key=lls.__getitem__)
    shown = named(pick)
    if choices and all(choices):
        per_char = max(range(len(lls)), key=lambda i: lls[i] / len(choices[i]))
        if per_char != pick:
            shown += f" (per character: {named(per_char)})"
    return shown


def _model_items(
    rows: list[dict[str, Any]], texts: LedgerTexts, sha: str | None
) -> dict[tuple[str, Any], dict[str, Any]]:
    """{item: {p, g, o, a, s, f, w}} for one model's samples of one benchmark."""
    items: dict[tuple[str, Any], dict[str, Any]] = {}
    for row in rows:
        key = item_key(row)
        item = items.setdefault(key, {"s": {}})
        if isinstance(row.get("scores"), dict):
            shown = _lm_eval_output(row, texts, sha)
            answers = shown.pop("a", {})
            item.setdefault("a", {}).update(answers)
            item.setdefault("o", shown["o"])
            item.setdefault("g", shown["g"])
            prompt = texts.prompt(row.get("prompt_hash"))
            for name, value in row["scores"].items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    item["s"][metric_name(name, row)] = value
        else:  # ELYZA
            prompt = row.get("input")
            item["o"] = head(str(row.get("output") or ""), OUTPUT_CHARS)
            item["g"] = head(str(row.get("target") or ""), TARGET_CHARS)
            if isinstance(row.get("score"), int | float):
                item["s"]["score"] = row["score"]
            if row.get("status") in ELYZA_FAILED:
                item["f"] = head(f"{row['status']}: {row.get('reason') or ''}", ANSWER_CHARS)
        if prompt and "p" not in item:
            item["p"] = tail(str(prompt), PROMPT_CHARS)
        withheld = (row.get("thinking") or {}).get("withheld_reason")
        if withheld:
            item["w"] = str(withheld)
    return items


def explorer_data(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Every task's items with each model's output and scores, for the explorer."""
    keys = list(summary["models"])
    texts = _Texts()
    tasks: dict[str, Any] = {}
    for bench, metrics in benchmark_metrics(summary).items():
        per_model: list[dict[tuple[str, Any], dict[str, Any]]] = []
        failed: list[str | None] = []
        for key in keys:
            model = summary["models"][key]
            entry = model["benchmarks"].get(bench, {})
            path = samples_of(summary, key, bench, run_dir)
            ledger_texts = texts.of(path.parents[2])
            per_model.append(_model_items(read_rows(path), ledger_texts, model.get("sha256")))
            failed.append(
                head(f"the job failed: {entry.get('error') or ''}", ANSWER_CHARS)
                if entry.get("status") == "failed"
                else None
            )
        order = sorted({k for items in per_model for k in items}, key=_order)
        if not order:
            continue
        scored = {name for items in per_model for i in items.values() for name in i["s"]}
        tasks[bench] = {
            "metrics": [m for m in metrics if m in scored],
            "subtasks": len({k[0] for k in order}) > 1,
            "items": [_item(k, per_model, failed) for k in order],
        }
    return {"models": keys, "baseline": summary.get("baseline"), "tasks": tasks}


def _order(key: tuple[str, Any]) -> tuple[str, int, str]:
    task, doc = key
    return (task, doc if isinstance(doc, int) else 0, str(doc))


def _item(
    key: tuple[str, Any],
    per_model: list[dict[tuple[str, Any], dict[str, Any]]],
    failed: list[str | None],
) -> dict[str, Any]:
    found = [items.get(key) for items in per_model]
    first = next((f for f in found if f), {})
    cells: list[dict[str, Any] | None] = []
    for f, job_failed in zip(found, failed, strict=True):
        if f is None:
            cells.append({"f": job_failed} if job_failed else None)
            continue
        cells.append({k: v for k, v in f.items() if k in ("o", "a", "s", "f", "w") and v != {}})
    return {
        "t": key[0],
        "d": key[1],
        "p": first.get("p", ""),
        "g": first.get("g", ""),
        "m": cells,
    }


def encode(data: dict[str, Any]) -> str:
    """gzip + base64 of the JSON, reproducible (no timestamp in the gzip header)."""
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")
