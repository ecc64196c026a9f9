"""The thinking gateway: serves one model and shows only its final answer.

``create_app(settings)`` builds the FastAPI app that ``ggufbench serve`` runs;
the audit log can be checked with :func:`verify` and dumped with :func:`export`.
Clients get a keyed :func:`commitment` to the thinking, never its plain hash.
"""

from ggufbench.gateway._app import create_app
from ggufbench.gateway._audit import (
    AuditError,
    AuditLog,
    AuditRecord,
    AuditTampered,
    VerifyReport,
    export,
    row_hash,
    verify,
)
from ggufbench.gateway._auth import ApiKeys, key_id
from ggufbench.gateway._commit import commitment, key_file, key_from_env
from ggufbench.gateway._model import Finish, GenParams, ModelClient, ModelFailed, ModelTimeout
from ggufbench.gateway._settings import (
    QUAD_SYSTEM_PROMPT,
    WITHHELD_MESSAGE,
    GatewaySettings,
    load_settings,
)

__all__ = [
    "QUAD_SYSTEM_PROMPT",
    "WITHHELD_MESSAGE",
    "ApiKeys",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "AuditTampered",
    "Finish",
    "GatewaySettings",
    "GenParams",
    "ModelClient",
    "ModelFailed",
    "ModelTimeout",
    "VerifyReport",
    "commitment",
    "create_app",
    "export",
    "key_file",
    "key_from_env",
    "key_id",
    "load_settings",
    "row_hash",
    "verify",
]
