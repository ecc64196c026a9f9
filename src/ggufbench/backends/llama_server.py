"""Runner ``llama-server``: llama.cpp's own HTTP server, managed per job or attached.

Managed (the model has ``path``): each job starts ``llama-server`` on
127.0.0.1 on a free port, from ``server_bin``, else ``llama-server`` on PATH,
else ggufbench's own build (:func:`ggufbench.llama_tools.tool_path`). It gets
the model file, ``n_ctx`` per slot (``--ctx-size`` is ``n_ctx`` times
``parallel``), ``n_gpu_layers``, ``threads`` and ``parallel`` slots; the job
waits for ``/health`` and stops the server when it ends. The server never
outlives the job (:mod:`._server_process`). Identity: the file's sha256, as
for the in-process runner, and the server's build in the settings.

Attached (the model has ``base_url``): a server that is already running.
Identity: what ``/props`` exposes (model path, build, file type) and what
``/v1/models`` reports, plus the served name. A different file at the same
path with the same metadata cannot be told apart.

Requests go to the native ``/completion`` endpoint as token ids, tokenized by
the server's ``/tokenize`` exactly as the in-process runner tokenizes
(the model's BOS rule, special tokens parsed), so the prompt is exactly the one
lm-eval built; chat requests are rendered with the model's template by the same
code as the in-process runner. A prompt longer than the slot keeps its last
tokens, as in-process. The answer is streamed and the stream closed at the
first stop string (in the answer, for thinking models). Sampling: temperature
0 is greedy; top_k, min_p and the repetition penalty are switched off so only
temperature and top_p act, with the request's seed. ``cache_prompt`` is off by
default: each answer is then computed from its own prompt alone, whatever ran
before (see docs/servers.md).

Loglikelihood is not offered: see :data:`NO_LOGLIK`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from ggufbench.backends._base import BackendInfo, GenRequest, GenResult, RetryPolicy
from ggufbench.backends._chat import render_chat
from ggufbench.backends._http import Chunk, Finish, json_line, read_generation
from ggufbench.backends._server_http import NativeClient, StreamingBackend, served_model
from ggufbench.backends._server_process import HOST, ServerProcess, free_port, port_is_free
from ggufbench.errors import BackendError, ConfigError
from ggufbench.thinking import ThinkingFormat

__all__ = [
    "NO_LOGLIK",
    "RUNNER",
    "LlamaServerBackend",
    "ServerLaunch",
    "find_server_binary",
    "server_version",
]

RUNNER = "llama-server"
START_TIMEOUT_S = 300.0
PORT_ATTEMPTS = 3
NO_LOGLIK = (
    "llama-server cannot score the tokens of a prompt (it returns no prompt "
    "log-probabilities, llama.cpp issue #27174), and forcing the continuation one "
    "token at a time runs llama.cpp's single-token path, whose logits differ from "
    "batched prompt evaluation by up to 2.6 (measured in docs/servers.md); run "
    "loglikelihood tasks with runner: llama-cpp"
)


def find_server_binary(server_bin: str | None = None, *, build: bool = True) -> str | None:
    """``server_bin``, else ``llama-server`` on PATH, else ggufbench's build of it
    (built on first use, which takes minutes; with ``build`` false, None instead)."""
    if server_bin:
        found = shutil.which(server_bin)
        if found is None:
            raise ConfigError(
                f"server_bin {server_bin} is not an executable file; give the path of a "
                "llama-server binary, or leave server_bin out to use llama-server from PATH "
                "or ggufbench's own build"
            )
        return found
    found = shutil.which("llama-server")
    if found is not None:
        return found
    from ggufbench.llama_tools import tool_dir, tool_path

    built = tool_dir() / "bin" / "llama-server"
    if built.is_file() or build:
        return str(tool_path("llama-server"))
    return None


def server_version(binary: str, timeout_s: float = 60.0) -> str:
    """What ``binary --version`` prints: a check that the binary runs here."""
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(
            f"{binary} --version did not run ({type(exc).__name__}); set server_bin to a "
            "llama-server binary built for this machine"
        ) from None
    text = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        last = text.splitlines()[-1] if text else "no output"
        raise ConfigError(
            f"{binary} --version failed (exit {done.returncode}: {last[:200]}); set server_bin "
            "to a llama-server binary built for this machine"
        )
    lines = [line for line in text.splitlines() if line.startswith("version")]
    return (lines or text.splitlines() or [""])[0].strip()


@dataclass(frozen=True)
class ServerLaunch:
    """How a managed llama-server is started for one model file."""

    path: Path
    server_bin: str | None = None
    n_ctx: int = 4096
    n_gpu_layers: int = 0
    threads: int | None = None
    parallel: int = 1
    start_timeout_s: float = START_TIMEOUT_S
    log_path: Path | None = None  # the server's output; a temporary file when None

    def argv(self, binary: str, port: int) -> list[str]:
        layers = 999 if self.n_gpu_layers < 0 else self.n_gpu_layers  # -1: all layers
        argv = [binary, "--model", str(self.path), "--host", HOST, "--port", str(port)]
        argv += ["--ctx-size", str(self.n_ctx * self.parallel), "--parallel", str(self.parallel)]
        argv += ["--n-gpu-layers", str(layers)]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        return argv

    def start(self) -> tuple[ServerProcess, str, str]:
        """The running server, its URL and binary, once ``/health`` answers 200.

        A port taken by another program between choosing and binding it is
        chosen again (up to ``PORT_ATTEMPTS`` times).
        """
        if not self.path.is_file():
            raise ConfigError(f"model file {self.path} does not exist; correct its path")
        binary = find_server_binary(self.server_bin)
        assert binary is not None  # built here when it is found nowhere
        for attempt in range(PORT_ATTEMPTS):
            port = free_port()
            url = f"http://{HOST}:{port}"
            server = ServerProcess(self.argv(binary, port), name=RUNNER, log_path=self.log_path)
            try:
                server.wait_ready(
                    partial(_healthy, url),
                    timeout_s=self.start_timeout_s,
                    what=f"{url}/health to answer 200 ({self.path.name} loaded by {binary})",
                )
            except BackendError:
                lost_port = not server.alive() and not port_is_free(port)
                server.stop()
                if lost_port and attempt + 1 < PORT_ATTEMPTS:
                    continue
                raise
            return server, url, binary
        raise AssertionError("unreachable")  # pragma: no cover


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        return False


def _server_root(base_url: str) -> str:
    """The server's root URL; ``.../v1`` (as the openai runner takes it) is accepted."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class LlamaServerBackend(StreamingBackend):
    """Generation through llama-server; ``server`` is a :class:`ServerLaunch`
    (managed) or the base URL of a running server (attached).

    ``name``: the served model's name (attached; part of its identity).
    ``identity``: the model file's sha256 when the caller has it (managed).
    ``parallel`` of an attached server: requests in flight, default its slots.
    ``retries``: how often the cache wrapper tries a request again after a
    failure another attempt may not meet (``retry``).
    """

    no_loglik = NO_LOGLIK

    def __init__(
        self,
        server: ServerLaunch | str,
        *,
        name: str | None = None,
        parallel: int | None = None,
        cache_prompt: bool = False,
        chat_template: str | None = None,
        identity: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 600.0,
        retries: int = 2,
    ) -> None:
        self.launch = server if isinstance(server, ServerLaunch) else None
        self.cache_prompt = cache_prompt
        self.timeout_s = float(timeout_s)
        self.retry = RetryPolicy(retries=retries)
        self._server: ServerProcess | None = None
        self.binary: str | None = None  # a managed server's program
        self.client: NativeClient | None = None
        try:
            if self.launch is not None:
                self._server, url, self.binary = self.launch.start()
            else:
                url = _server_root(str(server))
            self.client = NativeClient(
                url, timeout_s=timeout_s, connections=64, api_key_env=api_key_env
            )
            self._read_props(chat_template, parallel)
            self.info = self._info(name, identity)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_model(
        cls, model: Mapping[str, Any], threads: int | None = None, log_path: Path | None = None
    ) -> LlamaServerBackend:
        """The backend for a model's settings as the worker has them (plan.model_settings);
        a managed server's output goes to ``log_path`` (a temporary file when None)."""
        common: dict[str, Any] = {
            "cache_prompt": bool(model.get("cache_prompt", False)),
            "chat_template": model.get("chat_template"),
        }
        if model.get("base_url"):
            return cls(
                str(model["base_url"]),
                name=model.get("model"),
                parallel=model.get("parallel"),
                api_key_env=model.get("api_key_env"),
                **common,
            )
        launch = ServerLaunch(
            Path(model["path"]),
            server_bin=model.get("server_bin"),
            n_ctx=int(model.get("n_ctx") or 4096),
            n_gpu_layers=int(model.get("n_gpu_layers") or 0),
            threads=model.get("threads") or threads,
            parallel=int(model.get("parallel") or 1),
            log_path=log_path,
        )
        return cls(launch, identity=model.get("sha256"), **common)

    @property
    def server(self) -> ServerProcess | None:
        """The managed server's process (None when attached, or once closed)."""
        return self._server

    # -- what the server says about itself ------------------------------------------

    def _read_props(self, chat_template: str | None, parallel: int | None) -> None:
        client = self._client()
        if self.launch is None:
            self._check_attached(client)
        props = client.get_json("/props")
        settings = props.get("default_generation_settings") or {}
        self.props = props
        self.n_ctx = int(settings.get("n_ctx") or (self.launch.n_ctx if self.launch else 0))
        if self.n_ctx < 2:
            raise BackendError(
                f"llama-server at {client.base_url} reports no context size in /props; "
                "use a llama-server build from 2025 or later"
            )
        self.slots = int(props.get("total_slots") or 1)
        self.concurrency = self.launch.parallel if self.launch else (parallel or self.slots)
        self.build = str(props.get("build_info") or "")
        self.chat_template: str | None = chat_template or props.get("chat_template") or None
        self._bos_text = str(props.get("bos_token") or "")
        self._eos_text = str(props.get("eos_token") or "")
        self._model_name = Path(str(props.get("model_path") or "model")).name

    def _check_attached(self, client: NativeClient) -> None:
        health = client.request("GET", "/health", ok=lambda code: code in (200, 503))
        if health.status_code == 503:
            raise BackendError(
                f"llama-server at {client.base_url} is still loading its model; "
                "wait until /health answers 200"
            )

    def _info(self, name: str | None, identity: str | None) -> BackendInfo:
        template = self.chat_template or ""
        settings: dict[str, Any] = {
            "api": "llama-server /completion on token ids",
            "n_ctx": self.n_ctx,
            "slots": self.slots,  # requests decoded together can round differently
            "cache_prompt": self.cache_prompt,
            "stops": "stream closed at the first stop string",
            "build": self.build,
            "chat_template": hashlib.sha256(template.encode()).hexdigest()[:16],
        }
        if self.launch is not None and self.binary is not None:
            from ggufbench.gguf_file import sha256_of

            # A build from a source archive reports no version ("b0-unknown"): the
            # program's own hash tells builds (and their CPU features) apart.
            settings["server"] = f"sha256:{sha256_of(Path(self.binary))[:16]}"
            settings["n_gpu_layers"] = self.launch.n_gpu_layers
            return BackendInfo(RUNNER, identity or sha256_of(self.launch.path), settings)
        return BackendInfo(RUNNER, self.attached_identity(name), settings)

    def attached_identity(self, name: str | None) -> str:
        """What the attached server exposes about its model, as one string."""
        client = self._client()
        props = self.props
        facts = {
            "model_path": props.get("model_path"),
            "model_ftype": props.get("model_ftype"),
            "build_info": props.get("build_info"),
            "name": name or props.get("model_alias"),
            "served": served_model(client, "/v1/models", name),
        }
        return f"llama-server {json.dumps(facts, sort_keys=True, separators=(',', ':'))}"

    def _client(self) -> NativeClient:
        if self.client is None:
            raise BackendError("this llama-server backend is closed")
        return self.client

    # -- requests -------------------------------------------------------------------

    def apply_chat_template(
        self, messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The chat as the model's template renders it (the in-process runner's code)."""
        return render_chat(
            self.chat_template,
            self._bos_text,
            self._eos_text,
            messages,
            add_generation_prompt,
            self._model_name,
        )

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids from the server's tokenizer (special tokens parsed)."""
        body = {"content": text, "add_special": add_special, "parse_special": True}
        tokens = self._client().post_json("/tokenize", body).get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise BackendError(f"{self._client().url('/tokenize')} answered without token ids")
        return tokens

    def _prompt(self, request: GenRequest) -> list[int]:
        if request.messages:
            text = self.apply_chat_template(request.messages)
            tokens = self.tokenize(text, add_special=False)
        else:
            tokens = self.tokenize(request.prompt)
        room = self.n_ctx - max(1, min(request.max_tokens, self.n_ctx // 2))
        return tokens[-room:]

    def _generate_one(self, request: GenRequest, thinking: ThinkingFormat | None) -> GenResult:
        try:
            prompt = self._prompt(request)
            body: dict[str, Any] = {
                "prompt": prompt,
                "n_predict": min(request.max_tokens, self.n_ctx),
                "temperature": request.temperature,
                "top_p": request.top_p,
                "top_k": 0,
                "min_p": 0.0,
                "repeat_penalty": 1.0,
                "seed": request.seed,
                "stream": True,
                "cache_prompt": self.cache_prompt,
            }
            if request.grammar is not None:
                body["grammar"] = request.grammar
            client = self._client()
            return client.generation(
                "/completion",
                body,
                lambda line: _chunk(line, client.url("/completion")),
                lambda chunks: read_generation(chunks, request.stop, thinking, len(prompt)),
                self.request_timeout_s(),
            )
        except BackendError as exc:
            server = self._server
            if server is not None and not server.alive():
                raise BackendError(server.exit_message("while answering a request")) from exc
            raise

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._server is not None:
            self._server.stop()
            self._server = None


def _chunk(line: str, url: str) -> Chunk | None:
    """One server-sent event of a streamed /completion (comments and pings: None)."""
    if not line.startswith("data:"):
        return None
    data = json_line(line[len("data:") :], url)
    if data is None:
        return None
    tokens = data.get("tokens")
    n_tokens = len(tokens) if isinstance(tokens, list) else 0
    text = data.get("content")
    text = text if isinstance(text, str) else ""
    if not data.get("stop"):
        return Chunk(text, n_tokens)
    finish: Finish = "length" if data.get("stop_type") == "limit" else "stop"
    return Chunk(text, n_tokens, finish, done=True)
