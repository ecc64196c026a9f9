"""Any option and any value given to the CLI ends in an exit code, never a traceback.

The commands run through the real ``main()`` (see cli_main.py). No model work
starts: every suite here names model files that do not exist, so ``run`` stops
at its preflight, and no path is a run directory that could be resumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_main import Outcome, invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXIT_CODES = {0, 1, 2, 130}
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SUITE = """\
name: props
output_root: {root}
models:
  - {{alias: small, path: {folder}/small.gguf}}
  - {{alias: large, path: {folder}/large.gguf}}
benchmarks:
  - lm_eval: {{tasks: [task_one, task_two], limit: 3, include_path: {folder}/no_tasks}}
  - elyza_tasks_100:
      dataset: {folder}/no_tasks.jsonl
      models: [large]
      judge: {{runner: llama-cpp, path: {folder}/judge.gguf}}
"""

LEGACY = {
    "judge": {"path": "judge.gguf"},
    "lm_eval": {"include_path": "no_tasks"},
    "elyza_tasks_100": {"dataset": "no_tasks.jsonl"},
    "batch": 1,
    "gguf_models": [
        {"alias": "small", "gguf_path": "small.gguf", "tasks": ["task_one"], "batch_size": 2},
        {"alias": "large", "gguf_path": "large.gguf", "elyza_limit": 2, "ollama_name": "l"},
    ],
}


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files and folders for every kind of path argument; none holds a model."""
    folder = tmp_path_factory.mktemp("props")
    made = {
        "suite": folder / "suite.yaml",
        "legacy": folder / "old.json",
        "folder": folder / "a folder",
        "missing": folder / "missing.yaml",
        "latin1": folder / "latin1.yaml",
        "empty": folder / "empty.yaml",
        "list": folder / "list.yaml",
        "broken": folder / "broken.yaml",
        "text": folder / "notes.gguf",
        "magic": folder / "magic.gguf",
        "run_json": folder / "run_json" / "run.json",
        "run_list": folder / "run_list" / "run.json",
        "[/x]": folder / "[/x]",
    }
    made["suite"].write_text(SUITE.format(root=folder / "runs", folder=folder))
    made["legacy"].write_text(json.dumps(LEGACY))
    made["folder"].mkdir()
    made["latin1"].write_bytes("name: caf\xe9\n".encode("latin-1"))
    made["empty"].write_text("")
    made["list"].write_text("- a\n- b\n")
    made["broken"].write_text("models: [\n  - alias: a\n   path: [x\n")
    made["text"].write_text("these are notes, not a model\n")
    made["magic"].write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(40)))
    for key, text in (("run_json", "{}"), ("run_list", "[1]")):
        made[key].parent.mkdir()
        made[key].write_text(text)
        made[key] = made[key].parent
    made["[/x]"].parent.mkdir()  # a folder named "[" holding a file "x]"
    made["[/x]"].write_text("name: [/x]\n")
    return made


def path_of(paths: dict[str, Path]) -> st.SearchStrategy[str]:
    chosen = st.sampled_from(sorted(paths)).map(lambda key: str(paths[key]))
    return st.one_of(chosen, st.sampled_from(["", ".", "-", "--", "~nobody_here/x"]), TEXT)


TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=16)
NAMES = st.lists(
    st.one_of(
        st.sampled_from(["small", "large", "smal", "task_one", "task_on", "elyza_tasks_100"]),
        TEXT,
    ),
    max_size=3,
).map(",".join)
NUMBERS = st.one_of(
    st.floats().map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["0.5", "1", "0", "-1", "nan", "inf", "1e400", "3.", "abc", ""]),
    TEXT,
)


def options(**choices: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    """Some of the given options, in any order, sometimes with an unknown one."""
    names = st.lists(st.sampled_from(sorted(choices)), unique=True) if choices else st.just([])
    picked = names.flatmap(lambda names: st.tuples(*(choices[name] for name in names)))
    unknown = st.lists(st.sampled_from(["--nope", "-x", "--limit", "--json=1"]), max_size=1)
    return st.tuples(picked, unknown).flatmap(
        lambda parts: st.permutations([arg for group in parts[0] for arg in group] + parts[1])
    )


def flag(name: str) -> st.SearchStrategy[list[str]]:
    return st.just([name])


def valued(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return values.map(lambda value: [name, value])


def assert_clean(result: Outcome) -> None:
    said = result.stdout + result.stderr
    assert result.code in EXIT_CODES, said
    assert "Traceback" not in said, said


@SETTINGS
@given(data=st.data())
def test_run_options(paths: dict[str, Path], data: st.DataObject) -> None:
    suite = data.draw(path_of(paths))
    extra = data.draw(
        options(
            fresh=flag("--fresh"),
            models=valued("--models", NAMES),
            benchmarks=valued("--benchmarks", NAMES),
            limit=valued("--limit", NUMBERS),
        )
    )
    result = invoke("run", suite, *extra)
    assert_clean(result)
    assert result.code != 0  # no suite here can run
    assert not (paths["suite"].parent / "runs").exists()  # nothing was started


@SETTINGS
@given(data=st.data())
def test_suite_and_run_dir_commands(paths: dict[str, Path], data: st.DataObject) -> None:
    command = data.draw(st.sampled_from(["check", "convert", "resume", "status", "report"]))
    extra = {
        "status": options(json=flag("--json")),
        "report": options(baseline=valued("--baseline", NAMES)),
    }.get(command, options())
    assert_clean(invoke(command, data.draw(path_of(paths)), *data.draw(extra)))


@SETTINGS
@given(data=st.data())
def test_inspect_options(paths: dict[str, Path], data: st.DataObject) -> None:
    extra = options(
        json=flag("--json"),
        template=flag("--chat-template"),
        sha=st.sampled_from([["--sha256"], ["--no-sha256"]]),
    )
    assert_clean(invoke("inspect", data.draw(path_of(paths)), *data.draw(extra)))


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["run", "{suite}", "--limit", "0.5"], "elyza_tasks_100 does not"),
        (["run", "{suite}", "--models", "smal"], "did you mean 'small'?"),
        (["run", "{suite}", "--benchmarks", "task_on"], "did you mean 'task_one'?"),
        (["run", "{folder}"], "is a folder"),
        (["check", "{latin1}"], "is not UTF-8 text"),
        (["check", "{empty}"], "is empty"),
        (["convert", "{suite}"], "not in the legacy shape"),
        (["run", "{legacy}", "--limit", "2"], "5 problem(s) found, nothing was started"),
    ],
)
def test_each_bad_value_is_one_sentence(paths: dict[str, Path], args: list[str], said: str) -> None:
    result = invoke(*(arg.format(**paths) for arg in args))
    assert result.code == 2 and said in result.stderr, result.stderr
    assert result.stderr.startswith(("error: ", "warning: "))
