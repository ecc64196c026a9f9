"""The deployment's commitment key, and the keyed commitment a client receives.

A client never sees a plain hash of the thinking: a short section (a safety
verdict such as ``safe``) could be confirmed by hashing guesses. It gets
``commitment(key, request_id, thinking_sha256)`` instead, an HMAC-SHA256 that
only holders of the deployment's key can compute or check, and that differs
for every request even when the thinking is the same.

The key is 32 random bytes. ``ggufbench serve`` keeps it in a file beside the
audit log (``<audit-db>.commitment-key``, mode 0600, made on first start) or
reads it, as 64 hex digits, from the variable named by ``--commitment-key-env``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from ggufbench.errors import ConfigError

KEY_BYTES = 32
DOMAIN = "ggufbench-thinking-commitment-v1"

log = logging.getLogger("ggufbench.gateway")


def commitment(key: bytes, request_id: str, thinking_sha256: str) -> str:
    """Hex HMAC-SHA256 over ``DOMAIN``, the audit id and the whole-thinking sha256."""
    message = f"{DOMAIN}\n{request_id}\n{thinking_sha256}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def key_file(audit_db: Path) -> Path:
    """Where the key of the deployment that writes ``audit_db`` is kept."""
    return audit_db.with_name(audit_db.name + ".commitment-key")


def key_from_env(name: str) -> bytes:
    """The key held by variable ``name`` as 64 hex digits."""
    text = os.environ.get(name, "").strip()
    if not text:
        raise ConfigError(
            f"the variable {name} given to --commitment-key-env is not set; "
            "export it with the deployment's commitment key (64 hex digits)"
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"the variable {name} must hold the commitment key as {2 * KEY_BYTES} hex digits, "
            "e.g. from: python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return key


def read_key_file(path: Path) -> bytes | None:
    """The key stored at ``path``, or None when there is no such file."""
    try:
        key = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the commitment key {path} ({exc.strerror}); "
            "give this user read access to it"
        ) from None
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"the commitment key {path} holds {len(key)} bytes instead of {KEY_BYTES}; "
            "restore the deployment's key file, or move it away to start a new key "
            "(earlier commitments then no longer verify)"
        )
    if mode & 0o077:
        log.warning("the commitment key %s is readable by other users; chmod 600 it", path)
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key at ``path``; a new random one, written with mode 0600, if there is none."""
    key = read_key_file(path)
    if key is not None:
        return key
    key = secrets.token_bytes(KEY_BYTES)
    # Written under a private name, then linked into place: two gateways starting
    # on one audit log at once never see a half-written key, and the second one
    # to link keeps the first one's key.
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            key = read_key_file(path) or key
    except OSError as exc:
        raise ConfigError(
            f"cannot create the commitment key {path} ({exc.strerror}); "
            "make its folder writable or give --commitment-key-env NAME"
        ) from None
    finally:
        temp.unlink(missing_ok=True)
    return key


def deployment_key(audit_db: Path, env_name: str | None) -> bytes:
    """The key ``serve`` commits with: from the variable if named, else beside the log."""
    if env_name:
        return key_from_env(env_name)
    return load_or_create_key(key_file(audit_db))
