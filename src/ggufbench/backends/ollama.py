"""Runner ``ollama``: models kept in Ollama, through Ollama's native API.

- lm-eval's prompts go to ``POST /api/generate`` with ``raw: true``: no
  template is applied, the prompt is exactly the one lm-eval built (Ollama
  tokenizes it). Chat requests (ELYZA) go to ``POST /api/chat`` and Ollama
  renders the model's template.
- ``options``: ``num_predict`` (the request's token limit), ``temperature``
  (0: greedy), ``top_p``, ``seed``, ``num_ctx``, and ``stop`` for a model that
  does not think; ``top_k``, ``min_p`` and ``repeat_penalty`` are switched off
  (Ollama's defaults are 40, 0 and 1.1), so only temperature and top_p act, as
  on the other runners. The answer is streamed and the stream closed at the
  first stop string (in the answer, for a thinking model).
- Thinking: for a model whose format is ``think`` and which Ollama says can
  think (``capabilities`` of ``/api/show``), requests carry ``think: true`` and
  Ollama returns the thinking in its own field; it is put back between
  ``<think>`` tags in the order it came, and the one thinking parser reads
  that (the backends' thinking wrapper), so hashes follow the usual recipe over
  the thinking text as Ollama returns it. Other thinking models get no
  ``think`` and their tags arrive in the text.
- The model is ``ollama_name``; without it, ``path`` (a GGUF file) is imported
  (the blob pushed to ``/api/blobs/sha256:DIGEST``, then ``/api/create`` with
  ``files``, or a ``FROM @sha256:DIGEST`` Modelfile on servers before 0.5.5)
  under a name derived from the file's sha256, and the import is announced.
- Identity: the model's digest from ``/api/tags``. :func:`check_unchanged`
  refuses a resume when the digest behind the name has changed.

Ollama cannot score prompts (loglikelihood) or render a chat template for a
prompt string; both are :class:`NotSupported` with one sentence.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from ggufbench.backends._base import (
    BackendInfo,
    GenRequest,
    GenResult,
    NotSupported,
    RetryPolicy,
)
from ggufbench.backends._http import Chunk, Finish, json_line, read_generation
from ggufbench.backends._server_http import NativeClient, StreamingBackend
from ggufbench.errors import BackendError, ConfigError
from ggufbench.thinking import ThinkingFormat

__all__ = [
    "DEFAULT_URL",
    "RUNNER",
    "OllamaBackend",
    "check_unchanged",
    "default_base_url",
    "import_gguf",
    "imported_name",
    "model_digest",
]

RUNNER = "ollama"
DEFAULT_URL = "http://127.0.0.1:11434"
UPLOAD_CHUNK = 1 << 20
THINK_TAG = "think"
NO_LOGLIK = (
    "Ollama cannot score the tokens of a prompt (it returns no prompt log-probabilities); "
    "run loglikelihood tasks with runner: llama-cpp"
)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_base_url() -> str:
    """``OLLAMA_HOST`` as Ollama's own client reads it, else the default address."""
    host = os.environ.get("OLLAMA_HOST", "").strip()
    if not host:
        return DEFAULT_URL
    scheme, _, rest = host.rpartition("://")
    rest = rest.rstrip("/")
    hostname, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit():
        hostname, port = rest, "11434"
    if hostname in ("", "0.0.0.0"):
        hostname = "127.0.0.1"
    return f"{scheme or 'http'}://{hostname}:{port}"


def _full_name(name: str) -> str:
    """``name`` with Ollama's default tag: ``smollm2`` is ``smollm2:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def imported_name(sha256: str) -> str:
    """The Ollama name an imported GGUF file gets: derived from its sha256."""
    return f"ggufbench-{sha256[:16]}:latest"


def _tags(client: NativeClient) -> list[dict[str, Any]]:
    models = client.get_json("/api/tags").get("models")
    return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []


def _find(client: NativeClient, name: str) -> dict[str, Any] | None:
    wanted = _full_name(name)
    for entry in _tags(client):
        if wanted in (
            _full_name(str(entry.get("name", ""))),
            _full_name(str(entry.get("model", ""))),
        ):
            return entry
    return None


def _digest(client: NativeClient, name: str) -> str:
    entry = _find(client, name)
    if entry is None or not entry.get("digest"):
        raise ConfigError(
            f"the Ollama server at {client.base_url} has no model '{name}'; pull it "
            f"('ollama pull {name}'), correct ollama_name, or give path to import a GGUF file"
        )
    return str(entry["digest"])


def model_digest(
    name: str, base_url: str | None = None, *, transport: httpx.BaseTransport | None = None
) -> str:
    """The digest ``/api/tags`` gives for ``name``: the Ollama model's identity."""
    with _client(base_url, transport) as client:
        return _digest(client, name)


def check_unchanged(
    name: str,
    digest: str,
    base_url: str | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
) -> None:
    """Refuse to resume when the model behind ``name`` is no longer ``digest``."""
    with _client(base_url, transport) as client:
        now = _digest(client, name)
        if now != digest:
            raise ConfigError(
                f"the Ollama model '{name}' at {client.base_url} has changed since this run "
                f"started (digest {digest[:12]} then, {now[:12]} now), so resuming would mix "
                "two models' answers; restore that model or start anew with --fresh"
            )


def _client(base_url: str | None, transport: httpx.BaseTransport | None) -> NativeClient:
    """A short-lived client for the module functions."""
    url = base_url or default_base_url()
    return NativeClient(url, timeout_s=60, transport=transport)


def import_gguf(client: NativeClient, path: Path, say: Callable[[str], None] = _say) -> str:
    """Import a GGUF file into Ollama (once); return the model's name."""
    from ggufbench.gguf_file import sha256_of

    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist; correct its path")
    sha = sha256_of(path)
    name = imported_name(sha)
    if _find(client, name) is not None:
        return name
    say(f"importing {path} into Ollama at {client.base_url} as {name}")
    blob = f"/api/blobs/sha256:{sha}"
    if client.request("HEAD", blob, ok=lambda code: code in (200, 404)).status_code == 404:
        with path.open("rb") as data:
            client.request("POST", blob, content=_file_chunks(data))
    file_name = path.name if path.name.lower().endswith(".gguf") else f"{path.name}.gguf"
    body = {"model": name, "files": {file_name: f"sha256:{sha}"}, "stream": False}
    done = client.request("POST", "/api/create", body=body, ok=lambda code: code < 500)
    if done.status_code >= 400:  # servers before 0.5.5 take a Modelfile instead of files
        legacy = {"model": name, "modelfile": f"FROM @sha256:{sha}", "stream": False}
        done = client.request("POST", "/api/create", body=legacy, ok=lambda code: code < 500)
    if done.status_code >= 400:
        raise BackendError(
            f"Ollama at {client.base_url} could not import {path} (HTTP {done.status_code}); "
            "check that Ollama supports this model's architecture"
        )
    return name


def _file_chunks(data: BinaryIO) -> Iterator[bytes]:
    while block := data.read(UPLOAD_CHUNK):
        yield block


class _Pieces:
    """Ollama's streamed lines as chunks of one text, the separate thinking field
    (when ``tag`` is set) put back between tags in the order it arrived."""

    def __init__(self, url: str, chat: bool, tag: str | None) -> None:
        self.url = url
        self.chat = chat
        self.tag = tag
        self.thinking = False
        self.counted = 0

    def __call__(self, line: str) -> Chunk | None:
        data = json_line(line, self.url)
        if data is None:
            return None
        source = data.get("message") if self.chat else data
        source = source if isinstance(source, dict) else {}
        text = _text(source.get("content" if self.chat else "response"))
        thought = _text(source.get("thinking")) if self.tag else ""
        piece = ""
        if thought:
            piece += "" if self.thinking else f"<{self.tag}>"
            piece += thought
            self.thinking = True
        if text and self.thinking:
            piece += f"</{self.tag}>"
            self.thinking = False
        piece += text
        n_tokens = 1 if (text or thought) else 0
        self.counted += n_tokens
        if not data.get("done"):
            return Chunk(piece, n_tokens)
        total = data.get("eval_count")
        extra = max(0, int(total) - self.counted) if isinstance(total, int) else 0
        finish: Finish = "length" if data.get("done_reason") == "length" else "stop"
        n_prompt = data.get("prompt_eval_count")
        return Chunk(
            piece, n_tokens + extra, finish, n_prompt if isinstance(n_prompt, int) else None, True
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class OllamaBackend(StreamingBackend):
    """Generation through an Ollama server.

    ``name``: the Ollama model (``ollama_name``); None to import ``path``.
    ``n_ctx``: sent as ``num_ctx``. ``concurrency``: requests in flight (the
    server's ``OLLAMA_NUM_PARALLEL`` decides how many it computes at once).
    ``retries``: how often the cache wrapper tries a request again after a
    failure another attempt may not meet (``retry``).
    """

    no_loglik = NO_LOGLIK

    def __init__(
        self,
        name: str | None = None,
        *,
        base_url: str | None = None,
        path: Path | None = None,
        n_ctx: int = 4096,
        concurrency: int = 1,
        timeout_s: float = 600.0,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
        say: Callable[[str], None] = _say,
    ) -> None:
        self.retry = RetryPolicy(retries=retries)
        self.client = NativeClient(
            base_url or default_base_url(),
            timeout_s=timeout_s,
            connections=max(4, concurrency),
            transport=transport,
        )
        try:
            if name is None:
                if path is None:
                    raise ConfigError(
                        "an ollama model needs ollama_name or path (a GGUF to import)"
                    )
                name = import_gguf(self.client, Path(path), say)
            self.digest = _digest(self.client, name)
            self.name = _full_name(name)
            shown = self.client.post_json("/api/show", {"model": self.name})
            caps = shown.get("capabilities")
            self.capabilities = (
                frozenset(c for c in caps if isinstance(c, str))
                if isinstance(caps, list)
                else frozenset()
            )
            version = self.client.get_json("/api/version").get("version")
        except BaseException:
            self.client.close()
            raise
        self.n_ctx = n_ctx
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        self.info = BackendInfo(
            RUNNER,
            f"ollama {self.digest}",
            {
                "api": "ollama /api/generate raw, /api/chat",
                "num_ctx": n_ctx,
                "options": "top_k 0, min_p 0, repeat_penalty 1",
                "stops": "stream closed at the first stop string",
                "ollama": str(version or ""),
            },
        )

    @classmethod
    def from_model(
        cls, model: Mapping[str, Any], threads: int | None = None, log_path: Path | None = None
    ) -> OllamaBackend:
        """The backend for a model's settings as the worker has them (plan.model_settings)."""
        path = model.get("path")
        return cls(
            model.get("ollama_name"),
            base_url=model.get("base_url"),
            path=Path(path) if path else None,
            n_ctx=int(model.get("n_ctx") or 4096),
            concurrency=int(model.get("parallel") or model.get("concurrency") or 1),
        )

    def apply_chat_template(
        self, messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True
    ) -> str:
        raise NotSupported(
            "Ollama renders chat templates itself and cannot return one as text; run "
            "chat-templated lm-eval tasks with runner: llama-cpp or llama-server"
        )

    def _think_tag(self, thinking: ThinkingFormat | None) -> str | None:
        """``think`` when Ollama should return this model's thinking in its own field."""
        if thinking is None or thinking.style != "think" or not thinking.is_thinking(THINK_TAG):
            return None
        return THINK_TAG if "thinking" in self.capabilities else None

    def _body(self, request: GenRequest, tag: str | None) -> tuple[str, dict[str, Any]]:
        options: dict[str, Any] = {
            "num_predict": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "top_k": 0,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "seed": request.seed,
            "num_ctx": self.n_ctx,
        }
        body: dict[str, Any] = {"model": self.name, "stream": True, "options": options}
        if tag is not None:
            body["think"] = True
        if request.messages:
            body["messages"] = [{"role": r, "content": c} for r, c in request.messages]
            return "/api/chat", body
        body["prompt"] = request.prompt
        body["raw"] = True
        return "/api/generate", body

    def _generate_one(self, request: GenRequest, thinking: ThinkingFormat | None) -> GenResult:
        tag = self._think_tag(thinking)
        path, body = self._body(request, tag)
        if request.stop and (thinking is None or thinking.style == "none"):
            body["options"]["stop"] = list(request.stop)
        url = self.client.url(path)
        return self.client.generation(
            path,
            body,
            _Pieces(url, bool(request.messages), tag),
            lambda chunks: read_generation(chunks, request.stop, thinking),
            self.request_timeout_s(),
        )

    def close(self) -> None:
        self.client.close()
