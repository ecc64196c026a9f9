"""The errors ggufbench raises on purpose.

Every one carries a single sentence that names the thing at fault and the fix;
the CLI prints it without a traceback and exits with ``exit_code``::

    GgufbenchError            exit 2 unless noted
     +-- ConfigError          the suite file or a command-line option is wrong
     +-- ModelFileError       a model file is missing, truncated or not a GGUF
     +-- TaskError            an lm-eval task or dataset cannot be loaded
     +-- LedgerError          the run directory or its ledger cannot be used
     +-- BackendError         a backend failed to answer (exit 1: the run went on)
     |    +-- BackendTimeout  a request took longer than its timeout
     +-- ClusterLost          a driver outside the Ray cluster lost its connection
                              (exit 130: interrupted, resumable)

A suite key that is read but has no effect is not an error: it is a
``SuiteWarning`` (a ``UserWarning``), which the CLI prints on stderr.
"""

from __future__ import annotations


class GgufbenchError(Exception):
    """Base class: a user-facing failure with a one-sentence message."""

    exit_code = 2


class ConfigError(GgufbenchError):
    """The suite file or a command-line option is invalid."""


class ModelFileError(GgufbenchError):
    """A model file is missing, unreadable, truncated or not a GGUF file."""


class TaskError(GgufbenchError):
    """An lm-eval task name does not resolve or its dataset does not load."""


class LedgerError(GgufbenchError):
    """The run directory, its lock or its ledger cannot be used."""


class BackendError(GgufbenchError):
    """A backend (in-process or HTTP) failed to answer a request."""

    exit_code = 1


class BackendTimeout(BackendError):
    """A backend request took longer than its timeout."""


class ClusterLost(GgufbenchError):
    """A driver outside the cluster lost its connection for good (Ray's client gave up
    reconnecting), which ends its tasks: the run stops as an interrupted one, resumable."""

    exit_code = 130


class SuiteWarning(UserWarning):
    """A key of a suite file is read but ignored (it has no place in a suite)."""
