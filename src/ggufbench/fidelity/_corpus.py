"""The text, its tokens and the windows scored, exactly as llama-perplexity cuts them.

llama-perplexity (tools/perplexity/perplexity.cpp, ``perplexity`` and
``kl_divergence``) reads the file as bytes and drops one trailing newline
(``-f``), tokenizes the whole text once with ``add_special`` on (a BOS first
when the vocabulary adds one) and special-token parsing off, and needs at least
``2 * n_ctx`` tokens. It cuts ``len(tokens) // n_ctx`` windows of ``n_ctx``
tokens back to back (``--chunks`` takes the first N), replaces the first token
of every window by BOS when the vocabulary adds one, and scores the second half
of each window: the logits at positions ``first = n_ctx // 2`` to ``n_ctx - 2``
predict the tokens at ``first + 1`` to ``n_ctx - 1``, so ``n_ctx - 1 - first``
tokens per window (255 for 512).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ggufbench.engine import Runtime
from ggufbench.errors import ConfigError

__all__ = [
    "Window",
    "bos_of",
    "first_scored",
    "read_text",
    "skip_reason",
    "text_sha256",
    "tokenize",
    "vocab_identity",
    "windows",
]

Tokens = npt.NDArray[np.int32]


@dataclass(frozen=True)
class Window:
    """One chunk: its index in the text and the ``n_ctx`` tokens decoded for it."""

    index: int
    tokens: Tokens

    @property
    def targets(self) -> Tokens:
        """The scored tokens: positions ``first + 1`` to ``n_ctx - 1``."""
        return self.tokens[first_scored(len(self.tokens)) + 1 :]


def first_scored(n_ctx: int) -> int:
    """The first position whose logits are read (llama-perplexity's ``first``)."""
    return n_ctx // 2


def read_text(path: Path) -> bytes:
    """The corpus as llama-perplexity's ``-f`` reads it: bytes, one trailing newline dropped."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"fidelity text {path} is a folder; give a plain-text file") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"fidelity text {path} cannot be read ({reason}); check the path"
        ) from None
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data.strip():
        raise ConfigError(f"fidelity text {path} is empty; give a plain-text corpus")
    return data


def text_sha256(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def bos_of(rt: Runtime) -> int | None:
    """The model's BOS token when its vocabulary adds one, else None."""
    return rt.bos if rt.add_bos else None


def tokenize(rt: Runtime, text: bytes) -> Tokens:
    """The whole text tokenized once: BOS when the vocabulary adds it, no special parsing."""
    return np.asarray(rt.model.tokenize(text, True, False), dtype=np.int32)


def windows(
    tokens: Tokens, n_ctx: int, chunks: int | None = None, *, bos: int | None = None
) -> list[Window]:
    """The first ``chunks`` windows of ``n_ctx`` tokens (all when None).

    ``bos``: the token that replaces each window's first one, for a vocabulary that
    adds BOS (``bos_of(rt)``); None for one that does not.
    """
    if n_ctx < 4 or n_ctx % 2:
        raise ConfigError(f"fidelity n_ctx {n_ctx} must be an even number of at least 4")
    if len(tokens) < 2 * n_ctx:
        raise ConfigError(
            f"the fidelity text tokenizes to {len(tokens)} tokens, fewer than 2 x n_ctx "
            f"({2 * n_ctx}); give a longer text or a smaller n_ctx"
        )
    count = len(tokens) // n_ctx
    if chunks is not None:
        if chunks < 1:
            raise ConfigError(f"fidelity chunks must be at least 1, not {chunks}")
        count = min(count, chunks)
    out = []
    for index in range(count):
        window = np.array(tokens[index * n_ctx : (index + 1) * n_ctx], dtype=np.int32)
        if bos is not None:
            window[0] = bos
        out.append(Window(index, window))
    return out


def vocab_identity(rt: Runtime) -> str:
    """sha256 of the vocabulary: every token's text and attributes, and the BOS rule.

    Two models are compared token by token only when these are equal: the same id
    then stands for the same piece of text in both.
    """
    import llama_cpp

    digest = hashlib.sha256(f"{rt.n_vocab} {rt.add_bos} {rt.bos}\n".encode())
    for token in range(rt.n_vocab):
        text = llama_cpp.llama_vocab_get_text(rt.vocab, token) or b""
        attr = llama_cpp.llama_vocab_get_attr(rt.vocab, token)
        digest.update(len(text).to_bytes(4, "little") + text + int(attr).to_bytes(4, "little"))
    return digest.hexdigest()


def skip_reason(alias: str, baseline: str, vocab: str, baseline_vocab: str) -> str | None:
    """Why ``alias`` cannot be compared with the baseline, in one sentence (None: it can)."""
    if vocab == baseline_vocab:
        return None
    return (
        f"{alias} is skipped: its tokenizer differs from the baseline {baseline}'s, so their "
        "next-token distributions cannot be compared token by token"
    )
