"""Quantization fidelity: ggufbench against llama.cpp's llama-perplexity, side by side.

For each baseline and its variants, on the same text, context and chunks:

  a  ggufbench in this process: the baseline's pass (load, tokenize, one compact
     record per chunk) once, then each variant's pass (load, measure every chunk
     against the records, combine);
  b  llama-perplexity (built from the pinned llama-cpp-python sdist by
     ggufbench.llama_tools): ``--kl-divergence-base FILE`` on the baseline, then
     ``--kl-divergence`` on each variant.

It prints every figure of both and the wall time of each pass (``--repeat N``:
the least of N alternating runs), the size of what
each keeps of the baseline, and the targets: mean KLD within 1% relative, same top
p within 0.2 points, PPL within 0.5%, a's time within 1.3x of b's two passes.

    .venv/bin/python bench/fidelity.py --chunks 4
    .venv/bin/python bench/fidelity.py --pairs smollm2:Q8_0,Q4_K_M,Q2_K --text corpus.txt

Variants are derived with llama.cpp's quantizer (ggufbench.testmodels.derived_path);
``--pairs BASE:QUANT,...`` takes smollm2, gemma or a GGUF path as BASE. Both tools run
with the same threads and without flash attention (the engine's attention path).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_count, fmt, machine, model_path, run_timed  # noqa: E402

DEFAULT_PAIRS = ["smollm2:Q8_0,Q4_K_M,Q2_K", "gemma:Q8_0,Q4_0,Q2_K"]
# llama-perplexity's labels -> (figure, scale to ggufbench's units)
LABELS = {
    "Mean PPL(Q)": ("ppl", 1.0),
    "Mean PPL(base)": ("ppl_base", 1.0),
    "Mean ln(PPL(Q)/PPL(base))": ("ln_ppl_ratio", 1.0),
    "Mean PPL(Q)/PPL(base)": ("ppl_ratio", 1.0),
    "Mean PPL(Q)-PPL(base)": ("ppl_diff", 1.0),
    "Mean    KLD": ("kld", 1.0),
    "Mean    Δp": ("delta_p", 0.01),
    "RMS Δp    ": ("rms_delta_p", 0.01),
    "Same top p": ("same_top_p", 0.01),
}
PERCENTILE_LABELS = {"Maximum": "max", "Median": "median", "Minimum": "min"}
NUMBER = r"(-?[0-9.]+(?:e[-+]?\d+)?|nan|-?inf)"


# -- a: ggufbench ---------------------------------------------------------------


def runtime(path: Path, args: argparse.Namespace) -> Any:
    from ggufbench.engine import Runtime

    return Runtime(
        path, n_ctx=args.n_ctx, n_batch=args.n_ctx, n_threads=args.threads, n_gpu_layers=0
    )


def ggufbench_baseline(path: Path, text: bytes, args: argparse.Namespace) -> dict[str, Any]:
    from ggufbench import fidelity

    start = time.perf_counter()
    rt = runtime(path, args)
    windows = fidelity.windows(
        fidelity.tokenize(rt, text), args.n_ctx, args.chunks, bos=fidelity.bos_of(rt)
    )
    records = {
        w.index: fidelity.baseline_chunk(rt, w, args.top_k, args.tail_samples) for w in windows
    }
    wall = time.perf_counter() - start
    vocab = fidelity.vocab_identity(rt)  # outside the timing: once per file, cacheable
    rt.close()
    size = sum(len(r) for r in records.values())
    return {"windows": windows, "records": records, "wall_s": wall, "bytes": size, "vocab": vocab}


def ggufbench_variant(path: Path, base: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from ggufbench import fidelity

    start = time.perf_counter()
    rt = runtime(path, args)
    stats = [fidelity.variant_chunk(rt, w, base["records"][w.index]) for w in base["windows"]]
    figures = fidelity.combine(fidelity.ChunkStats.from_bytes(s) for s in stats)
    wall = time.perf_counter() - start
    same_vocab = fidelity.vocab_identity(rt) == base["vocab"]
    rt.close()
    return {"figures": figures, "wall_s": wall, "same_vocab": same_vocab}


# -- b: llama-perplexity -----------------------------------------------------------


def perplexity_cmd(tool: Path, path: Path, args: argparse.Namespace) -> list[str]:
    threads = str(args.threads)
    return [str(tool), "-m", str(path), "-c", str(args.n_ctx), "-t", threads, "-tb", threads]


def llama_baseline(
    tool: Path, path: Path, text: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    base_file = work / f"{path.stem}.kld-base"
    cmd = perplexity_cmd(tool, path, args) + [
        "-f",
        str(text),
        "--kl-divergence-base",
        str(base_file),
    ]
    cmd += ["--chunks", str(args.chunks)] if args.chunks else []
    wall = run_timed(cmd + ["-fa", "off"], log=work / f"{path.stem}.base.log")
    return {"file": base_file, "wall_s": wall, "bytes": base_file.stat().st_size}


def llama_variant(
    tool: Path, path: Path, base: dict[str, Any], work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    log = work / f"{path.stem}.kld.log"
    cmd = perplexity_cmd(tool, path, args)
    cmd += ["--kl-divergence-base", str(base["file"]), "--kl-divergence", "-fa", "off"]
    wall = run_timed(cmd, log=log)
    return {"figures": parse_perplexity(log.read_text()), "wall_s": wall}


def parse_perplexity(out: str) -> dict[str, Any]:
    """The final statistics llama-perplexity printed, in ggufbench's figure names and units."""
    found: dict[str, Any] = {"kld_percentiles": {}}
    for label, (key, scale) in LABELS.items():
        m = re.search(re.escape(label) + rf"\s*:\s*{NUMBER}\s*±\s*{NUMBER}", out)
        if m:
            found[key] = {"value": float(m[1]) * scale, "stderr": float(m[2]) * scale}
    for m in re.finditer(rf"^\s*(Maximum|Median|Minimum|[0-9.]+%)\s+KLD:\s*{NUMBER}", out, re.M):
        label = PERCENTILE_LABELS.get(m[1]) or f"{float(m[1].rstrip('%')):.1f}"
        found["kld_percentiles"][label] = float(m[2])
    return found


# -- report -------------------------------------------------------------------------


def compare(name: str, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    fa, fb = a["figures"], b["figures"]
    rows = [
        (key, fa[key]["value"], fa[key]["stderr"], fb.get(key, {}).get("value"))
        for key, _ in LABELS.values()
    ]
    rows += [
        (f"kld {label}", value, None, fb["kld_percentiles"].get(label))
        for label, value in fa["kld_percentiles"].items()
    ]
    print(f"\n  {name}  ({fa['n_tokens']} tokens; a's tail sampling error of mean KLD "
          f"{fa['kld_sampling_stderr']:.2e})")  # fmt: skip
    print(f"  {'figure':<16} {'a: ggufbench':>22} {'b: llama-perplexity':>20} {'a vs b':>12}")
    for key, va, ea, vb in rows:
        err = f" ± {ea:.6f}" if ea is not None else ""
        rel = "-" if vb in (None, 0) else f"{(va - vb) / abs(vb) * 100:+.3f}%"
        print(f"  {key:<16} {va:>12.6f}{err:<11} {fmt(vb, '>20.6f')} {rel:>12}")
    kld_rel = abs(fa["kld"]["value"] / fb["kld"]["value"] - 1)
    top_pts = abs(fa["same_top_p"]["value"] - fb["same_top_p"]["value"]) * 100
    ppl_rel = abs(fa["ppl"]["value"] / fb["ppl"]["value"] - 1)
    print(f"  targets: KLD {kld_rel * 100:.3f}% (<= 1%), same top {top_pts:.3f} points (<= 0.2), "
          f"PPL {ppl_rel * 100:.3f}% (<= 0.5%)")  # fmt: skip
    return {"kld_rel": kld_rel, "same_top_points": top_pts, "ppl_rel": ppl_rel}


def interleaved(repeat: int, a: Any, b: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a() and b() in turn ``repeat`` times; the first results with each one's least wall.

    The machine may be shared: the least of several alternating runs is the time
    with the least interference, for both tools alike.
    """
    runs = [(a(), b()) for _ in range(repeat)]
    first_a, first_b = runs[0]
    first_a["wall_s"] = min(r[0]["wall_s"] for r in runs)
    first_b["wall_s"] = min(r[1]["wall_s"] for r in runs)
    return first_a, first_b


def run_pair(
    spec: str, text: Path, tool: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    from ggufbench import fidelity
    from ggufbench.testmodels import derived_path

    name, _, quants = spec.partition(":")
    base_path = model_path(name)
    variants = {q: derived_path(base_path, q) for q in quants.split(",") if q}
    print(f"\n== {base_path.name} (baseline) against {', '.join(variants)}", flush=True)
    data = fidelity.read_text(text)
    a_base, b_base = interleaved(
        args.repeat,
        lambda: ggufbench_baseline(base_path, data, args),
        lambda: llama_baseline(tool, base_path, text, work, args),
    )
    result: dict[str, Any] = {"baseline": base_path.name, "variants": {}}
    a_total, b_total = a_base["wall_s"], b_base["wall_s"]
    for quant, path in variants.items():
        a, b = interleaved(
            args.repeat,
            lambda p=path: ggufbench_variant(p, a_base, args),
            lambda p=path: llama_variant(tool, p, b_base, work, args),
        )
        targets = compare(f"{base_path.name} -> {quant}", a, b)
        ratio = (a_base["wall_s"] + a["wall_s"]) / (b_base["wall_s"] + b["wall_s"])
        print(f"  time: a {a_base['wall_s']:.1f} + {a['wall_s']:.1f} s, b {b_base['wall_s']:.1f} + "
              f"{b['wall_s']:.1f} s: a/b {ratio:.2f} (<= 1.3)")  # fmt: skip
        a_total += a["wall_s"]
        b_total += b["wall_s"]
        result["variants"][quant] = {
            "a": a["figures"], "b": b["figures"], "a_wall_s": a["wall_s"], "b_wall_s": b["wall_s"],
            "time_ratio": ratio, **targets,
        }  # fmt: skip
    print(f"  baseline kept: a {a_base['bytes'] / 2**20:.1f} MiB of records, "
          f"b {b_base['bytes'] / 2**20:.1f} MiB base file; all passes a {a_total:.1f} s, "
          f"b {b_total:.1f} s ({a_total / b_total:.2f}x)")  # fmt: skip
    result.update(
        a_base_wall_s=a_base["wall_s"], b_base_wall_s=b_base["wall_s"],
        a_bytes=a_base["bytes"], b_bytes=b_base["bytes"], a_total_s=a_total, b_total_s=b_total,
    )  # fmt: skip
    return result


def main() -> None:
    from ggufbench import fidelity
    from ggufbench.llama_tools import tool_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=DEFAULT_PAIRS, help="BASE:QUANT,QUANT ...")
    parser.add_argument("--text", type=Path, default=fidelity.bundled_corpus())
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=4, help="0: the whole text")
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--top-k", type=int, default=fidelity.DEFAULT_TOP_K)
    parser.add_argument("--tail-samples", type=int, default=fidelity.DEFAULT_TAIL_SAMPLES)
    parser.add_argument(
        "--repeat", type=int, default=1, help="time each pass N times, keep the least"
    )
    parser.add_argument("--json", type=Path, help="write the figures and the machine here")
    args = parser.parse_args()
    args.chunks = args.chunks or None
    tool = tool_path("llama-perplexity")
    print(json.dumps(machine()))
    with tempfile.TemporaryDirectory(prefix="fidelity-bench-") as tmp:
        results = [run_pair(spec, args.text, tool, Path(tmp), args) for spec in args.pairs]
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "args": vars(args) | {"text": str(args.text)},
                    "pairs": results,
                },
                indent=1,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
