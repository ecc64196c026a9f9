"""The bundled demo tasks load offline, from any directory, in the upstream formats."""

from __future__ import annotations

import importlib.util
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import lm_eval
import pytest
import yaml
from lm_eval.tasks import TaskManager

from ggufbench.data import DEMO_GROUP, DEMO_TASKS, demo_tasks_path, load_jsonl_splits, read_jsonl
from ggufbench.errors import TaskError

UPSTREAM_TASKS = Path(lm_eval.__file__).resolve().parent / "tasks"

# leaf task -> (output type, documents, default few-shot count, requests per document)
EXPECTED = {
    "demo_hellaswag": ("multiple_choice", 40, None, 4),
    "demo_mmlu_kitchen_science": ("multiple_choice", 20, 5, 4),
    "demo_mmlu_planetary_science": ("multiple_choice", 20, 5, 4),
    "demo_gsm8k_cot": ("generate_until", 15, 5, 1),
    "demo_wikitext": ("loglikelihood_rolling", 4, None, 1),
}
REQUEST_TYPE = {
    "multiple_choice": "loglikelihood",
    "generate_until": "generate_until",
    "loglikelihood_rolling": "loglikelihood_rolling",
}


class _KeepTags(yaml.SafeLoader):
    """Reads task YAML without importing anything: ``!function x.y`` stays a string."""


_KeepTags.add_constructor("!function", lambda loader, node: f"!function {node.value}")


def _read_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=_KeepTags)  # noqa: S506 - a SafeLoader subclass
    assert isinstance(data, dict)
    return data


def _upstream_module(relative: str) -> ModuleType:
    path = UPSTREAM_TASKS / relative
    if not path.is_file():
        pytest.skip(f"lm-eval no longer ships {relative}")
    spec = importlib.util.spec_from_file_location(f"upstream_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every demo task, loaded once from an unrelated directory with the network cut off."""

    def no_network(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the demo tasks must load without network access")

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("elsewhere"))
        patch.setattr(socket.socket, "connect", no_network)
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        manager = TaskManager(include_path=str(demo_tasks_path()), include_defaults=False)
        yield manager.load([DEMO_GROUP])


def test_demo_tasks_path_is_the_bundled_folder() -> None:
    path = demo_tasks_path()
    assert path.is_absolute() and path.is_dir()
    assert (path / f"{DEMO_GROUP}.yaml").is_file()


def test_group_holds_every_demo_task(loaded: dict[str, Any]) -> None:
    group_map = loaded["group_map"]
    assert set(group_map[DEMO_GROUP]) == set(DEMO_TASKS)
    assert set(group_map["demo_mmlu"]) == {
        "demo_mmlu_kitchen_science",
        "demo_mmlu_planetary_science",
    }
    assert set(loaded["tasks"]) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_builds_requests_of_its_output_type(loaded: dict[str, Any], name: str) -> None:
    output_type, n_docs, num_fewshot, per_doc = EXPECTED[name]
    task = loaded["tasks"][name]
    assert task.OUTPUT_TYPE == output_type
    assert task.config.num_fewshot == num_fewshot
    assert len(task.eval_docs) == n_docs
    task.build_all_requests(rank=0, world_size=1)
    assert len(task.instances) == n_docs * per_doc
    assert {instance.request_type for instance in task.instances} == {REQUEST_TYPE[output_type]}


@pytest.mark.parametrize("name", DEMO_TASKS)
def test_each_name_resolves_on_its_own(name: str) -> None:
    manager = TaskManager(
        include_path=str(demo_tasks_path()),
        include_defaults=False,
        metadata={"unused_by_the_demo": 1},
    )
    assert manager.load([name])["tasks"]


def test_hellaswag_renders_like_upstream(loaded: dict[str, Any]) -> None:
    upstream = _upstream_module("hellaswag/utils.py")
    task = loaded["tasks"]["demo_hellaswag"]
    raw = load_jsonl_splits(demo_tasks_path() / "demo_hellaswag" / "data")["validation"]
    assert upstream.process_docs(raw).to_list() == task.eval_docs.to_list()
    first = task.eval_docs[0]
    assert task.doc_to_text(first) == (
        "Making tea: A woman fills a kettle with water and sets it on the stove. She"
    )
    assert task.doc_to_target(first) == 2


def test_mmlu_prompt_is_five_dev_questions_then_the_test_question(
    loaded: dict[str, Any],
) -> None:
    task = loaded["tasks"]["demo_mmlu_planetary_science"]
    context = task.fewshot_context(task.eval_docs[0], 5)
    assert context.startswith(
        "The following are multiple choice questions (with answers) about planetary science."
        "\n\nWhich planet is closest to the Sun?\nA. Venus\nB. Earth\nC. Mercury\nD. Mars\n"
        "Answer: C\n\n"
    )
    assert re.findall(r"Answer: [ABCD]\n\n", context) == [
        "Answer: C\n\n",
        "Answer: A\n\n",
        "Answer: D\n\n",
        "Answer: B\n\n",
        "Answer: A\n\n",
    ]
    assert context.endswith("\nD. Neptune\nAnswer:")


def test_gsm8k_prompt_is_five_chain_of_thought_exemplars(loaded: dict[str, Any]) -> None:
    task = loaded["tasks"]["demo_gsm8k_cot"]
    doc = task.eval_docs[0]
    context = task.fewshot_context(doc, 5)
    exemplars = context.split("\n\n")
    assert len(exemplars) == 6
    for exemplar in exemplars[:5]:
        assert exemplar.startswith("Q: ")
        assert re.search(r"\nA: .+ The answer is -?[0-9]+\.$", exemplar)
        assert "<<" not in exemplar and "####" not in exemplar
    assert exemplars[5] == f"Q: {doc['question']}\nA:"
    assert task.doc_to_target(doc) == "105"
    assert task.config.generation_kwargs["max_gen_toks"] == 128


def test_scoring_settings_match_upstream_yaml() -> None:
    ours = demo_tasks_path()
    hellaswag = _read_yaml(ours / "demo_hellaswag" / "demo_hellaswag.yaml")
    gsm8k = _read_yaml(ours / "demo_gsm8k_cot" / "demo_gsm8k_cot.yaml")
    mmlu = _read_yaml(ours / "demo_mmlu" / "_default_template_yaml")
    upstream_paths = {
        "hellaswag": UPSTREAM_TASKS / "hellaswag" / "hellaswag.yaml",
        "gsm8k": UPSTREAM_TASKS / "gsm8k" / "gsm8k-cot.yaml",
        "mmlu": UPSTREAM_TASKS / "mmlu" / "default" / "_default_template_yaml",
    }
    if not all(path.is_file() for path in upstream_paths.values()):
        pytest.skip("lm-eval no longer ships the upstream task files")
    upstream = {key: _read_yaml(path) for key, path in upstream_paths.items()}

    for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "metric_list"):
        assert hellaswag[key] == upstream["hellaswag"][key], key
    for key in ("doc_to_text", "doc_to_target", "filter_list", "metric_list", "output_type"):
        assert gsm8k[key] == upstream["gsm8k"][key], key
    expected_generation = dict(upstream["gsm8k"]["generation_kwargs"], max_gen_toks=128)
    assert gsm8k["generation_kwargs"] == expected_generation
    for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "fewshot_split", "metric_list"):
        assert mmlu[key] == upstream["mmlu"][key], key
    assert mmlu["fewshot_config"] == upstream["mmlu"]["fewshot_config"]


def test_wikitext_scores_like_upstream(loaded: dict[str, Any]) -> None:
    upstream = _upstream_module("wikitext/preprocess_wikitext.py")
    task = loaded["tasks"]["demo_wikitext"]
    for doc in task.eval_docs:
        assert task.doc_to_target(doc) == upstream.wikitext_detokenizer(doc)
        assert task.process_results(doc, [-42.0]) == upstream.process_results(doc, [-42.0])
        assert " @" not in task.doc_to_target(doc)


def test_gsm8k_data_is_consistent() -> None:
    folder = demo_tasks_path() / "demo_gsm8k_cot" / "data"
    for split in ("train", "test"):
        for row in read_jsonl(folder / f"{split}.jsonl"):
            steps, _, final = row["answer"].rpartition("\n#### ")
            assert re.fullmatch(r"-?[0-9]+", final), row["question"]
            for expression, value in re.findall(r"<<([^=>]+)=([^>]+)>>", steps):
                assert re.fullmatch(r"[0-9+\-*/ ().]+", expression)
                assert eval(expression) == pytest.approx(float(value)), expression  # noqa: S307


def test_multiple_choice_data_follows_the_upstream_schemas() -> None:
    root = demo_tasks_path()
    for split in ("train", "validation"):
        for row in read_jsonl(root / "demo_hellaswag" / "data" / f"{split}.jsonl"):
            assert len(row["endings"]) == 4 and row["label"] in {"0", "1", "2", "3"}
            assert row["ctx"] == f"{row['ctx_a']} {row['ctx_b']}".strip()
    for subject in ("kitchen_science", "planetary_science"):
        for split in ("dev", "test"):
            for row in read_jsonl(root / "demo_mmlu" / "data" / subject / f"{split}.jsonl"):
                assert row["subject"] == subject
                assert len(row["choices"]) == 4 and row["answer"] in {0, 1, 2, 3}


def test_a_broken_data_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "test.jsonl").write_text('{"page": "fine"}\n{"page": \n', encoding="utf-8")
    with pytest.raises(TaskError, match=r"test\.jsonl, line 2, is not valid JSON"):
        load_jsonl_splits(tmp_path)


def test_a_folder_without_data_is_named(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="No .jsonl data files"):
        load_jsonl_splits(tmp_path)
