"""ELYZA-tasks-100 format tasks: loading, validation and reproducible subsets.

A dataset is either the Hugging Face dataset ``elyza/ELYZA-tasks-100`` (split
``test``, loaded through ``datasets``) or a local ``.csv``, ``.jsonl``,
``.json`` or ``.parquet`` file with the columns ``input``, ``output`` and
``eval_aspect``. Each task keeps its row number in the source as ``doc_id``, so
a subset names the same tasks on every machine.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ggufbench.errors import TaskError

__all__ = [
    "HF_DATASET",
    "LOCAL_SUFFIXES",
    "REQUIRED_COLUMNS",
    "ElyzaTask",
    "demo_dataset_path",
    "is_local_dataset",
    "load_tasks",
    "select_subset",
    "tasks_from_rows",
]

HF_DATASET = "elyza/ELYZA-tasks-100"
REQUIRED_COLUMNS = ("input", "output", "eval_aspect")
LOCAL_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class ElyzaTask:
    """One task: the user message, a reference answer and its grading aspect."""

    doc_id: int
    input: str
    output: str
    eval_aspect: str


def demo_dataset_path() -> Path:
    """The bundled Japanese set written for ggufbench (not ELYZA-tasks-100)."""
    root = resources.files("ggufbench") / "data" / "elyza_demo" / "tasks.jsonl"
    return Path(str(root))


def is_local_dataset(dataset: str | Path) -> bool:
    """A path to a file, rather than a Hugging Face dataset name."""
    text = str(dataset)
    if isinstance(dataset, Path) or text.lower().endswith(LOCAL_SUFFIXES):
        return True
    return Path(text).is_file()


def load_tasks(
    dataset: str | Path = HF_DATASET,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int | None = None,
) -> list[ElyzaTask]:
    """Load a dataset, then keep ``limit`` tasks (a seeded sample when ``seed`` is set)."""
    if is_local_dataset(dataset):
        name = str(dataset)
        rows = _read_local(Path(dataset))
    else:
        name = f"the Hugging Face dataset {dataset} (split {split})"
        rows = _read_hub(str(dataset), split)
    return select_subset(tasks_from_rows(rows, name), limit=limit, seed=seed)


def select_subset(
    tasks: Sequence[ElyzaTask], *, limit: int | None = None, seed: int | None = None
) -> list[ElyzaTask]:
    """The first ``limit`` tasks, or with ``seed`` a random ``limit`` of them in source order."""
    if limit is not None and limit < 0:
        raise TaskError(f"limit {limit} is negative; give a count of tasks, or none for all")
    if limit is None or limit >= len(tasks):
        return list(tasks)
    if seed is None:
        return list(tasks[:limit])
    picked = sorted(random.Random(seed).sample(range(len(tasks)), limit))
    return [tasks[i] for i in picked]


def tasks_from_rows(rows: Iterable[Mapping[str, Any]], source: str) -> list[ElyzaTask]:
    """Validate rows (dicts with the three columns) into tasks numbered from 0."""
    tasks: list[ElyzaTask] = []
    for doc_id, row in enumerate(rows):
        _require_columns(row.keys(), f"row {doc_id + 1} of {source}")
        text = _cell(row["input"])
        if not text.strip():
            raise TaskError(f"row {doc_id + 1} of {source} has an empty input; fill it or drop it")
        tasks.append(ElyzaTask(doc_id, text, _cell(row["output"]), _cell(row["eval_aspect"])))
    if not tasks:
        raise TaskError(f"{source} holds no tasks; point the dataset at a file with rows")
    return tasks


def _require_columns(columns: Iterable[str], source: str) -> None:
    present = set(columns)
    for column in REQUIRED_COLUMNS:
        if column not in present:
            raise TaskError(
                f"{source} has no column '{column}'; an ELYZA-format dataset needs "
                f"the columns {', '.join(REQUIRED_COLUMNS)}"
            )


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return ""
    return value if isinstance(value, str) else str(value)


def _read_local(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        raise TaskError(f"the dataset {path} is a folder; give the path of a file in it")
    if not path.is_file():
        raise TaskError(f"the dataset file {path} does not exist; check the dataset path")
    suffix = path.suffix.lower()
    if suffix not in LOCAL_SUFFIXES:
        raise TaskError(
            f"{path} is not a .csv, .jsonl, .json or .parquet file; convert it to one of those"
        )
    try:
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".parquet":
            return _read_parquet(path)
        return _read_json(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TaskError(f"cannot read {path} ({type(exc).__name__}); check the file") from exc


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise TaskError(f"{path} is empty; an ELYZA-format csv needs a header row")
        _require_columns(reader.fieldnames, str(path))
        return [dict(row) for row in reader]


def _read_json(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{path} is not valid JSON (line {exc.lineno}); fix it") from exc
        return [_json_object(row, path, i + 1) for i, row in enumerate(rows)]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise TaskError(f"line {number} of {path} is not valid JSON; fix that line") from None
        rows.append(_json_object(value, path, number))
    return rows


def _json_object(value: Any, path: Path, number: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TaskError(
            f"record {number} of {path} is not a JSON object; write one task per object"
        )
    return value


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq  # a dependency of datasets

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise TaskError(f"{path} is not a readable parquet file ({type(exc).__name__})") from exc
    _require_columns(table.column_names, str(path))
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _read_hub(name: str, split: str) -> list[dict[str, Any]]:
    try:
        import datasets
    except ModuleNotFoundError:
        raise TaskError(
            f"loading {name} needs the 'datasets' package; run 'pip install datasets'"
        ) from None
    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as exc:  # network, auth and format errors all end here
        raise TaskError(
            f"cannot load the Hugging Face dataset {name} split {split} ({type(exc).__name__}); "
            "check the name and the network, or give a local .csv/.jsonl/.parquet path"
        ) from exc
    _require_columns(data.column_names or [], f"the Hugging Face dataset {name}")
    return [dict(row) for row in data]
