"""The gateway's one settings object, built by ``ggufbench serve`` or by tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ggufbench.errors import ConfigError
from ggufbench.thinking import ThinkingFormat, thinking_format

QUAD_SYSTEM_PROMPT = (
    "Before answering, think in tagged sections: <think-task>what is asked</think-task>, "
    "<think-safety>whether answering is safe</think-safety>, "
    "<think-policy>what the rules allow</think-policy>. "
    "Then write the answer for the user inside <final>...</final>. "
    "Only the text inside <final> is shown to the user."
)

WITHHELD_MESSAGE = (
    "The model did not produce a complete final answer, so no answer is shown. "
    "Please try again or rephrase the request."
)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class GatewaySettings(BaseModel):
    """Everything ``ggufbench serve`` can be told; one model per gateway."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_path: Path | None = Field(None, description="GGUF file run in this process")
    base_url: str | None = Field(None, description="upstream OpenAI-compatible URL ending in /v1")
    upstream_model: str | None = Field(None, description="model name sent to the upstream")
    upstream_api_key_env: str | None = Field(None, description="env var with the upstream key")
    served_model_name: str | None = Field(None, description="name shown by GET /v1/models")
    thinking: str = Field("quad", description="quad, think, or a comma-separated tag list")
    system_prompt: str | None = Field(None, description="None: the built-in prompt")
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8080, ge=0, le=65535)
    api_key_env: str = Field("GGUFBENCH_API_KEY", description="env var with the API key(s)")
    audit_db: Path = Field(Path("ggufbench-audit.sqlite"), description="audit log SQLite file")
    audit_store_query: bool = Field(False, description="store queries, not only their sha256")
    commitment_key_env: str | None = Field(
        None, description="env var with the commitment key (64 hex); None: a file beside the log"
    )
    max_concurrency: int = Field(4, ge=1, le=1024, description="generations at once")
    max_queue: int = Field(64, ge=0, le=100_000, description="requests waiting for a slot")
    queue_timeout_s: float = Field(60.0, gt=0, le=3600)
    rate_limit_per_minute: int = Field(60, ge=0, description="per API key; 0 turns it off")
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    request_timeout_s: float = Field(600.0, gt=0, le=86_400)
    n_ctx: int = Field(4096, ge=256)
    n_gpu_layers: int = Field(0, ge=-1)
    n_threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_model(self) -> GatewaySettings:
        if (self.model_path is None) == (self.base_url is None):
            raise ValueError("give either --model PATH.gguf or --base-url URL, not both or none")
        if self.base_url is not None and not self.upstream_model:
            raise ValueError("--base-url needs --upstream-model NAME")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"--base-url {self.base_url} must start with http:// or https://")
        return self

    @model_validator(mode="after")
    def _hiding_format(self) -> GatewaySettings:
        fmt = thinking_format(self.thinking)
        if fmt.style == "none":
            raise ValueError("--thinking none would show everything; use quad, think or tag names")
        return self

    @property
    def thinking_format(self) -> ThinkingFormat:
        return thinking_format(self.thinking)

    @property
    def effective_system_prompt(self) -> str:
        """The operator's prompt, else the built-in one for quad (empty for others)."""
        if self.system_prompt is not None:
            return self.system_prompt
        return QUAD_SYSTEM_PROMPT if self.thinking_format.spec == "quad" else ""


def load_settings(**values: Any) -> GatewaySettings:
    """Build settings; a bad value becomes a one-sentence :class:`ConfigError`."""
    try:
        return GatewaySettings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{field}: {message}" if field else message) from None
