"""ggufbench serve: the thinking-hiding gateway in front of one model."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from ggufbench.errors import ConfigError


def _system_prompt(text: str | None, file: Path | None) -> str | None:
    if text is not None and file is not None:
        raise ConfigError("give --system-prompt or --system-prompt-file, not both")
    if file is None:
        return text
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the system prompt file {file}: {exc.strerror}") from None


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        model: Path | None = typer.Option(None, "--model", help="a GGUF file run in-process"),
        base_url: str | None = typer.Option(
            None, "--base-url", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
        ),
        upstream_model: str | None = typer.Option(
            None, "--upstream-model", help="the model name on that server"
        ),
        upstream_api_key_env: str | None = typer.Option(
            None, "--upstream-api-key-env", help="env var with the upstream server's key"
        ),
        thinking: str = typer.Option("quad", help="quad, think, or thinking tag names (a,b,final)"),
        host: str = typer.Option(
            "127.0.0.1", help="address to bind (127.0.0.1: this machine only)"
        ),
        port: int = typer.Option(8080, help="port to listen on"),
        api_key_env: str = typer.Option(
            "GGUFBENCH_API_KEY", "--api-key-env", help="env var with the accepted API key(s)"
        ),
        audit_db: Path = typer.Option(
            Path("ggufbench-audit.sqlite"), "--audit-db", help="the audit log (SQLite)"
        ),
        audit_store_query: bool = typer.Option(
            False, "--audit-store-query", help="store queries in the audit log, not only a hash"
        ),
        commitment_key_env: str | None = typer.Option(
            None,
            "--commitment-key-env",
            help="env var with the commitment key as 64 hex digits "
            "(default: a key file beside the audit log, made on first start)",
        ),
        max_concurrency: int = typer.Option(4, help="generations at once"),
        max_queue: int = typer.Option(64, help="requests that may wait for a slot"),
        queue_timeout: float = typer.Option(60.0, help="seconds a request may wait for a slot"),
        rate_limit: int = typer.Option(60, help="requests per minute per API key (0: no limit)"),
        max_body_bytes: int = typer.Option(1_048_576, help="largest request body accepted"),
        timeout: float = typer.Option(600.0, help="seconds one generation may take"),
        system_prompt: str | None = typer.Option(
            None, help="replaces the built-in system prompt ('' for none)"
        ),
        system_prompt_file: Path | None = typer.Option(None, help="system prompt from a file"),
        model_name: str | None = typer.Option(None, help="name shown by GET /v1/models"),
        n_ctx: int = typer.Option(4096, help="context length for --model"),
        n_gpu_layers: int = typer.Option(0, help="layers on the GPU for --model (-1: all)"),
        n_threads: int | None = typer.Option(None, help="CPU threads for --model"),
    ) -> None:
        """Serve one model, showing only its final answer and auditing its thinking by hash."""
        from ggufbench.gateway import create_app, load_settings

        settings = load_settings(
            model_path=model,
            base_url=base_url,
            upstream_model=upstream_model,
            upstream_api_key_env=upstream_api_key_env,
            served_model_name=model_name,
            thinking=thinking,
            system_prompt=_system_prompt(system_prompt, system_prompt_file),
            host=host,
            port=port,
            api_key_env=api_key_env,
            audit_db=audit_db,
            audit_store_query=audit_store_query,
            commitment_key_env=commitment_key_env,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            queue_timeout_s=queue_timeout,
            rate_limit_per_minute=rate_limit,
            max_body_bytes=max_body_bytes,
            request_timeout_s=timeout,
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            n_threads=n_threads,
        )
        _run(create_app(settings), settings.host, settings.port)


def _run(app: object, host: str, port: int) -> None:
    import uvicorn

    from ggufbench.gateway._settings import LOOPBACK_HOSTS

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if host not in LOOPBACK_HOSTS:
        logging.getLogger("ggufbench.gateway").warning(
            "listening on %s: the gateway is reachable from other machines", host
        )
    uvicorn.run(app, host=host, port=port, server_header=False, log_level="info")  # type: ignore[arg-type]
