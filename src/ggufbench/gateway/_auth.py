"""Bearer API keys: read from one environment variable, compared in constant time.

The variable holds one key or several separated by commas (for rotation). A
key is identified in the audit log by ``key id``: the first 16 hex digits of
its sha256, never the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

from ggufbench.errors import ConfigError

log = logging.getLogger("ggufbench.gateway")

MIN_KEY_CHARS = 16


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


class ApiKeys:
    """The accepted keys, kept only as sha256 digests."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ConfigError("no API key given; the gateway never runs without one")
        self._digests = [(hashlib.sha256(k.encode()).digest(), key_id(k)) for k in keys]

    @classmethod
    def from_env(cls, var: str) -> ApiKeys:
        raw = os.environ.get(var, "")
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if not keys:
            raise ConfigError(
                f"environment variable {var} holds no API key; set it (e.g. "
                f"export {var}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))'))"
            )
        if any(len(k) < MIN_KEY_CHARS for k in keys):
            log.warning("an API key in %s is shorter than %d characters", var, MIN_KEY_CHARS)
        return cls(keys)

    def check(self, authorization: str | None) -> str | None:
        """The key id for a valid ``Authorization: Bearer KEY`` header, else None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        given = hashlib.sha256(token.strip().encode("utf-8", "replace")).digest()
        found = None
        for digest, ident in self._digests:  # no early exit: same work for every key
            if hmac.compare_digest(given, digest):
                found = ident
        return found
