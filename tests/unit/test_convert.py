"""ggufbench convert: the printed YAML loads back to the suite the legacy file stands for."""

import json
import warnings
from pathlib import Path

import yaml
from cli_main import invoke
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ggufbench.config import load_suite, parse_suite
from ggufbench.errors import ConfigError
from ggufbench.legacy import legacy_yaml, read_legacy

LEGACY = {
    "judge": {"runner": "llama-cpp", "path": "judge.gguf"},
    "output_root": "results",
    "colour": "red",
    "gguf_models": [
        {
            "alias": "q8",
            "gguf_path": "m/q8.gguf",
            "ollama_name": "m:q8",
            "description": "base",
            "tasks": ["gsm8k", "mmlu", "hellaswag"],
            "batch_size": 4,
            "limit": 50,
            "elyza_limit": 10,
        },
        {"alias": "q4", "gguf_path": "m/q4.gguf", "tasks": ["gsm8k"], "elyza_limit": 10},
    ],
}


def test_convert_prints_a_commented_suite_that_loads_back(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps(LEGACY), encoding="utf-8")
    result = invoke("convert", str(old))
    assert result.code == 0, result.stderr
    text = result.stdout
    assert text.startswith("# A ggufbench suite converted from old.json")
    assert "ollama_name: m:q8" in text and "ollama_name is ignored" not in text
    assert "#   - the top-level key 'colour' is ignored" in text
    assert "# gguf_models[1]\n- alias: q4" in text
    assert "# the elyza_limit of q8, q4\n- elyza_tasks_100:" in text
    assert "warning: " in result.stderr and "batch_size is ignored" in result.stderr
    new = tmp_path / "new.yaml"
    new.write_text(text, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_suite(new) == load_suite(old)


def test_convert_refuses_what_is_not_legacy(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("models: [{alias: a, path: a.gguf}]\nbenchmarks: [lm_eval: {tasks: [t]}]\n")
    result = invoke("convert", str(suite))
    assert result.code == 2 and result.stdout == ""
    assert "has no gguf_models key, so it is not in the legacy shape" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"gguf_models": [{"alias": "a", "tasks": ["t"], "limit": 0}]}))
    result = invoke("convert", str(bad))
    assert result.code == 2 and result.stdout == ""
    assert "error: " in result.stderr and "limit" in result.stderr


KNOWN_KEYS = {"gguf_models", "name", "output_root", "judge", "defaults", "execution", "lm_eval"}
KNOWN_KEYS |= {"elyza_tasks_100"}
ALIAS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,6}", fullmatch=True)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
ENTRY = st.fixed_dictionaries(
    {"alias": ALIAS},
    optional={
        "gguf_path": st.one_of(TEXT, st.sampled_from(["m/a.gguf", "/abs/b.gguf", "yes", "~"])),
        "description": TEXT,
        "ollama_name": TEXT,
        "tasks": st.lists(st.sampled_from(["gsm8k", "mmlu", "hellaswag", "null", "1.5"])),
        "batch_size": st.one_of(st.integers(1, 64), st.just("auto")),
        "n_gpu_layers": st.integers(-1, 99),
        "limit": st.one_of(st.integers(1, 1000), st.floats(0.01, 0.99)),
        "elyza_limit": st.integers(0, 100),
        "extra_key": TEXT,
    },
)
KNOWN = st.fixed_dictionaries(
    {"gguf_models": st.lists(ENTRY, min_size=1, max_size=5, unique_by=lambda e: e["alias"])},
    optional={
        "name": ALIAS,
        "output_root": TEXT,
        "judge": st.fixed_dictionaries({"path": TEXT}, optional={"n_ctx": st.integers(128, 9999)}),
        "defaults": st.fixed_dictionaries({}, optional={"n_ctx": st.integers(128, 9999)}),
        "execution": st.fixed_dictionaries({}, optional={"retries": st.integers(0, 5)}),
        "lm_eval": st.fixed_dictionaries({}, optional={"num_fewshot": st.integers(0, 5)}),
        "elyza_tasks_100": st.fixed_dictionaries({}, optional={"dataset": TEXT}),
    },
)
UNKNOWN = st.dictionaries(TEXT.filter(lambda k: k not in KNOWN_KEYS), TEXT, max_size=2)
LEGACY_FILES = st.builds(lambda known, unknown: {**unknown, **known}, KNOWN, UNKNOWN)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=LEGACY_FILES)
def test_every_legacy_file_converts_to_an_equal_suite(data: dict) -> None:
    base = Path("/suites")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = parse_suite(data, base, source="old.json")
        except ConfigError:
            assume(False)
        text = legacy_yaml(read_legacy(data), "old.json")
        assert parse_suite(yaml.safe_load(text), base, source="new.yaml") == expected
