import json
import re
from pathlib import Path

import pytest

from ggufbench.config import (
    apply_overrides,
    load_suite,
    normalize_runner,
    parse_suite,
    suite_to_yaml,
)
from ggufbench.errors import ConfigError, SuiteWarning
from ggufbench.plan import plan

SUITE = """
name: t
models:
  - alias: a
    path: models/a.gguf
    baseline: true
  - alias: b
    path: /abs/b.gguf
    runner: llama.cpp
    thinking: quad
defaults:
  runner: gguf
  n_ctx: 1024
benchmarks:
  - lm_eval: {tasks: [hellaswag, gsm8k], limit: 5, include_path: tasks}
execution: {retries: 1, max_parallel_jobs: 2}
"""


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_suite_parses_and_resolves_paths(tmp_path):
    suite = load_suite(write(tmp_path, SUITE))
    assert suite.models[0].path == tmp_path / "models/a.gguf"
    assert suite.models[1].path == Path("/abs/b.gguf")
    assert suite.defaults.runner == "llama-cpp"
    assert suite.models[1].runner == "llama-cpp"
    assert suite.models[1].thinking == "quad"
    assert suite.baseline() == "a"
    kind, spec = suite.benchmark_specs()[0]
    assert kind == "lm_eval" and spec.include_path == tmp_path / "tasks"


@pytest.mark.parametrize("name", ["llama.cpp", "llamacpp", "gguf", "LLAMA-CPP", "llama_cpp"])
def test_runner_aliases(name):
    assert normalize_runner(name) == "llama-cpp"


def test_unknown_runner_suggests(tmp_path):
    text = SUITE.replace("runner: llama.cpp", "runner: llamma.cpp")
    with pytest.raises(ConfigError, match=r"unknown runner 'llamma.cpp'.*did you mean 'llama.cpp'"):
        load_suite(write(tmp_path, text))


def test_broken_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_suite(write(tmp_path, "models: [\n  - alias: a\n   bad"))


def test_missing_suite_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(tmp_path / "nope.yaml")


def test_a_device_as_suite_file_is_named_as_such():
    with pytest.raises(ConfigError, match="/dev/null is not a regular file"):
        load_suite(Path("/dev/null"))


def test_unknown_field_is_rejected(tmp_path):
    text = SUITE.replace("baseline: true", "baseline: true\n    colour: red")
    with pytest.raises(ConfigError, match="colour"):
        load_suite(write(tmp_path, text))


def test_duplicate_alias_and_two_baselines(tmp_path):
    with pytest.raises(ConfigError, match="used twice"):
        load_suite(write(tmp_path, SUITE.replace("alias: b", "alias: a")))
    with pytest.raises(ConfigError, match="baseline"):
        load_suite(write(tmp_path, SUITE.replace("runner: llama.cpp", "baseline: true")))


def test_unknown_benchmark_kind(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'lm_eval'"):
        load_suite(write(tmp_path, SUITE.replace("- lm_eval:", "- lm_evl:")))


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            "{tasks: [hellaswag], limit: -1}",
            "benchmark 2 (lm_eval): limit: Input should be greater",
        ),
        ("5", "benchmark 2 (lm_eval) must be a mapping of settings"),
        ("{tasks: []}", "benchmark 2 (lm_eval): tasks: List should have at least 1 item"),
        ("{tasks: [x], models: [zz]}", "benchmark 2 (lm_eval) names model 'zz', which is not in"),
    ],
)
def test_a_bad_benchmark_is_named_by_its_place_and_kind(tmp_path, body, said):
    text = SUITE.replace("execution:", f"  - lm_eval: {body}\nexecution:", 1)
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_suite(write(tmp_path, text))


def test_legacy_json_shape(tmp_path):
    legacy = {
        "gguf_models": [
            {
                "alias": "q8",
                "gguf_path": "m/q8.gguf",
                "ollama_name": "x",
                "description": "base",
                "tasks": ["gsm8k", "mmlu"],
                "batch_size": 4,
                "n_gpu_layers": 10,
                "limit": 50,
                "elyza_limit": 5,
            },
            {"alias": "q4", "gguf_path": "m/q4.gguf", "tasks": ["gsm8k"], "limit": 50},
        ]
    }
    with pytest.warns(SuiteWarning) as caught:
        suite = load_suite(write(tmp_path, json.dumps(legacy), "legacy.json"))
    said = [str(w.message) for w in caught]
    assert any("batch_size is ignored (set for q8)" in s for s in said)
    assert not any("ollama_name" in s for s in said)  # kept with the in-process model
    assert suite.models[0].ollama_name == "x" and suite.runner_of(suite.models[0]) == "llama-cpp"
    assert [m.alias for m in suite.models] == ["q8", "q4"]
    assert suite.models[0].n_gpu_layers == 10
    assert suite.models[0].path == tmp_path / "m/q8.gguf"
    jobs = {j.id for j in plan(suite)}
    assert jobs == {"q8/gsm8k", "q8/mmlu", "q4/gsm8k", "q8/elyza_tasks_100"}


def test_plan_ids_are_stable_and_carry_settings(tmp_path):
    suite = load_suite(write(tmp_path, SUITE))
    first, again = plan(suite), plan(suite)
    assert [j.id for j in first] == ["a/hellaswag", "a/gsm8k", "b/hellaswag", "b/gsm8k"]
    assert [j.spec for j in first] == [j.spec for j in again]
    assert first[0].spec["model"]["n_ctx"] == 1024
    assert first[0].spec["benchmark"]["limit"] == 5


def test_overrides(tmp_path):
    suite = load_suite(write(tmp_path, SUITE))
    small = apply_overrides(suite, models=["b"], benchmarks=["gsm8k"], limit=2)
    assert [j.id for j in plan(small)] == ["b/gsm8k"]
    assert plan(small)[0].spec["benchmark"]["limit"] == 2
    with pytest.raises(ConfigError, match="did you mean 'a'"):
        apply_overrides(suite, models=["aa"])


MIXED = """
models:
  - {alias: a, path: a.gguf}
  - {alias: b, path: b.gguf}
benchmarks:
  - lm_eval: {tasks: [hellaswag, gsm8k], limit: 5}
  - elyza_tasks_100: {limit: 3, models: [b]}
"""


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"limit": 0.5}, "--limit 0.5 is a fraction, which lm-eval tasks take but elyza"),
        ({"limit": -1.0}, "--limit -1 is not a positive number"),
        ({"limit": 0.0}, "--limit 0 is not a positive number"),
        ({"limit": float("nan")}, "--limit nan is not a positive number"),
        ({"limit": float("inf")}, "--limit inf is not a positive number"),
        ({"limit": 2.5}, "--limit 2.5 is neither a whole count nor a fraction below 1"),
        ({"models": []}, "--models names no model alias"),
        ({"benchmarks": []}, "--benchmarks names no task"),
        ({"benchmarks": ["gsm8"]}, "--benchmarks names 'gsm8', which is not in the suite; did you"),
        ({"models": ["a"], "benchmarks": ["elyza_tasks_100"]}, "together select nothing"),
    ],
)
def test_bad_overrides_are_sentences(tmp_path, options, said):
    suite = load_suite(write(tmp_path, MIXED))
    with pytest.raises(ConfigError) as caught:
        apply_overrides(suite, **options)
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_overrides_give_a_validated_suite(tmp_path):
    suite = load_suite(write(tmp_path, MIXED))
    fraction = apply_overrides(suite, benchmarks=["gsm8k"], limit=0.5)
    assert [j.id for j in plan(fraction)] == ["a/gsm8k", "b/gsm8k"]
    assert plan(fraction)[0].spec["benchmark"]["limit"] == 0.5
    only_a = apply_overrides(suite, models=["a"], limit=7.0)
    assert [j.id for j in plan(only_a)] == ["a/hellaswag", "a/gsm8k"]
    assert plan(only_a)[0].spec["benchmark"]["limit"] == 7
    assert apply_overrides(suite) == suite


def test_suite_files_that_cannot_be_read(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; give the path of a .yaml suite file"):
        load_suite(tmp_path)
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_suite(_bytes(tmp_path, "name: caf\xe9\n".encode("latin-1")))
    with pytest.raises(ConfigError, match="is empty; write its models and benchmarks"):
        load_suite(write(tmp_path, "# nothing yet\n"))


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_unreadable_suite_file(tmp_path):
    # /proc/self/mem is a regular file that read() refuses from offset 0, even as root.
    (tmp_path / "suite.yaml").symlink_to("/proc/self/mem")
    with pytest.raises(ConfigError, match=r"cannot read the suite file .*suite.yaml \("):
        load_suite(tmp_path / "suite.yaml")


@pytest.mark.parametrize(
    ("path", "said"), [("~no_such_user_here/a.gguf", "starts with ~"), ('"a\\0b.gguf"', "NUL")]
)
def test_paths_that_cannot_be_resolved(tmp_path, path, said):
    text = f"models: [{{alias: a, path: {path}}}]\nbenchmarks: [lm_eval: {{tasks: [t]}}]\n"
    with pytest.raises(ConfigError, match=said):
        load_suite(write(tmp_path, text))


def _bytes(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(data)
    return path


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        parse_suite(["x"], Path("."))


def test_thinking_formats(tmp_path):
    text = SUITE.replace("thinking: quad", "thinking: [think-a, think-b, final]")
    assert load_suite(write(tmp_path, text)).models[1].thinking == ["think-a", "think-b", "final"]
    with pytest.raises(ConfigError, match="thinking"):
        load_suite(write(tmp_path, SUITE.replace("thinking: quad", "thinking: ['']")))


def test_openai_model_concurrency_reaches_its_backend(tmp_path, monkeypatch):
    from ggufbench.backends import make_backend
    from ggufbench.backends.openai_http import DEFAULT_CONCURRENCY

    # no server here: the identity /v1/models would give (tests/unit/test_backend_registry.py)
    monkeypatch.setattr(
        "ggufbench.backends._server_http.openai_identity", lambda url, name, **_: "id"
    )

    suite = parse_suite(
        {
            "name": "s",
            "models": [
                {
                    "alias": "a",
                    "runner": "openai",
                    "base_url": "http://127.0.0.1:9/v1",
                    "model": "m",
                    "concurrency": 9,
                },
                {
                    "alias": "b",
                    "runner": "openai",
                    "base_url": "http://127.0.0.1:9/v1",
                    "model": "m",
                },
            ],
            "benchmarks": [{"elyza_tasks_100": {"limit": 1}}],
        },
        tmp_path,
    )
    backends = [make_backend(job.spec["model"], None) for job in plan(suite)]
    try:
        assert [b.concurrency for b in backends] == [9, DEFAULT_CONCURRENCY]
    finally:
        for b in backends:
            b.close()
    with pytest.raises(ConfigError, match="concurrency"):
        parse_suite(
            {
                "name": "s",
                "models": [{"alias": "a", "path": "x.gguf", "concurrency": 0}],
                "benchmarks": [{"lm_eval": {"tasks": ["t"]}}],
            },
            tmp_path,
        )


def test_suite_yaml_keeps_every_character(tmp_path):
    # U+0085 (NEXT LINE) came back as a space from PyYAML's own dumper.
    text = SUITE.replace("baseline: true", 'baseline: true\n    description: "日本\\x85b"')
    suite = load_suite(write(tmp_path, text))
    assert suite.models[0].description == "日本\x85b"
    saved = write(tmp_path, suite_to_yaml(suite), "saved.yaml")
    assert load_suite(saved) == suite


@pytest.mark.parametrize(
    ("name", "runner"),
    [("llama-server", "llama-server"), ("llama_server", "llama-server")]
    + [("LlamaServer", "llama-server"), ("ollama", "ollama"), ("Ollama", "ollama")],
)
def test_server_runner_names(name, runner):
    assert normalize_runner(name) == runner


def test_a_near_miss_of_a_server_runner_gets_did_you_mean():
    with pytest.raises(ValueError, match=r"unknown runner 'olama'; did you mean 'ollama'\?"):
        normalize_runner("olama")
    with pytest.raises(ValueError, match="did you mean 'llama-server'"):
        normalize_runner("llama-sever")


def server_suite(tmp_path, **model):
    data = {
        "name": "s",
        "models": [{"alias": "m", **model}],
        "benchmarks": [{"lm_eval": {"tasks": ["t"]}}],
    }
    return parse_suite(data, tmp_path)


def test_server_runner_settings_reach_the_plan(tmp_path):
    suite = server_suite(
        tmp_path,
        runner="llama_server",
        path="m.gguf",
        server_bin="bin/llama-server",
        parallel=4,
        cache_prompt=True,
    )
    (job,) = plan(suite)
    model = job.spec["model"]
    assert model["runner"] == "llama-server" and model["path"] == str(tmp_path / "m.gguf")
    assert model["server_bin"] == str(tmp_path / "bin/llama-server")  # from the suite's folder
    assert (model["parallel"], model["cache_prompt"], model["ollama_name"]) == (4, True, None)
    on_path = server_suite(tmp_path, runner="llama-server", path="m.gguf", server_bin="srv")
    assert on_path.models[0].server_bin == "srv" and not on_path.models[0].cache_prompt
    kept = server_suite(tmp_path, runner="ollama", ollama_name="smollm2:135m", parallel=2)
    (job,) = plan(kept)
    assert job.spec["model"]["ollama_name"] == "smollm2:135m"


@pytest.mark.parametrize(
    ("model", "said"),
    [
        (
            {"runner": "llama-server"},
            "model 'm' uses runner llama-server with neither path nor base_url; give path "
            "(a server started for each job) or base_url (a server already running)",
        ),
        (
            {"runner": "llama-server", "path": "m.gguf", "base_url": "http://h:8080"},
            "model 'm' uses runner llama-server with both path and base_url",
        ),
        (
            {"runner": "ollama"},
            "model 'm' uses runner ollama with neither ollama_name nor path; give ollama_name "
            "(a model in Ollama) or path (a GGUF file to import)",
        ),
        ({"runner": "llama-server", "path": "m.gguf", "parallel": 0}, "models.0.parallel"),
    ],
)
def test_server_runner_settings_are_checked_in_one_sentence(tmp_path, model, said):
    with pytest.raises(ConfigError) as caught:
        server_suite(tmp_path, **model)
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_the_runner_may_come_from_the_defaults(tmp_path):
    data = {
        "name": "s",
        "models": [{"alias": "m", "ollama_name": "x"}],
        "defaults": {"runner": "ollama"},
        "benchmarks": [{"lm_eval": {"tasks": ["t"]}}],
    }
    assert parse_suite(data, tmp_path).runner_of(parse_suite(data, tmp_path).models[0]) == "ollama"
    data["models"] = [{"alias": "m"}]
    with pytest.raises(ConfigError, match="uses runner ollama with neither"):
        parse_suite(data, tmp_path)
