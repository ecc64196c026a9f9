"""Greedy generation: ggufbench batched against one-prompt-at-a-time paths.

For each model, on the same prompts (a generate_until task as lm-eval builds it):

  batched     ggufbench's engine, all prompts in one call (width measured on the model)
  alone       ggufbench's engine, one prompt per call: must give the same bytes
  sequential  llama-cpp-python's ``Llama.create_completion``, one prompt at a time
  server      a whole ``lm_eval --model local-completions`` process against
              ``python -m llama_cpp.server`` on 127.0.0.1, started by this script

``max_gen_toks`` (the task's, or ``--max-gen-toks``) is sent to every path, the
server included. Tokens per second count generated tokens over wall time,
prompt processing included.

    .venv/bin/python bench/generate.py --models smollm2,gemma --task demo_gsm8k_cot --limit 8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PY,
    capture_requests,
    cpu_count,
    default_include_path,
    llama_server,
    lm_eval_samples,
    machine,
    model_path,
    run_timed,
)


def gen_requests(
    captured: list[tuple[str, dict[str, Any]]], max_gen_toks: int | None, *, no_stop: bool = False
) -> list[Any]:
    from ggufbench.backends._base import GenRequest

    out = []
    for context, kwargs in captured:
        until = kwargs.get("until") or ()
        until = () if no_stop else (until,) if isinstance(until, str) else tuple(until)
        limit = max_gen_toks or int(kwargs.get("max_gen_toks", 256))
        out.append(GenRequest(prompt=context, max_tokens=limit, stop=until))
    return out


def ggufbench_paths(path: Path, requests: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    from ggufbench.backends.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend(path, n_ctx=args.n_ctx, n_threads=args.threads)
    try:
        # The step width is measured once per model, build and machine and then
        # remembered (engine/_widths.py), so it is timed apart from the generation.
        start = time.perf_counter()
        width = backend.generation_width
        probe_s = time.perf_counter() - start
        start = time.perf_counter()
        batched = backend.generate(requests)
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        alone = [backend.generate([r])[0] for r in requests]
        alone_s = time.perf_counter() - start
    finally:
        backend.close()
    return {
        "width": width,
        "width_probe_s": probe_s,
        "batched_s": batched_s,
        "alone_s": alone_s,
        "tokens": sum(r.n_tokens for r in batched),
        "texts": [r.text for r in batched],
        "alone_equal": sum(a == b for a, b in zip(alone, batched, strict=True)),
        "at_limit": sum(r.finish_reason == "length" for r in batched),
        "max_tokens_seen": max((r.n_tokens for r in batched), default=0),
    }


def llama_cpp_sequential(
    path: Path, requests: list[Any], args: argparse.Namespace
) -> dict[str, Any]:
    from llama_cpp import Llama

    llm = Llama(
        str(path), n_ctx=args.n_ctx, n_threads=args.threads, n_threads_batch=args.threads,
        verbose=False,
    )  # fmt: skip
    texts, tokens = [], 0
    start = time.perf_counter()
    for r in requests:
        out: Any = llm.create_completion(
            r.prompt, max_tokens=r.max_tokens, stop=list(r.stop) or None, temperature=0.0
        )
        texts.append(out["choices"][0]["text"])
        tokens += int(out["usage"]["completion_tokens"])
    wall = time.perf_counter() - start
    llm.close()
    return {"wall_s": wall, "tokens": tokens, "texts": texts}


def lm_eval_server(path: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out = work / "lm_eval_out"
    start = time.perf_counter()
    with llama_server(path, n_ctx=args.n_ctx, threads=args.threads, log=work / "server.log") as url:
        model_args = (
            f"base_url={url}/v1/completions,model=model,tokenizer_backend=None,"
            "tokenized_requests=False"
        )
        cmd = [
            PY, "-m", "lm_eval", "--model", "local-completions", "--model_args", model_args,
            "--tasks", args.task, "--include_path", str(args.include_path),
            "--output_path", str(out), "--log_samples",
        ]  # fmt: skip
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        if args.num_fewshot is not None:
            cmd += ["--num_fewshot", str(args.num_fewshot)]
        if args.max_gen_toks:
            cmd += ["--gen_kwargs", f"max_gen_toks={args.max_gen_toks}"]
        run_timed(cmd, log=work / "lm_eval.log")
    wall = time.perf_counter() - start
    samples = sorted(lm_eval_samples(out), key=lambda s: s["doc_id"])
    texts = [s["resps"][0][0] for s in samples]
    return {"wall_s": wall, "texts": texts}


def count_tokens(path: Path, texts: list[str]) -> int:
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = LlamaModel(path_model=str(path), params=params, verbose=False)
    try:
        return sum(len(model.tokenize(t.encode(), False, False)) for t in texts)
    finally:
        model.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2,gemma", help="smollm2, gemma or GGUF paths")
    parser.add_argument("--task", default="demo_gsm8k_cot")
    parser.add_argument("--include-path", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=8, help="prompts (0: all)")
    parser.add_argument("--num-fewshot", type=int, default=None)
    parser.add_argument("--max-gen-toks", type=int, default=None, help="default: the task's")
    parser.add_argument("--n-ctx", type=int, default=8192, help="KV cells shared by the streams")
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument(
        "--no-stop",
        action="store_true",
        help="drop the task's stop sequences, so answers run to max_gen_toks or an end "
        "token (long answers; leaves out the server path, whose stops lm-eval sets)",
    )
    parser.add_argument("--skip-peer", action="store_true", help="leave out the server path")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    args.include_path = (args.include_path or default_include_path()).resolve()
    args.limit = args.limit or None
    figures: dict[str, Any] = {"machine": machine(), "runs": []}
    print(json.dumps(figures["machine"], indent=1))
    for name in args.models.split(","):
        path = model_path(name)
        captured = capture_requests(args.task, args.include_path, args.limit, args.num_fewshot)
        requests = gen_requests(captured.generate, args.max_gen_toks, no_stop=args.no_stop)
        limit = requests[0].max_tokens
        head = f"{path.name} / {args.task}: {len(requests)} prompts, max_gen_toks {limit}"
        print(f"\n== {head}, threads {args.threads}", flush=True)
        ours = ggufbench_paths(path, requests, args)
        seq = llama_cpp_sequential(path, requests, args)
        same = sum(a == b for a, b in zip(ours["texts"], seq["texts"], strict=True))
        row: dict[str, Any] = {
            "model": path.name, "prompts": len(requests), "max_gen_toks": requests[0].max_tokens,
            "width": ours["width"], "width_probe_s": ours["width_probe_s"],
            "tokens": ours["tokens"], "at_limit": ours["at_limit"],
            "batched_tok_s": ours["tokens"] / ours["batched_s"],
            "alone_tok_s": ours["tokens"] / ours["alone_s"],
            "sequential_tok_s": seq["tokens"] / seq["wall_s"],
            "alone_equal": ours["alone_equal"], "no_stop": args.no_stop,
            "sequential_equal": same,
        }  # fmt: skip
        if not (args.skip_peer or args.no_stop):
            with tempfile.TemporaryDirectory(prefix="ggufbench-bench-") as tmp:
                peer = lm_eval_server(path, args, Path(tmp))
            row["server_tok_s"] = count_tokens(path, peer["texts"]) / peer["wall_s"]
            row["server_equal"] = sum(
                a.strip() == b.strip() for a, b in zip(ours["texts"], peer["texts"], strict=False)
            )
        figures["runs"].append(row)
        report(row)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


def report(row: dict[str, Any]) -> None:
    n = row["prompts"]
    limit, width = row["max_gen_toks"], row["width"]
    print(f"generated {row['tokens']} tokens, {row['at_limit']} prompts stopped at {limit} tokens")
    probe = f"width {width}, found in {row['width_probe_s']:.2f} s, once per model and machine"
    print(f"ggufbench batched      {row['batched_tok_s']:7.1f} tok/s  ({probe})")
    same = f"same bytes: {row['alone_equal']}/{n}"
    print(f"ggufbench one by one   {row['alone_tok_s']:7.1f} tok/s  {same}")
    same = f"same text: {row['sequential_equal']}/{n}"
    print(f"llama-cpp-python seq.  {row['sequential_tok_s']:7.1f} tok/s  {same}")
    ratio = row["batched_tok_s"] / row["sequential_tok_s"]
    print(f"  batched / sequential llama-cpp-python: {ratio:.2f}x")
    print(
        f"  batched / ggufbench one by one:        {row['batched_tok_s'] / row['alone_tok_s']:.2f}x"
    )
    if "server_tok_s" in row:
        same = f"same text: {row['server_equal']}/{n}"
        print(f"lm-eval on the server  {row['server_tok_s']:7.1f} tok/s  (whole process)  {same}")
        print(f"  batched / lm-eval server: {row['batched_tok_s'] / row['server_tok_s']:.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
