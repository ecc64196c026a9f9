"""Loglikelihood scoring: ggufbench against lm-eval's gguf path and the hardware bound.

For each model and task, in one run on the same local data:

  a  a whole ``ggufbench run`` process (start-up included) on a suite with the task;
  b  a whole ``lm_eval --model gguf`` process against ``python -m llama_cpp.server``,
     which this script starts on 127.0.0.1 (server start-up included);
  c  the bound: the distinct tokens of the prefix tree of all requests divided by the
     prompt throughput with logits off (one n_batch micro-batch from position 0, best
     of three), measured in this process right after a, with the same threads.

It prints the wall times, a's speed-up over b, a's job time against c, the accuracy
of each path, and how a agrees with a straightforward from-scratch evaluation by
llama-cpp-python (``Llama(logits_all=True)``, each context then each continuation):
the same choice per item, and the largest log-probability difference.

    .venv/bin/python bench/loglik.py --models smollm2,gemma \\
        --tasks demo_hellaswag,demo_mmlu --limit 10

Any lm-eval task works: ``--include-path DIR`` for local task YAMLs, ``--num-fewshot``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PY,
    capture_requests,
    cpu_count,
    default_include_path,
    fmt,
    llama_server,
    lm_eval_results,
    machine,
    metric,
    model_path,
    run_timed,
)

Pair = tuple[tuple[int, ...], tuple[int, ...]]


def suite_yaml(path: Path, task: str, args: argparse.Namespace, root: Path) -> str:
    bench = {"tasks": [task], "include_path": str(args.include_path)}
    if args.limit:
        bench["limit"] = args.limit
    if args.num_fewshot is not None:
        bench["num_fewshot"] = args.num_fewshot
    return json.dumps(
        {
            "name": "bench",
            "output_root": str(root),
            "models": [{"alias": "m", "path": str(path)}],
            "defaults": {"runner": "llama-cpp", "n_ctx": args.n_ctx, "threads": args.threads},
            "execution": {"max_parallel_jobs": 1},
            "benchmarks": [{"lm_eval": bench}],
        }
    )


def run_ggufbench(path: Path, task: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    suite = work / "suite.json"
    suite.write_text(suite_yaml(path, task, args, work / "runs"))
    wall = run_timed([PY, "-m", "ggufbench", "run", str(suite)], log=work / "ggufbench.log")
    assert wall is not None  # no time limit on a
    (run_dir,) = (work / "runs").iterdir()
    bench = json.loads((run_dir / "summary.json").read_text())["models"]["m"]["benchmarks"][task]
    samples = [
        json.loads(line)
        for line in (run_dir / "samples" / "m" / f"{task}.jsonl").read_text().splitlines()
    ]
    scores = {(s["task"], s["doc_id"]): [float(o[0]) for o in s["output"]] for s in samples}
    return {
        "wall_s": wall,
        "job_s": bench["wall_s"],
        "compute_s": bench.get("compute_s"),
        "acc": bench["metrics"].get("acc", {}).get("value"),
        "scores": scores,
    }


def run_peer(path: Path, task: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out = work / "lm_eval_out"
    start = time.perf_counter()
    with llama_server(path, n_ctx=args.n_ctx, threads=args.threads, log=work / "server.log") as url:
        cmd = [
            PY, "-m", "lm_eval", "--model", "gguf", "--model_args", f"base_url={url}",
            "--tasks", task, "--include_path", str(args.include_path),
            "--output_path", str(out),
        ]  # fmt: skip
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        if args.num_fewshot is not None:
            cmd += ["--num_fewshot", str(args.num_fewshot)]
        if run_timed(cmd, log=work / "lm_eval.log", timeout=args.peer_timeout or None) is None:
            return {"wall_s": None, "timed_out_s": time.perf_counter() - start, "acc": None}
    wall = time.perf_counter() - start
    return {"wall_s": wall, "acc": metric(lm_eval_results(out), task)}


def tokenized(backend: Any, requests: list[tuple[str, str]]) -> list[Pair]:
    return [backend._truncate(*backend._encode_pair(c, k)) for c, k in requests]


def prefix_tree_tokens(pairs: list[Pair]) -> int:
    """Distinct nodes of the prefix tree of all context + continuation sequences."""
    seen: set[tuple[int, ...]] = set()
    for ctx, cont in pairs:
        seq = ctx + cont
        for i in range(1, len(seq) + 1):
            seen.add(seq[:i])
    return len(seen)


def throughput(rt: Any, tokens: list[int], logits: bool) -> float:
    """Tokens per second decoding one n_batch micro-batch from position 0, best of five."""
    chunk = tokens[: rt.n_batch]
    best = 0.0
    for _ in range(5):
        rt.use(1, rt.n_ctx)
        outputs = range(len(chunk)) if logits else []
        start = time.perf_counter()
        rt.decode(chunk, range(len(chunk)), [0] * len(chunk), outputs)
        best = max(best, len(chunk) / (time.perf_counter() - start))
    return best


def speeds(path: Path, requests: list[tuple[str, str]], args: argparse.Namespace) -> dict[str, Any]:
    """The prefix tree of the requests and the model's prompt throughput, logits off and on."""
    from ggufbench.backends.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend(path, n_ctx=args.n_ctx, n_threads=args.threads)
    try:
        pairs = tokenized(backend, requests)
        filler: list[int] = []  # the task's own text, as long as one micro-batch
        for ctx, _ in dict.fromkeys(pairs):
            filler += ctx
        filler = (filler * (1 + backend.n_batch // max(1, len(filler))))[: backend.n_batch]
        return {
            "pairs": pairs,
            "distinct_tokens": prefix_tree_tokens(pairs),
            "scored_positions": sum(len(c) for _, c in set(pairs)),
            "off": throughput(backend.rt, filler, logits=False),
            "on": throughput(backend.rt, filler, logits=True),
            "load_avg": os.getloadavg()[0],
        }
    finally:
        backend.close()


def bound(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """c from the throughputs measured just before and just after a (their mean)."""
    off = (before["off"] + after["off"]) / 2
    on = (before["on"] + after["on"]) / 2
    distinct, scored = before["distinct_tokens"], before["scored_positions"]
    return {
        "distinct_tokens": distinct,
        "tok_s_logits_off": off,
        "tok_s_logits_on": on,
        "tok_s_logits_off_before_after": [before["off"], after["off"]],
        "load_avg_before_after": [before["load_avg"], after["load_avg"]],
        "bound_s": distinct / off,
        # the same, plus the output layer at every scored position
        "bound_with_logits_s": distinct / off + scored * max(0.0, 1 / on - 1 / off),
    }


def reference(
    path: Path, requests: list[tuple[str, str]], pairs: list[Pair], n_ctx: int, threads: int
) -> list[float]:
    """From scratch with llama-cpp-python's Llama: each context, then each continuation."""
    from llama_cpp import Llama

    need = max(len(c) + len(k) for c, k in pairs)
    llm = Llama(
        str(path), n_ctx=max(256, need + 8), n_threads=threads, n_threads_batch=threads,
        logits_all=True, verbose=False,
    )  # fmt: skip
    by_context: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, (ctx, _) in enumerate(pairs):
        by_context[ctx].append(i)
    out = [0.0] * len(pairs)
    for ctx, members in by_context.items():
        llm.reset()
        llm.eval(list(ctx))
        for i in members:
            cont = pairs[i][1]
            llm.n_tokens = len(ctx)
            if len(cont) > 1:
                llm.eval(list(cont[:-1]))
            rows = np.asarray(llm.scores[len(ctx) - 1 : len(ctx) - 1 + len(cont)], dtype=np.float64)
            rows -= rows.max(axis=1, keepdims=True)
            rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
            out[i] = float(sum(rows[j, t] for j, t in enumerate(cont)))
    llm.close()
    return out


def agreement(
    docs: list[tuple[str, int, int]], ref: list[float], ours: dict[tuple[str, int], list[float]]
) -> dict[str, Any]:
    per_doc: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
    for (task, doc, idx), lp in zip(docs, ref, strict=True):
        per_doc[(task, doc)][idx] = lp
    same, diffs = 0, []
    for key, choices in per_doc.items():
        mine = ours[key]
        theirs = [choices[i] for i in range(len(mine))]
        same += int(np.argmax(mine) == np.argmax(theirs))
        diffs += [abs(a - b) for a, b in zip(mine, theirs, strict=True)]
    return {"items": len(per_doc), "same_choice": same, "max_abs_diff": max(diffs, default=0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2,gemma", help="smollm2, gemma or GGUF paths")
    parser.add_argument("--tasks", default="demo_hellaswag,demo_mmlu")
    parser.add_argument("--include-path", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=10, help="items per task (0: all)")
    parser.add_argument("--num-fewshot", type=int, default=None)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--skip-peer", action="store_true", help="leave out path b")
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=1800,
        help="stop path b after this many seconds and report a lower bound on b/a (0: none)",
    )
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    args.include_path = (args.include_path or default_include_path()).resolve()
    args.limit = args.limit or None
    figures: dict[str, Any] = {
        "machine": machine(),
        "args": vars(args) | {"include_path": str(args.include_path), "json": None},
        "runs": [],
    }
    print(json.dumps(figures["machine"], indent=1))
    for name in args.models.split(","):
        path = model_path(name)
        for task in args.tasks.split(","):
            print(
                f"\n== {path.name} / {task} (limit {args.limit}, threads {args.threads})",
                flush=True,
            )
            captured = capture_requests(task, args.include_path, args.limit, args.num_fewshot)
            with tempfile.TemporaryDirectory(prefix="ggufbench-bench-") as tmp:
                work = Path(tmp)
                before = speeds(path, captured.loglikelihood, args)
                a = run_ggufbench(path, task, args, work)
                after = speeds(path, captured.loglikelihood, args)
                c = bound(before, after)
                b = None if args.skip_peer else run_peer(path, task, args, work)
            row: dict[str, Any] = {
                "model": path.name, "task": task, "requests": len(captured.loglikelihood),
                "a_wall_s": a["wall_s"], "a_job_s": a["job_s"], "a_acc": a["acc"],
                "b_wall_s": b and b["wall_s"], "b_acc": b and b["acc"],
            }  # fmt: skip
            row |= c
            row["b_over_a"] = b and b["wall_s"] and b["wall_s"] / a["wall_s"]
            if b and b["wall_s"] is None:  # stopped at --peer-timeout: a lower bound
                row["b_stopped_after_s"] = b["timed_out_s"]
                row["b_over_a_at_least"] = b["timed_out_s"] / a["wall_s"]
            row["job_over_bound"] = a["job_s"] / c["bound_s"]
            row["job_over_bound_with_logits"] = a["job_s"] / c["bound_with_logits_s"]
            if not args.skip_reference:
                pairs = before["pairs"]
                ref = reference(path, captured.loglikelihood, pairs, args.n_ctx, args.threads)
                row |= agreement(captured.docs, ref, a["scores"])
            figures["runs"].append(row)
            report(row)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


def report(row: dict[str, Any]) -> None:
    a = f"a ggufbench run   {row['a_wall_s']:7.1f} s  (job {row['a_job_s']:.1f} s)"
    print(f"requests {row['requests']}, prefix-tree tokens {row['distinct_tokens']}")
    print(f"{a}  acc {fmt(row['a_acc'])}")
    if row["b_wall_s"] is not None:
        print(f"b lm-eval gguf    {row['b_wall_s']:7.1f} s  acc {fmt(row['b_acc'])}")
        print(f"  a is {row['b_over_a']:.1f}x faster than b (whole processes)")
    elif "b_stopped_after_s" in row:
        print(f"b lm-eval gguf    stopped after {row['b_stopped_after_s']:.0f} s (--peer-timeout)")
        print(f"  a is at least {row['b_over_a_at_least']:.1f}x faster than b (whole processes)")
    b_off, a_off = row["tok_s_logits_off_before_after"]
    speed = (
        f"{row['tok_s_logits_off']:.0f} tok/s logits off ({b_off:.0f} before a, {a_off:.0f} after)"
    )
    with_logits = f"{row['bound_with_logits_s']:.1f} s with the output layer at scored positions"
    print(f"c bound           {row['bound_s']:7.1f} s  {speed}")
    print(f"  {with_logits}; load average before/after a {row['load_avg_before_after']}")
    ratio, with_out = row["job_over_bound"], row["job_over_bound_with_logits"]
    print(f"  job / bound {ratio:.2f}  (with the output layer {with_out:.2f})")
    if "items" in row:
        same = f"same choice on {row['same_choice']}/{row['items']} items"
        print(f"  against a from-scratch llama-cpp-python evaluation: {same}, ", end="")
        print(f"max |logprob diff| {row['max_abs_diff']:.3g}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
