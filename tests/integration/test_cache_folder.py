"""The tests' own cache folder: a real command writes there, never to the user's."""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from conftest import ggufbench
from ggufbench.gguf_file import cache_root
from ggufbench.testmodels import cache_dir


def hashed_paths(cache: Path) -> set[str]:
    """The files whose sha256 the cache folder remembers."""
    db = cache / "sha256.sqlite"
    if not db.is_file():
        return set()
    # read-only, waiting out a writer: the user's ggufbench may be running meanwhile
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)) as conn:
        return {row[0] for row in conn.execute("SELECT realpath FROM file_sha256")}


@pytest.fixture(scope="module")
def module_cache() -> Path:
    return cache_root()


def test_fixtures_wider_than_a_test_see_the_session_cache(
    module_cache: Path, session_cache: Path, user_cache: Path
) -> None:
    assert module_cache == session_cache != user_cache


def test_a_command_run_by_a_test_writes_only_the_test_cache(
    tmp_path: Path, smollm2: Path, ggufbench_cache: Path, user_cache: Path, session_models: Path
) -> None:
    assert cache_root() == ggufbench_cache != user_cache
    assert cache_dir().resolve() == session_models.resolve()
    # A path of its own: no other process can have hashed it into either cache.
    model = tmp_path / "own-copy.gguf"
    shutil.copyfile(smollm2, model)
    result = ggufbench("inspect", str(model), "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    real = os.path.realpath(model)
    assert real in hashed_paths(ggufbench_cache)
    assert real not in hashed_paths(user_cache)


def test_the_datasets_cache_is_a_temporary_folder_too() -> None:
    import datasets.config

    folder = Path(os.environ["HF_DATASETS_CACHE"])
    assert Path(datasets.config.HF_DATASETS_CACHE) == folder and folder.is_dir()
    assert folder.name.startswith("ggufbench-test-datasets-")  # the tests' own, wherever TMPDIR is
