"""Data loading, detokenization and metrics for ``demo_wikitext``.

``wikitext_detokenizer`` and ``process_results`` do what lm-eval's
``wikitext/preprocess_wikitext.py`` does, so the scores are computed the same way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import datasets

from ggufbench.data import load_jsonl_splits


def load(**_task_metadata: Any) -> datasets.DatasetDict:
    """The ``test`` split (lm-eval passes metadata, unused here)."""
    return load_jsonl_splits(Path(__file__).resolve().parent / "data")


def wikitext_detokenizer(doc: dict[str, Any]) -> str:
    """The page as plain text: undo wikitext's spaces around punctuation and numbers."""
    string: str = doc["page"]
    # contractions
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    # number separators
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    # punctuation
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    # double brackets
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    # miscellaneous
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


def process_results(doc: dict[str, Any], results: list[float]) -> dict[str, tuple[float, int]]:
    """Per-page (loglikelihood, count) pairs; words and bytes are counted on the raw page."""
    (loglikelihood,) = results
    words = len(re.split(r"\s+", doc["page"]))
    size = len(doc["page"].encode("utf-8"))
    return {
        "word_perplexity": (loglikelihood, words),
        "byte_perplexity": (loglikelihood, size),
        "bits_per_byte": (loglikelihood, size),
    }
