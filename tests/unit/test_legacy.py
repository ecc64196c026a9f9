"""The legacy {"gguf_models": [...]} shape read as a suite: every key used or warned about."""

import json
import warnings
from pathlib import Path

import pytest

from ggufbench.config import ElyzaBenchmark, LmEvalBenchmark, load_suite, parse_suite
from ggufbench.errors import ConfigError, SuiteWarning
from ggufbench.legacy import read_legacy
from ggufbench.plan import plan

TASKS = ["gsm8k", "mmlu", "hellaswag"]


def pipeline_file(**top: object) -> dict:
    """The original pipeline's shape: five models, three tasks, elyza_limit 10."""
    models = [
        {
            "alias": alias,
            "gguf_path": f"models/{alias}.gguf",
            "ollama_name": f"m:{alias}",
            "description": f"variant {alias}",
            "tasks": TASKS,
            "batch_size": 8,
            "n_gpu_layers": -1,
            "limit": 100,
            "elyza_limit": 10,
        }
        for alias in ("base_q8", "base_q4", "ft1_q8", "ft2_q8", "ft3_q8")
    ]
    return {"gguf_models": models, **top}


def quietly(data: dict, base: Path) -> tuple:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        suite = parse_suite(data, base, source="old.json")
    return suite, [str(w.message) for w in caught if w.category is SuiteWarning]


def test_the_pipeline_file_with_a_top_level_judge(tmp_path):
    judge = {"runner": "llama-cpp", "path": "judge.gguf", "n_ctx": 2048}
    data = pipeline_file(
        judge=judge,
        output_root="results",
        defaults={"n_ctx": 2048},
        execution={"retries": 1},
        lm_eval={"include_path": "tasks", "num_fewshot": 0},
        elyza_tasks_100={"dataset": "elyza.jsonl", "max_tokens": 64},
    )
    suite, said = quietly(data, tmp_path)
    assert suite.output_root == tmp_path / "results"
    assert suite.defaults.n_ctx == 2048 and suite.execution.retries == 1
    (lm_kind, lm), (elyza_kind, elyza) = suite.benchmark_specs()
    assert lm_kind == "lm_eval" and isinstance(lm, LmEvalBenchmark)
    assert lm.tasks == TASKS and lm.limit == 100 and lm.num_fewshot == 0
    assert lm.include_path == tmp_path / "tasks"
    assert elyza_kind == "elyza_tasks_100" and isinstance(elyza, ElyzaBenchmark)
    assert elyza.limit == 10 and elyza.max_tokens == 64
    assert elyza.dataset == str(tmp_path / "elyza.jsonl")
    assert elyza.judge is not None and elyza.judge.path == tmp_path / "judge.gguf"
    assert len(plan(suite)) == 5 * 4
    assert said == [
        "old.json: batch_size is ignored (set for base_q8, base_q4, ft1_q8, ft2_q8, ft3_q8): "
        "ggufbench batches requests itself (defaults.n_batch sets tokens per decode)",
    ]
    # with gguf_path too, the file runs in-process and the Ollama name stays with the model
    assert [(suite.runner_of(m), m.ollama_name) for m in suite.models][0] == (
        "llama-cpp",
        "m:base_q8",
    )


def test_an_entry_with_only_an_ollama_name_runs_on_ollama(tmp_path):
    data = {
        "gguf_models": [
            {"alias": "served", "ollama_name": "smollm2:135m", "tasks": ["t"]},
            {"alias": "file", "gguf_path": "f.gguf", "tasks": ["t"]},
        ]
    }
    suite, said = quietly(data, tmp_path)
    assert said == []
    served, file = suite.models
    assert suite.runner_of(served) == "ollama" and served.ollama_name == "smollm2:135m"
    assert served.path is None and suite.runner_of(file) == "llama-cpp"
    (job, _) = plan(suite)
    assert job.spec["model"]["runner"] == "ollama"
    assert job.spec["model"]["ollama_name"] == "smollm2:135m"


def test_groups_follow_tasks_limit_and_elyza_limit(tmp_path):
    data = {
        "gguf_models": [
            {"alias": "a", "tasks": ["t1"], "limit": 5, "elyza_limit": 3},
            {"alias": "b", "tasks": ["t1"], "limit": 5, "elyza_limit": 4},
            {"alias": "c", "tasks": ["t1", "t2"], "elyza_limit": 0},
        ]
    }
    suite, _ = quietly(data, tmp_path)
    bodies = [(kind, spec.limit, spec.models) for kind, spec in suite.benchmark_specs()]
    assert bodies == [
        ("lm_eval", 5, ["a", "b"]),
        ("lm_eval", None, ["c"]),
        ("elyza_tasks_100", 3, ["a"]),
        ("elyza_tasks_100", 4, ["b"]),
    ]
    assert {j.id for j in plan(suite)} == {
        "a/t1",
        "b/t1",
        "c/t1",
        "c/t2",
        "a/elyza_tasks_100",
        "b/elyza_tasks_100",
    }


def test_each_ignored_key_is_one_sentence():
    data = {
        "gguf_models": [{"alias": "a", "tasks": ["t"], "colour": "red"}, {"alias": "idle"}],
        "judge": {"runner": "openai"},
        "lm_eval": {"num_fewshot": 5},
        "elyza_tasks_100": {"max_tokens": 5},
        "batch": 3,
    }
    notes = read_legacy(data).notes
    assert notes == [
        "the key 'colour' of model 'a' is ignored: a gguf_models entry takes alias, gguf_path, "
        "ollama_name, description, tasks, batch_size, n_gpu_layers, limit, elyza_limit",
        "model 'idle' has no tasks and no elyza_limit, so nothing runs",
        "the top-level key 'batch' is ignored: the legacy shape takes gguf_models, name, "
        "output_root, defaults, execution, judge, lm_eval, elyza_tasks_100",
        "judge is ignored: no model sets elyza_limit",
        "elyza_tasks_100 is ignored: no model sets elyza_limit",
    ]
    assert all("\n" not in note for note in notes)


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"gguf_models": "a.gguf"}, "old.json: gguf_models: Input should be a valid list"),
        ({"gguf_models": []}, "gguf_models: List should have at least 1 item"),
        ({"gguf_models": [{"gguf_path": "a.gguf"}]}, "gguf_models.0.alias: Field required"),
        ({"gguf_models": [{"alias": "a", "elyza_limit": "ten"}]}, "gguf_models.0.elyza_limit"),
        ({"gguf_models": [{"alias": "a", "tasks": "gsm8k"}]}, "gguf_models.0.tasks"),
        ({"gguf_models": [{"alias": "a"}]}, "no entry of gguf_models has tasks or elyza_limit"),
        ({"gguf_models": [{"alias": "a b", "tasks": ["t"]}]}, "models.0.alias"),
        ({"gguf_models": [{"alias": "a", "tasks": ["t"], "limit": -1}]}, "limit"),
        (
            {"gguf_models": [{"alias": "a", "tasks": ["t"]}], "lm_eval": {"tasks": ["x"]}},
            "lm_eval: 'tasks' comes from each gguf_models entry",
        ),
        (
            {"gguf_models": [{"alias": "a", "elyza_limit": 2}], "judge": {"runner": "olama"}},
            "did you mean",
        ),
    ],
)
def test_bad_legacy_files_are_one_sentence(tmp_path, data, said):
    with pytest.raises(ConfigError) as caught:
        quietly(data, tmp_path)
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_legacy_json_file_on_disk(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(pipeline_file(judge={"path": "j.gguf"})), encoding="utf-8")
    with pytest.warns(SuiteWarning) as caught:
        suite = load_suite(path)
    assert len(caught) == 1 and "batch_size is ignored" in str(caught[0].message)
    assert [m.alias for m in suite.models][0] == "base_q8"
    assert suite.models[0].path == tmp_path / "models/base_q8.gguf"
    assert suite.models[0].description == "variant base_q8"


def test_a_blank_ollama_name_is_no_name(tmp_path):
    data = {"gguf_models": [{"alias": "a", "ollama_name": " ", "tasks": ["t"]}]}
    suite, said = quietly(data, tmp_path)
    (model,) = suite.models
    assert model.ollama_name is None and suite.runner_of(model) == "llama-cpp" and said == []
