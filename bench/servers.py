"""Models served over HTTP: speed of a managed llama-server, and why it cannot score.

speed   Greedy generation on the prompts of a generate_until task as lm-eval builds
        them (default: the bundled gsm8k-style demo_gsm8k_cot): ggufbench's in-process
        engine (all prompts in one call), then a managed llama-server (runner
        llama-server) with --parallel 1 and 4, each sent every prompt at once and
        answering up to ``parallel`` at a time (``--cache-prompt``: also with the
        server's prompt cache on). Tokens per second are the tokens each path reports
        generating over the wall time of the generation (the server's count includes
        the tokens of the stop string that ended an answer); the server's start (load,
        /health) is timed apart. Also: how many answers equal the in-process ones.

ubatch  The logits of the same tokens evaluated with n_ubatch 512 (batched prompt
        evaluation, what a loglikelihood scorer uses) and n_ubatch 1 (llama.cpp's
        single-token path, what forcing a continuation token by token through a
        server runs), with llama-cpp-python's low-level API: the largest and mean
        |difference| of a logit, of the log-probability of the next token, and how
        often the top token differs.

    .venv/bin/python bench/servers.py speed  --models smollm2 --limit 16 --threads 1 --cache-prompt
    .venv/bin/python bench/servers.py ubatch --models smollm2,gemma --positions 400
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    capture_requests,
    cpu_count,
    default_include_path,
    machine,
    model_path,
)
from generate import gen_requests  # noqa: E402

# -- speed ------------------------------------------------------------------------------


def in_process(path: Path, requests: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    from ggufbench.backends.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend(path, n_ctx=args.n_ctx, n_threads=args.threads)
    try:
        _ = backend.generation_width  # measured once per model and machine; not timed here
        start = time.perf_counter()
        results = backend.generate(requests)
        wall = time.perf_counter() - start
    finally:
        backend.close()
    return {"wall_s": wall, "results": results}


def managed_server(
    path: Path, requests: list[Any], args: argparse.Namespace, parallel: int, cache: bool
) -> dict[str, Any]:
    from ggufbench.backends.llama_server import LlamaServerBackend, ServerLaunch

    launch = ServerLaunch(
        path, n_ctx=args.slot_ctx, threads=args.threads, parallel=parallel,
        server_bin=args.server_bin,
    )  # fmt: skip
    start = time.perf_counter()
    backend = LlamaServerBackend(launch, cache_prompt=cache)
    start_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        results = backend.generate(requests)
        wall = time.perf_counter() - start
    finally:
        backend.close()
    return {"wall_s": wall, "start_s": start_s, "results": results}


def speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.models.split(","):
        path = model_path(name)
        captured = capture_requests(args.task, args.include_path, args.limit, args.num_fewshot)
        requests = gen_requests(captured.generate, args.max_gen_toks)
        head = f"{path.name} / {args.task}: {len(requests)} prompts"
        print(f"\n== {head}, max_gen_toks {requests[0].max_tokens}, threads {args.threads}")
        base = in_process(path, requests, args)
        texts = [r.text for r in base["results"]]
        row: dict[str, Any] = {"model": path.name, "prompts": len(requests), "paths": {}}
        paths = {"in-process": base}
        for cache in [False, True] if args.cache_prompt else [False]:
            for parallel in args.parallel:
                label = f"llama-server parallel {parallel}" + (", cache_prompt" if cache else "")
                paths[label] = managed_server(path, requests, args, parallel, cache)
        for label, run in paths.items():
            tokens = sum(r.n_tokens for r in run["results"])
            same = sum(r.text == t for r, t in zip(run["results"], texts, strict=True))
            figures = {
                "tokens": tokens,
                "wall_s": round(run["wall_s"], 2),
                "tok_s": round(tokens / run["wall_s"], 1),
                "same_as_in_process": same,
            }
            if "start_s" in run:
                figures["start_s"] = round(run["start_s"], 2)
            row["paths"][label] = figures
            start = f", start {figures['start_s']:.1f} s" if "start_s" in figures else ""
            print(f"{label:40s} {figures['tok_s']:7.1f} tok/s  {tokens} tokens in "
                  f"{figures['wall_s']:.1f} s{start}, same text as in-process "
                  f"{same}/{len(requests)}", flush=True)  # fmt: skip
        rows.append(row)
    return rows


# -- ubatch -----------------------------------------------------------------------------


def text_tokens(lib: Any, vocab: Any, n: int) -> list[int]:
    """The first ``n`` tokens of the bundled wikitext-style demo text."""
    rows = (default_include_path() / "demo_wikitext" / "data" / "test.jsonl").read_text()
    text = "\n".join(json.loads(line)["page"] for line in rows.splitlines() if line.strip())
    data = text.encode()
    buf = (lib.llama_token * (len(data) + 8))()
    count = lib.llama_tokenize(vocab, data, len(data), buf, len(buf), True, False)
    if count < n:
        raise SystemExit(f"the demo text has only {count} tokens; ask for fewer --positions")
    return list(buf[:n])


def all_logits(lib: Any, model: Any, tokens: list[int], n_ubatch: int, threads: int) -> Any:
    """Logits at every position of ``tokens`` decoded in one call of n_batch 512."""
    params = lib.llama_context_default_params()
    params.n_ctx = 512
    params.n_batch = 512
    params.n_ubatch = n_ubatch
    params.n_threads = params.n_threads_batch = threads
    params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.no_perf = True
    ctx = lib.llama_init_from_model(model, params)
    batch = lib.llama_batch_init(len(tokens), 0, 1)
    try:
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, 1
        if lib.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
        pointer = ctypes.cast(lib.llama_get_logits(ctx), ctypes.POINTER(ctypes.c_float))
        return np.ctypeslib.as_array(pointer, shape=(len(tokens), n_vocab)).copy()
    finally:
        lib.llama_batch_free(batch)
        lib.llama_free(ctx)


def log_softmax(x: Any) -> Any:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def ubatch(args: argparse.Namespace) -> list[dict[str, Any]]:
    import llama_cpp as lib

    lib.llama_backend_init()
    rows = []
    for name in args.models.split(","):
        path = model_path(name)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        model = lib.llama_model_load_from_file(str(path).encode(), params)
        try:
            tokens = text_tokens(lib, lib.llama_model_get_vocab(model), args.positions)
            batched = all_logits(lib, model, tokens, 512, args.threads)
            single = all_logits(lib, model, tokens, 1, args.threads)
        finally:
            lib.llama_model_free(model)
        delta = np.abs(batched - single)
        nxt = np.array(tokens[1:])
        rows_ = np.arange(len(tokens) - 1)
        lp_b, lp_s = log_softmax(batched[:-1]), log_softmax(single[:-1])
        lp_delta = np.abs(lp_b[rows_, nxt] - lp_s[rows_, nxt])
        row = {
            "model": path.name,
            "positions": len(tokens),
            "max_abs_logit_delta": float(delta.max()),
            "mean_abs_logit_delta": float(delta.mean()),
            "max_abs_next_token_logprob_delta": float(lp_delta.max()),
            "top_token_differs": int((batched.argmax(1) != single.argmax(1)).sum()),
        }
        rows.append(row)
        print(
            f"{path.name}: {len(tokens)} positions, max |d logit| "
            f"{row['max_abs_logit_delta']:.3f}, mean {row['mean_abs_logit_delta']:.4f}, "
            f"max |d logprob of next token| {row['max_abs_next_token_logprob_delta']:.3f}, "
            f"top token differs at {row['top_token_differs']}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["speed", "ubatch"])
    parser.add_argument("--models", default="smollm2", help="smollm2, gemma or GGUF paths")
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--task", default="demo_gsm8k_cot")
    parser.add_argument("--include-path", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=8, help="prompts (0: all)")
    parser.add_argument("--num-fewshot", type=int, default=None)
    parser.add_argument("--max-gen-toks", type=int, default=None, help="default: the task's")
    parser.add_argument("--n-ctx", type=int, default=8192, help="in-process KV cells")
    parser.add_argument("--slot-ctx", type=int, default=2048, help="context of a server slot")
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--cache-prompt", action="store_true", help="speed: also each parallel with cache_prompt"
    )
    parser.add_argument("--server-bin", default=None, help="default: PATH, then the shared build")
    parser.add_argument("--positions", type=int, default=400, help="ubatch: tokens compared")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    args.include_path = (args.include_path or default_include_path()).resolve()
    args.limit = args.limit or None
    figures: dict[str, Any] = {"machine": machine()}
    print(json.dumps(figures["machine"], indent=1))
    figures[args.what] = speed(args) if args.what == "speed" else ubatch(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
