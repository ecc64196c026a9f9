"""Comparing runs: a variant run today against a baseline run from last week.

Items are paired by (task, document id). A task is compared only where the runs
define it the same way: lm-eval's task configuration (prompt template, shots,
dataset, metrics), the number of shots, the generation settings, lm-eval's task
hash where both results carry it, and, item by item, the same document and
(without chat templates) the same prompt. Runs with different limits are
compared on the items every run has; the values of those tasks are then
recomputed over these items, so that every model of the report is measured on
the same ones.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ggufbench.errors import ConfigError
from ggufbench.ledger import Ledger
from ggufbench.plan import FIDELITY
from ggufbench.report._paired import add_vs_baseline
from ggufbench.report._samples import Items, item_key, item_scores, read_rows
from ggufbench.report._summary import build_summary, current_status
from ggufbench.rundir import RunDir, results_file, samples_file

__all__ = ["Comparison", "compare_runs"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")
# job settings that select items or say where files are, not what a task is
_NOT_DEFINITION = {"tasks", "limit", "models", "include_path", "seed", "judge"}


@dataclass
class _Run:
    path: Path
    label: str
    meta: dict[str, Any]
    summary: dict[str, Any]
    specs: dict[tuple[str, str], dict[str, Any]]  # (alias, benchmark) -> the job's settings

    def done(self, bench: str) -> list[str]:
        """Aliases of this run that finished ``bench``."""
        return [
            a
            for a, m in self.summary["models"].items()
            if m["benchmarks"].get(bench, {}).get("status") == "done"
        ]


@dataclass
class Comparison:
    summary: dict[str, Any]
    runs: list[dict[str, Any]]  # run.json of each run
    notes: list[str] = field(default_factory=list)
    exit_code: int = 0


def _load(path: Path) -> _Run:
    run = RunDir(path)
    meta = run.meta()  # a clear error if this is not a run directory
    status = current_status(run)
    ledger = Ledger(run.ledger)
    try:
        summary = build_summary(run, ledger, status)
        specs = {
            (j.model, j.benchmark): dict(j.spec.get("benchmark") or {})
            for j in ledger.jobs()
            if "shard" not in j.spec
        }
    finally:
        ledger.close()
    return _Run(path, str(meta.get("id") or path.name), meta, summary, specs)


def _definition(run: _Run, alias: str, bench: str) -> dict[str, Any]:
    """What defines ``bench`` in this run: settings, task configs, shots, task hashes."""
    spec = {k: v for k, v in run.specs.get((alias, bench), {}).items() if k not in _NOT_DEFINITION}
    try:
        results = json.loads(results_file(run.path, alias, bench).read_text("utf-8"))
    except (OSError, ValueError):
        results = {}
    configs = {
        task: {k: _stable(v) for k, v in (cfg or {}).items() if k != "metadata"}
        for task, cfg in (results.get("configs") or {}).items()
    }
    return {
        "settings": spec,
        "task configuration": configs,
        "number of shots": results.get("n-shot"),
        "judge": {k: v for k, v in (results.get("judge") or {}).items() if k != "file"},
        "dataset": results.get("dataset"),
        "task hash": results.get("task_hashes"),
        "n": results.get("n-samples"),
    }


def _stable(value: Any) -> Any:
    """A config value without what changes from process to process (function addresses)."""
    if isinstance(value, str):
        return _ADDRESS.sub(">", value)
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _differs(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The parts of two definitions that differ, in words."""
    found = []
    for part in ("settings", "task configuration", "number of shots", "judge", "dataset"):
        if a[part] and b[part] and a[part] != b[part]:
            if isinstance(a[part], dict) and part != "number of shots":
                keys = {
                    k
                    for task in (a[part].keys() | b[part].keys())
                    for k in _diff_keys(a[part].get(task), b[part].get(task))
                }
                found.append(f"{part} ({', '.join(sorted(keys)) or 'tasks'})")
            else:
                found.append(part)
    if a["task hash"] and b["task hash"] and a["n"] == b["n"] and a["task hash"] != b["task hash"]:
        found.append("lm-eval's task hash")
    return found


def _diff_keys(a: Any, b: Any) -> list[str]:
    if not isinstance(a, dict) or not isinstance(b, dict):
        return [] if a == b else ["value"] if not isinstance(a, dict) else list(a)
    return [k for k in a.keys() | b.keys() if a.get(k) != b.get(k)]


def _item_ids(run: _Run, alias: str, bench: str) -> dict[tuple[str, Any], tuple[Any, Any]]:
    """{(task, doc_id): (document identity, prompt identity)} of one job's samples."""
    out = {}
    for row in read_rows(samples_file(run.path, alias, bench)):
        doc = row.get("doc_hash") or row.get("input")
        out[item_key(row)] = (doc, row.get("prompt_hash"))
    return out


def _item_problem(
    base: dict[tuple[str, Any], tuple[Any, Any]],
    other: dict[tuple[str, Any], tuple[Any, Any]],
    prompts: bool,
) -> str | None:
    shared = base.keys() & other.keys()
    docs = sum(
        1 for k in shared if None not in (base[k][0], other[k][0]) and base[k][0] != other[k][0]
    )
    if docs:
        return f"{docs} of its {len(shared)} shared items have a different document"
    if prompts:
        diff = sum(
            1 for k in shared if None not in (base[k][1], other[k][1]) and base[k][1] != other[k][1]
        )
        if diff:
            return f"{diff} of its {len(shared)} shared items have a different prompt"
    return None


def _baseline(runs: list[_Run], chosen: str | None) -> tuple[_Run, str]:
    """The run and alias of ``--baseline RUN:ALIAS`` (default: the first run's baseline)."""
    if chosen is None:
        return runs[0], str(runs[0].summary["baseline"])
    name, _, alias = chosen.rpartition(":")
    for run in runs:
        named = name in (run.label, str(run.path)) or (
            bool(name) and Path(name).resolve() == run.path.resolve()
        )
        if named and alias in run.summary["models"]:
            return run, alias
    known = ", ".join(f"{r.label}:{a}" for r in runs for a in r.summary["models"])
    raise ConfigError(f"--baseline {chosen} is not a model of these runs; use one of {known}")


def _entry(run: _Run, alias: str, model: dict[str, Any]) -> dict[str, Any]:
    benches = {
        b: {k: v for k, v in e.items() if k != "vs_baseline"}
        for b, e in model["benchmarks"].items()
    }
    head = {k: v for k, v in model.items() if k != "benchmarks"}
    return head | {
        "run": run.label,
        "run_dir": str(run.path),
        "alias": alias,
        "benchmarks": benches,
    }


def _check_bench(
    bench: str,
    base_run: _Run,
    base_alias: str,
    runs: list[_Run],
    drop: list[tuple[_Run, str, str]],
) -> tuple[dict[str, set[tuple[str, Any]]], list[str]]:
    """The item sets of the runs that define ``bench`` as the baseline's run does, and a
    sentence for each run that does not (``drop`` gets those runs)."""
    notes = []
    base_def = _definition(base_run, base_alias, bench)
    base_ids = _item_ids(base_run, base_alias, bench)
    item_sets = {base_run.label: set(base_ids)}
    for run in runs:
        done = run.done(bench)
        if run is base_run or not done:
            continue
        other = _definition(run, done[0], bench)
        differs = _differs(base_def, other)
        problem = f"it is defined differently ({', '.join(differs)})" if differs else None
        if problem is None:
            ids = _item_ids(run, done[0], bench)
            templated = base_def["settings"].get("apply_chat_template") or other["settings"].get(
                "apply_chat_template"
            )
            problem = _item_problem(base_ids, ids, prompts=not templated)
            item_sets[run.label] = set(ids)
        if problem is not None:
            item_sets.pop(run.label, None)
            said = f"{bench} is not compared between {base_run.label} and {run.label}: {problem}."
            drop.append((run, bench, said))
            notes.append(said)
    return item_sets, notes


def _restrict(entry: dict[str, Any], scores: dict[str, Items], keep: set[tuple[str, Any]]) -> None:
    """Recompute each per-item metric of a job over the items in ``keep``."""
    for metric, m in entry.get("metrics", {}).items():
        items = [v for k, v in scores.get(metric, {}).items() if k in keep]
        for stale in ("ci95", "ci_method"):
            m.pop(stale, None)
        if len(items) > 1:
            m["value"] = statistics.fmean(items)
            m["stderr"] = statistics.stdev(items) / len(items) ** 0.5
    entry["n_samples"] = len(keep)


def compare_runs(paths: list[Path], baseline: str | None = None) -> Comparison:
    """A report's summary over the models of several runs, against one baseline."""
    if len(paths) < 2:
        raise ConfigError("compare needs at least two run directories, e.g. compare RUN_A RUN_B")
    seen = [p.resolve() for p in paths]
    for p in paths:
        if seen.count(p.resolve()) > 1:
            raise ConfigError(f"{p} is given twice; give each run directory once")
    runs = [_load(p) for p in paths]
    labels = [r.label for r in runs]
    for i, run in enumerate(runs):
        if labels.count(run.label) > 1:
            run.label = f"{run.label}#{i + 1}"
    base_run, base_alias = _baseline(runs, baseline)
    models = {
        f"{r.label}:{a}": _entry(r, a, m) for r in runs for a, m in r.summary["models"].items()
    }
    notes: list[str] = []
    common: dict[str, set[tuple[str, Any]]] = {}
    drop: list[tuple[_Run, str, str]] = []
    shared_any = False
    benches = dict.fromkeys(
        b for r in runs for m in r.summary["models"].values() for b in m["benchmarks"]
    )
    for bench in benches:
        if bench == FIDELITY or base_alias not in base_run.done(bench):
            continue  # fidelity is measured against each run's own baseline
        item_sets, said = _check_bench(bench, base_run, base_alias, runs, drop)
        notes += said
        shared_any = shared_any or len(item_sets) > 1
        shared = set.intersection(*item_sets.values())
        if len(item_sets) > 1 and any(len(s) != len(shared) for s in item_sets.values()):
            counts = ", ".join(f"{label} {len(s)}" for label, s in item_sets.items())
            notes.append(
                f"{bench}: compared on the {len(shared)} items every run has ({counts}); "
                "per-item metrics are recomputed over these items."
            )
            for run in runs:
                if run.label in item_sets:
                    for alias in run.done(bench):
                        entry = models[f"{run.label}:{alias}"]["benchmarks"][bench]
                        scores = item_scores(samples_file(run.path, alias, bench))
                        _restrict(entry, scores, shared)
            common[bench] = shared
    if not shared_any:
        raise ConfigError(
            "these runs share no finished task that is defined the same way; nothing to compare"
        )
    for run, bench, reason in drop:  # kept in view, without values or a comparison
        for alias in run.summary["models"]:
            benches = models[f"{run.label}:{alias}"]["benchmarks"]
            if bench in benches:
                benches[bench] = {"status": "not compared", "error": reason, "metrics": {}}
    summary = {
        "schema_version": 1,
        "run_id": " vs ".join(r.label for r in runs),
        "status": "done" if all(r.summary["status"] == "done" for r in runs) else "partial",
        "baseline": f"{base_run.label}:{base_alias}",
        "runs": [{"id": r.label, "path": str(r.path), "status": r.summary["status"]} for r in runs],
        "notes": notes,
        "models": models,
    }

    cache: dict[tuple[str, str], dict[str, Items]] = {}

    def scores_of(key: str, bench: str) -> dict[str, Items]:
        if (key, bench) not in cache:  # the baseline's are read once per benchmark
            model = models[key]
            found = item_scores(samples_file(Path(model["run_dir"]), model["alias"], bench))
            keep = common.get(bench)
            cache[(key, bench)] = found if keep is None else {
                m: {k: v for k, v in items.items() if k in keep} for m, items in found.items()
            }  # fmt: skip
        return cache[(key, bench)]

    add_vs_baseline(summary, base_run.path, scores_of)
    failed = any(
        e.get("status") == "failed" for m in models.values() for e in m["benchmarks"].values()
    )
    metas = [r.meta | {"id": r.label, "path": str(r.path)} for r in runs]
    return Comparison(summary, metas, notes, 1 if failed else 0)
