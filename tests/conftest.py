"""Tests never write to the user's ggufbench cache.

``GGUFBENCH_CACHE`` points at a temporary folder for the whole session (set up
before any other fixture, so fixtures of every scope see it), and at a fresh one
for each test. Commands the tests start inherit it: they take ``os.environ`` when
they start.

The models that :mod:`ggufbench.testmodels` assembles or derives (gemma-3, quantized
variants) are made once per session: every test's cache has a ``models`` link to
the session's models folder, so only the first test that needs one pays for it.

The ``datasets`` library's cache (where lm-eval prepares tasks read from files)
is a temporary folder too, set before any test module imports the library.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ggufbench.gguf_file import cache_root

ENV = "GGUFBENCH_CACHE"
USER_CACHE = cache_root()  # read on import, before any fixture changes ENV


def pytest_configure(config: pytest.Config) -> None:
    folder = tempfile.mkdtemp(prefix="ggufbench-test-datasets-")
    os.environ["HF_DATASETS_CACHE"] = folder
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


@pytest.fixture(scope="session")
def user_cache() -> Path:
    """The cache folder ggufbench uses outside the tests; no test writes to it."""
    return USER_CACHE


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's GGUFBENCH_CACHE: what fixtures wider than one test use."""
    root = tmp_path_factory.mktemp("ggufbench-session-cache")
    (root / "models").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV, str(root))
        yield root


@pytest.fixture(scope="session")
def session_models(session_cache: Path) -> Path:
    """Where testmodels keeps assembled and derived models during this session."""
    return session_cache / "models"


@pytest.fixture(autouse=True)
def ggufbench_cache(
    tmp_path_factory: pytest.TempPathFactory, session_models: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """This test's own GGUFBENCH_CACHE, with the session's models linked in."""
    cache = tmp_path_factory.mktemp("ggufbench-cache")
    (cache / "models").symlink_to(session_models, target_is_directory=True)
    monkeypatch.setenv(ENV, str(cache))
    return cache
