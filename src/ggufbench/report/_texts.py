"""Prompts and answer choices of a run, read back from its ledger.

lm-eval's samples keep a prompt's sha256 (``prompt_hash``), not its text; the
ledger's request cache has every prompt exactly as sent, so the explorer finds
the text by hashing the cached prompts. A multiple-choice sample keeps one
log-likelihood per choice; the cached answers of the same model and prompt give
the continuation that scored each of them, which names the choice. A run
without a ledger (or from an older layout) simply shows no prompt.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["LedgerTexts"]

_PROMPTS = """
SELECT DISTINCT json_extract(request, '$.context') FROM cache WHERE kind = 'loglikelihood'
UNION SELECT DISTINCT json_extract(request, '$.prompt') FROM cache WHERE kind = 'generate'
UNION SELECT DISTINCT json_extract(request, '$.text') FROM cache
  WHERE kind = 'loglikelihood_rolling'
"""
_CHOICES = """
SELECT model, json_extract(request, '$.context'), json_extract(request, '$.continuation'),
       json_extract(response, '$.logprob')
FROM cache WHERE kind = 'loglikelihood'
"""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LedgerTexts:
    """Prompt texts by sha256, and choice texts by (model, prompt sha256, log-likelihood)."""

    def __init__(self, ledger: Path) -> None:
        self.prompts: dict[str, str] = {}
        self._choices: dict[tuple[str, str], dict[float, str]] = {}
        if not ledger.is_file():
            return
        try:
            db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
            try:
                for (text,) in db.execute(_PROMPTS):
                    if isinstance(text, str):
                        self.prompts[_sha(text)] = text
                for model, context, continuation, logprob in db.execute(_CHOICES):
                    if isinstance(context, str) and isinstance(logprob, int | float):
                        key = (str(model), _sha(context))
                        self._choices.setdefault(key, {})[float(logprob)] = str(continuation)
            finally:
                db.close()
        except sqlite3.Error:  # a damaged or foreign ledger: the report goes on without texts
            self.prompts.clear()
            self._choices.clear()

    def prompt(self, prompt_hash: Any) -> str | None:
        return self.prompts.get(str(prompt_hash)) if prompt_hash else None

    def choices(self, model: str | None, prompt_hash: Any, logprobs: list[float]) -> list[str]:
        """The continuation behind each log-likelihood, or [] if any is unknown."""
        found = self._choices.get((str(model), str(prompt_hash)), {})
        texts = [found.get(float(lp)) for lp in logprobs]
        return [t for t in texts if t is not None] if all(t is not None for t in texts) else []


def json_cell(value: Any) -> str:
    """A short text for a value of a sample that has no better rendering."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
