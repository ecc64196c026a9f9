"""An lm-eval task as a ggufbench job: lm-eval's evaluator over our LM."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from ggufbench.benchmarks._job import JobContext
from ggufbench.errors import TaskError
from ggufbench.lmeval_adapter import GgufbenchLM


def quiet_lm_eval() -> None:
    """Keep lm-eval's and datasets' chatter (per-task notes, progress bars) off the terminal."""
    import datasets

    datasets.disable_progress_bars()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)


def task_manager(include_path: str | None, names: list[str] | None = None) -> Any:
    """lm-eval's task index. When every task asked for is under include_path, lm-eval's
    own few thousand task files are not indexed, which saves seconds per process."""
    from lm_eval.tasks import TaskManager

    if include_path and names:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(name in local.all_tasks for name in names):
            return local
    return TaskManager(include_path=include_path)


def hub_datasets(manager: Any, name: str) -> list[str]:
    """The Hugging Face hub datasets that an lm-eval task, group or tag reads, from the
    task index alone (building the tasks would download their data)."""
    from ggufbench.hub import is_hub_dataset

    found: dict[str, None] = {}
    for cfg in _task_configs(manager.task_index, name, set()):
        path = cfg.get("dataset_path")
        if isinstance(path, str) and not cfg.get("custom_dataset") and is_hub_dataset(path):
            found[path] = None
    return list(found)


def output_types(manager: Any, name: str) -> list[str]:
    """How lm-eval answers the documents of a task, group or tag (each subtask's
    ``output_type``: generate_until, loglikelihood, multiple_choice, ...), from the index."""
    found = {
        str(cfg.get("output_type") or "generate_until")
        for cfg in _task_configs(manager.task_index, name, set())
        if "task" in cfg and not isinstance(cfg.get("task"), list)
    }
    return sorted(found)


def _task_configs(index: dict[str, Any], spec: Any, seen: set[str]) -> Iterator[dict[str, Any]]:
    """The configs under ``spec``: a name in lm-eval's index, or a group member given
    inline; groups and tags are expanded (lm-eval's TaskFactory walks them the same way)."""
    from lm_eval.tasks._index import Kind

    if isinstance(spec, dict):  # an inline task or group, or settings for the one it names
        yield spec
        members = spec.get("task")
        if isinstance(members, list):
            for item in members:
                yield from _task_configs(index, item, seen)
        else:
            yield from _task_configs(index, spec.get("group") or members, seen)
        return
    entry = index.get(spec) if isinstance(spec, str) else None
    if entry is None or spec in seen:
        return
    seen.add(spec)
    if entry.kind is Kind.TAG:
        for task in sorted(entry.tags):
            yield from _task_configs(index, task, seen)
    elif entry.kind is Kind.GROUP:
        for item in (entry.cfg or {}).get("task") or []:
            yield from _task_configs(index, item, seen)
    else:
        yield entry.cfg or {}


def run(ctx: JobContext) -> dict[str, Any]:
    from ggufbench.hub import read_from_cache_if_unreachable

    bench = ctx.spec["benchmark"]
    quiet_lm_eval()
    manager = task_manager(bench.get("include_path"), [ctx.name])
    read_from_cache_if_unreachable(hub_datasets(manager, ctx.name))
    lm = GgufbenchLM(ctx.cached)
    if "shard" in ctx.spec:  # answers for a range of documents; the task's job scores them
        return _shard(ctx, lm, manager)
    start = time.monotonic()
    out = _evaluate(ctx, lm, manager)
    wall = time.monotonic() - start
    samples = _samples(out.get("samples", {}), lm)
    ctx.write_jsonl(ctx.samples_path(), samples)
    ctx.write_json(
        ctx.result_path(),
        {
            k: out.get(k)
            for k in (
                "results",
                "groups",
                "group_subtasks",
                "configs",
                "versions",
                "n-shot",
                "higher_is_better",
                "n-samples",
            )
        },
    )
    return {
        "metrics": metrics_of(out, ctx.name),
        "n_samples": len({(s["task"], s["doc_id"]) for s in samples}),
        "wall_s": round(wall, 3),
        **_work(ctx),
    }


def _evaluate(ctx: JobContext, lm: Any, manager: Any, **options: Any) -> dict[str, Any]:
    """lm-eval's evaluator on the job's task, with the suite's settings."""
    from lm_eval import simple_evaluate

    bench = ctx.spec["benchmark"]
    options.setdefault("log_samples", True)
    try:
        out = simple_evaluate(
            model=lm,
            tasks=[ctx.name],
            num_fewshot=bench.get("num_fewshot"),
            limit=bench.get("limit"),
            task_manager=manager,
            apply_chat_template=bool(bench.get("apply_chat_template")),
            fewshot_as_multiturn=bool(bench.get("fewshot_as_multiturn")),
            gen_kwargs=bench.get("gen_kwargs"),
            **options,
        )
    except KeyError as exc:
        raise TaskError(f"lm-eval task '{ctx.name}' did not load: {exc}") from exc
    if out is None:
        raise TaskError(f"lm-eval returned no results for task '{ctx.name}'")
    return dict(out)


def _shard(ctx: JobContext, lm: GgufbenchLM, manager: Any) -> dict[str, Any]:
    """Compute one shard's answers (:mod:`.lm_eval_shard`); lm-eval's scores are not kept."""
    from ggufbench.benchmarks.lm_eval_shard import ShardLM

    index, count = ctx.spec["shard"]
    start = time.monotonic()
    shard = ShardLM(lm, index, count)
    _evaluate(ctx, shard, manager, log_samples=False, bootstrap_iters=0)
    return {
        "metrics": {},
        "n_samples": len(shard.documents),
        "wall_s": round(time.monotonic() - start, 3),
        "shard": [index, count],
        **_work(ctx),
    }


def _work(ctx: JobContext) -> dict[str, Any]:
    """The requests a job answered (from the cache, or computed), and what computing took:
    its seconds, the tokens generated and the tokens read for loglikelihood requests."""
    counts = ctx.cached.counts
    return {
        "requests": {
            "total": counts.total,
            "computed": counts.computed,
            "from_cache": counts.from_cache,
        },
        "gen_tokens": counts.gen_tokens,
        "input_tokens": counts.input_tokens,
        "compute_s": round(counts.compute_s, 3),
    }


def metrics_of(out: dict[str, Any], name: str) -> dict[str, dict[str, float | None]]:
    """lm-eval's 'metric,filter' keys as {metric: {value, stderr}}.

    The filter is kept in the name where it is not 'none' (gsm8k's
    'exact_match,strict-match' stays as it is).
    """
    row = (out.get("groups") or {}).get(name) or out["results"].get(name) or {}
    metrics: dict[str, dict[str, float | None]] = {}
    for key, value in row.items():
        if "," not in key or "_stderr," in key or not isinstance(value, int | float):
            continue
        metric, filt = key.split(",", 1)
        stderr = row.get(f"{metric}_stderr,{filt}")
        label = metric if filt == "none" else key
        metrics[label] = {
            "value": float(value),
            "stderr": float(stderr) if isinstance(stderr, int | float) else None,
        }
    return metrics


def _samples(by_task: dict[str, list[dict[str, Any]]], lm: GgufbenchLM) -> list[dict[str, Any]]:
    rows = []
    for task in sorted(by_task):
        for s in by_task[task]:
            row: dict[str, Any] = {
                "task": task,
                "doc_id": s.get("doc_id"),
                "filter": s.get("filter"),
                "target": s.get("target"),
                "output": s.get("filtered_resps"),
                "resps": s.get("resps"),
                "scores": {m: s.get(m) for m in s.get("metrics", [])},
                "prompt_hash": s.get("prompt_hash"),
                "doc_hash": s.get("doc_hash"),
            }
            record = lm.thinking_records.get(s.get("prompt_hash") or "")
            if record:
                row["thinking"] = record
            rows.append(row)
    return rows
