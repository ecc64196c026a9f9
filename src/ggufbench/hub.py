"""Whether datasets on the Hugging Face hub can be fetched, found out once per process.

``datasets`` retries a hub it cannot reach for about 25 s per dataset (five
retries with backoff) before it gives up, or falls back to its cache. One HEAD
request to the hub's endpoint, with a short timeout, answers the same question
at once, so the preflight can name every hub dataset it cannot fetch within
seconds, and a worker can read its datasets from the cache straight away.

No probe is made when ``datasets`` is already offline (``HF_DATASETS_OFFLINE=1``
or ``HF_HUB_OFFLINE=1``): it then loads what its cache holds. Local data
(a packaged builder such as ``json`` with ``data_files``, a folder, or a task's
``custom_dataset`` function) never needs the hub.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable

__all__ = [
    "PROBE_TIMEOUT_S",
    "endpoint",
    "is_hub_dataset",
    "offline",
    "read_from_cache_if_unreachable",
    "unreachable",
    "unreachable_problem",
    "unreachable_reason",
]

PROBE_TIMEOUT_S = 5.0


def offline() -> bool:
    """Whether ``datasets`` is in offline mode, as it read HF_DATASETS_OFFLINE/HF_HUB_OFFLINE."""
    from datasets import config

    return bool(config.HF_HUB_OFFLINE)


def endpoint() -> str:
    """The hub ``datasets`` talks to: HF_ENDPOINT, or https://huggingface.co."""
    from datasets import config

    return str(config.HF_ENDPOINT).rstrip("/")


def is_hub_dataset(path: str) -> bool:
    """Whether ``datasets.load_dataset(path)`` fetches from the hub (its own rule, in load.py)."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    if path.startswith("hf://"):
        return True
    if path in _PACKAGED_DATASETS_MODULES or os.path.exists(path):
        return False
    return "://" not in path and not os.path.isabs(path) and path.count("/") <= 1


@functools.cache
def unreachable_reason() -> str | None:
    """Why the hub's endpoint did not answer one HEAD request (None: it did). Asked once."""
    import httpx

    url = endpoint()
    try:
        response = httpx.head(url, timeout=PROBE_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as exc:
        return f"{url} did not answer: {type(exc).__name__}"
    if response.status_code >= 500:
        return f"{url} answered HTTP {response.status_code}"
    return None


def unreachable(datasets: Iterable[str]) -> str | None:
    """Why the hub datasets among ``datasets`` cannot be fetched now (None: they can be,
    they come from the cache in offline mode, or none of them is on the hub)."""
    if offline() or not any(is_hub_dataset(d) for d in datasets):
        return None
    return unreachable_reason()


def unreachable_problem(dataset: str, used_by: str, reason: str, local_fix: str) -> str:
    """The one sentence for a hub dataset that cannot be fetched."""
    return (
        f"the dataset {dataset} ({used_by}) is on the Hugging Face hub, which cannot be "
        f"reached ({reason}); set HF_DATASETS_OFFLINE=1 to load it from the datasets cache "
        f"(filled where the hub can be reached), or {local_fix}"
    )


def read_from_cache_if_unreachable(datasets: Iterable[str]) -> str | None:
    """Put this process's ``datasets`` (and ``huggingface_hub``) in offline mode when hub
    datasets are wanted and the hub does not answer, and say so on stderr (a worker's log);
    the reason, or None when nothing changed.

    A worker only loads datasets that its run's preflight loaded, so the cache holds them;
    reading it at once replaces ``datasets``' own 25 s of retries before the same fallback.
    The flags are module attributes read at each request, so setting them takes effect
    although both libraries were imported (and read the environment) before.
    """
    reason = unreachable(datasets)
    if reason is None:
        return None
    import datasets as ds
    from huggingface_hub import constants

    ds.config.HF_HUB_OFFLINE = True
    ds.config.HF_DATASETS_OFFLINE = True
    constants.HF_HUB_OFFLINE = True
    print(
        f"the Hugging Face hub cannot be reached ({reason}); datasets load from the cache",
        file=sys.stderr,
    )
    return reason
