"""What the request cache keys of fidelity chunks are made of.

A baseline record's key is the request cache key (ggufbench.cache_key) of the
baseline's backend with the request :func:`baseline_request`; a variant chunk's key
is the variant's backend key with :func:`variant_request`, which holds the baseline
record's key. Both model files' identities (and the llama.cpp build and device of
each pass) are therefore in every variant key, and a record is never read for
another text, window, context, k or m. In a run, :func:`index_key` finds the index of
the baseline's records, which the other models' jobs read.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = [
    "BASELINE_KIND",
    "FORMAT",
    "INDEX_KIND",
    "VARIANT_KIND",
    "baseline_request",
    "index_key",
    "variant_request",
]

# Bump when records or chunk results are computed or laid out differently.
FORMAT = 1
BASELINE_KIND = "fidelity_baseline"
VARIANT_KIND = "fidelity_variant"
INDEX_KIND = "fidelity_index"


def index_key(baseline_job: str, benchmark: dict[str, Any]) -> str:
    """The key of a run's index of the baseline's records (their keys, the vocabulary's
    identity): what every other model's job needs of the baseline's, found in the ledger
    by the baseline job's id and the benchmark's settings, which the models' jobs share.
    A run's ledger is its own, so these name one baseline pass."""
    payload = {"kind": INDEX_KIND, "format": FORMAT, "job": baseline_job, "benchmark": benchmark}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def baseline_request(*, text_sha256: str, n_ctx: int, chunk: int, k: int, m: int) -> dict[str, Any]:
    return {"format": FORMAT, "text": text_sha256, "n_ctx": n_ctx, "chunk": chunk, "k": k, "m": m}


def variant_request(
    *, baseline_key: str, text_sha256: str, n_ctx: int, chunk: int
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "baseline": baseline_key,
        "text": text_sha256,
        "n_ctx": n_ctx,
        "chunk": chunk,
    }
