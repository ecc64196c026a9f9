"""Loading ELYZA-format datasets: local files, the bundled set, subsets, bad input."""

from __future__ import annotations

import csv
import json
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from ggufbench.benchmarks.elyza_data import (
    HF_DATASET,
    ElyzaTask,
    demo_dataset_path,
    is_local_dataset,
    load_tasks,
    select_subset,
)
from ggufbench.errors import TaskError

ROWS = [{"input": f"問題{i}", "output": f"答え{i}", "eval_aspect": f"基準{i}"} for i in range(10)]


def write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def write_csv(path: Path, rows: Sequence[Mapping[str, object]], fields: list[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_bundled_set_is_valid_and_large_enough() -> None:
    path = demo_dataset_path()
    tasks = load_tasks(path)
    assert len(tasks) >= 24
    assert [t.doc_id for t in tasks] == list(range(len(tasks)))
    assert all(t.input.strip() and t.output.strip() and t.eval_aspect.strip() for t in tasks)
    assert "NOT ELYZA-tasks-100" in (path.parent / "README.md").read_text("utf-8")


def test_jsonl_csv_json_and_parquet_load_the_same(tmp_path: Path) -> None:
    expected = [ElyzaTask(i, f"問題{i}", f"答え{i}", f"基準{i}") for i in range(10)]
    jsonl = write_jsonl(tmp_path / "t.jsonl", ROWS)
    table = write_csv(tmp_path / "t.csv", ROWS, ["input", "output", "eval_aspect"])
    array = tmp_path / "t.json"
    array.write_text(json.dumps(ROWS, ensure_ascii=False), "utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet)
    for path in (jsonl, table, array, parquet):
        assert load_tasks(path) == expected, path
        assert load_tasks(str(path)) == expected, path


def test_limit_and_seed(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", ROWS)
    assert [t.doc_id for t in load_tasks(path, limit=3)] == [0, 1, 2]
    first = [t.doc_id for t in load_tasks(path, limit=4, seed=7)]
    assert first == [t.doc_id for t in load_tasks(path, limit=4, seed=7)]
    assert first == sorted(first) and len(set(first)) == 4
    assert first != [t.doc_id for t in load_tasks(path, limit=4, seed=8)]
    assert len(load_tasks(path, limit=100, seed=1)) == 10
    assert select_subset([], limit=0) == []
    with pytest.raises(TaskError, match="negative"):
        load_tasks(path, limit=-1)


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "t.csv", ROWS, ["input", "output"])
    with pytest.raises(TaskError, match=r"t\.csv has no column 'eval_aspect'"):
        load_tasks(table)
    rows = [{"input": "q", "eval_aspect": "a"}]
    with pytest.raises(TaskError, match=r"t\.jsonl has no column 'output'"):
        load_tasks(write_jsonl(tmp_path / "t.jsonl", rows))


def test_bad_rows_and_files_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="does not exist"):
        load_tasks(tmp_path / "missing.jsonl")
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"input": "q", "output": "", "eval_aspect": ""}\n{oops\n', "utf-8")
    with pytest.raises(TaskError, match=r"line 2 of .*b\.jsonl"):
        load_tasks(broken)
    empty_input = write_jsonl(
        tmp_path / "e.jsonl", [{"input": " ", "output": "", "eval_aspect": ""}]
    )
    with pytest.raises(TaskError, match="row 1 .* empty input"):
        load_tasks(empty_input)
    with pytest.raises(TaskError, match="no tasks"):
        load_tasks(write_jsonl(tmp_path / "n.jsonl", []))
    with pytest.raises(TaskError, match="not a JSON object"):
        load_tasks(write_jsonl(tmp_path / "l.jsonl", [["a"]]))


def test_null_cells_become_empty_text(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"input": "q", "output": None, "eval_aspect": 3}]
    [task] = load_tasks(write_jsonl(tmp_path / "t.jsonl", rows))
    assert task.output == "" and task.eval_aspect == "3"


def test_dataset_name_or_path() -> None:
    assert not is_local_dataset(HF_DATASET)
    assert is_local_dataset("data/tasks.csv") and is_local_dataset(Path("x"))


def test_hub_dataset_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    class FakeDataset(list[dict[str, str]]):
        column_names = ["input", "output", "eval_aspect"]

    def load_dataset(name: str, split: str) -> FakeDataset:
        calls.append((name, split))
        return FakeDataset(dict(r) for r in ROWS)  # type: ignore[misc]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    tasks = load_tasks(HF_DATASET, limit=2)
    assert calls == [(HF_DATASET, "test")] and [t.input for t in tasks] == ["問題0", "問題1"]


def test_hub_failure_is_a_task_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def load_dataset(name: str, split: str) -> None:
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(TaskError, match="elyza/ELYZA-tasks-100.*local"):
        load_tasks(HF_DATASET)
