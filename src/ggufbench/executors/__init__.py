"""Where job attempts run: local worker processes, or Ray tasks across machines.

``execution.executor`` chooses: ``local`` (the default) or ``ray`` (the optional
extra ``ggufbench[ray]``). Both serve the scheduler through one contract
(:class:`Executor`); Ray is imported only when it is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ggufbench.errors import ConfigError
from ggufbench.executors._base import (
    ERROR_PREFIX,
    EXIT_BACKEND_ERROR,
    EXIT_NODE_FILE,
    EXIT_NOT_OWNER,
    EXIT_USER_ERROR,
    Ending,
    Executor,
    Handle,
    Order,
    ending_of,
)
from ggufbench.executors._local import WORKER_CMD, LocalExecutor, worker_env

if TYPE_CHECKING:
    from ggufbench.config import Execution
    from ggufbench.resources import Machine
    from ggufbench.spare import Spare

__all__ = [
    "ERROR_PREFIX",
    "EXIT_BACKEND_ERROR",
    "EXIT_NODE_FILE",
    "EXIT_NOT_OWNER",
    "EXIT_USER_ERROR",
    "WORKER_CMD",
    "Ending",
    "Executor",
    "Handle",
    "LocalExecutor",
    "Order",
    "ending_of",
    "make_executor",
    "ray_missing",
    "worker_env",
]


def make_executor(execution: Execution, machine: Machine, spare: Spare | None) -> Executor:
    """The executor the suite's ``execution`` asks for, connected and ready for a run.

    Raises ConfigError (one sentence, nothing started) when Ray is not installed or its
    cluster cannot be reached.
    """
    if execution.executor == "local":
        return LocalExecutor(machine, execution.max_parallel_jobs, spare=spare)
    if (missing := ray_missing()) is not None:
        raise ConfigError(missing)
    from ggufbench.executors._ray import RayExecutor

    return RayExecutor.connect(execution.address, execution.max_parallel_jobs)


def ray_missing() -> str | None:
    """The sentence for a suite that asks for Ray where it is not installed; None if it is."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return (
            "execution.executor is ray but Ray is not installed; "
            "install it with: pip install 'ggufbench[ray]'"
        )
    return None
