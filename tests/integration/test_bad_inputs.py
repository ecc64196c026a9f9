"""Bad input: exit 2, one sentence each, no traceback, nothing started."""

import pytest

from conftest import ggufbench, suite_text


def assert_clean_failure(done, *needles):
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out
    for needle in needles:
        assert needle in out, out


@pytest.fixture()
def bad_models(tmp_path, smollm2):
    half = tmp_path / "half.gguf"
    with open(smollm2, "rb") as src, open(half, "wb") as dst:
        dst.write(src.read(smollm2.stat().st_size // 2))
    text = tmp_path / "notes.gguf"
    text.write_text("these are my notes, not a model\n")
    return {"half": half, "text": text, "missing": tmp_path / "missing.gguf"}


def test_every_problem_is_listed_at_once(tmp_path, bad_models, tasks_dir):
    suite = tmp_path / "suite.yaml"
    models = list(bad_models.items())
    suite.write_text(
        suite_text(models, ["demo_hellaswag", "demo_hellaswg"], tasks_dir, tmp_path / "runs")
    )
    for command in ("check", "run"):
        done = ggufbench(command, str(suite))
        assert_clean_failure(
            done,
            "4 problem(s)",
            "is truncated",
            "is not a GGUF file",
            "does not exist",
            "did you mean 'demo_hellaswag'",
        )
    assert not (tmp_path / "runs").exists()  # nothing was started


@pytest.mark.parametrize("name", ["half", "text", "missing"])
def test_each_bad_file_alone(tmp_path, bad_models, tasks_dir, name):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        suite_text([(name, bad_models[name])], ["demo_hellaswag"], tasks_dir, tmp_path / "runs")
    )
    done = ggufbench("run", str(suite))
    assert_clean_failure(done, f"model '{name}'")
    assert len([line for line in done.stderr.splitlines() if line.strip().startswith("- ")]) == 1


def test_runner_typo_and_alias(tmp_path, smollm2, tasks_dir):
    suite = tmp_path / "suite.yaml"
    text = suite_text([("smol", smollm2)], ["demo_hellaswag"], tasks_dir, tmp_path / "runs")
    suite.write_text(text.replace("runner: llama.cpp", "runner: llamma.cpp"))
    assert_clean_failure(ggufbench("check", str(suite)), "did you mean 'llama.cpp'")
    suite.write_text(text)  # llama.cpp is accepted
    done = ggufbench("check", str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Q4_1" in done.stdout


def test_broken_yaml_and_unknown_task(tmp_path, smollm2, tasks_dir):
    suite = tmp_path / "suite.yaml"
    suite.write_text("models: [\n  - alias: a\n   path: [x\n")
    assert_clean_failure(ggufbench("run", str(suite)), "not valid YAML at line")
    suite.write_text(
        suite_text([("smol", smollm2)], ["no_such_task_anywhere"], tasks_dir, tmp_path / "runs")
    )
    assert_clean_failure(ggufbench("run", str(suite)), "'no_such_task_anywhere' does not exist")


def test_not_a_run_directory(tmp_path):
    assert_clean_failure(ggufbench("resume", str(tmp_path)), "not a ggufbench run directory")
    assert_clean_failure(ggufbench("status", str(tmp_path)), "not a ggufbench run directory")


def test_bad_option_values(tmp_path, smollm2, tasks_dir):
    suite = tmp_path / "suite.yaml"
    elyza = "  - elyza_tasks_100: {limit: 2, judge: {path: judge.gguf}}\n"
    suite.write_text(
        suite_text([("smol", smollm2)], ["demo_hellaswag"], tasks_dir, tmp_path / "runs", 3, elyza)
    )
    cases = [
        (["--limit", "0.5"], "lm-eval tasks take but elyza_tasks_100 does not"),
        (["--limit", "-3"], "--limit -3 is not a positive number"),
        (["--models", "smoll"], "did you mean 'smol'?"),
        (["--benchmarks", "demo_hellaswg"], "did you mean 'demo_hellaswag'?"),
        (["--models", ","], "--models names no model alias"),
    ]
    for options, said in cases:
        assert_clean_failure(ggufbench("run", str(suite), *options), said)
    assert not (tmp_path / "runs").exists()


def test_suite_files_that_are_not_suites(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert_clean_failure(ggufbench("run", str(tmp_path)), "is a folder")
    assert_clean_failure(ggufbench("check", str(latin1)), "is not UTF-8 text; save it as UTF-8")
    assert_clean_failure(ggufbench("check", str(empty)), "is empty")
    assert_clean_failure(ggufbench("convert", str(empty)), "not in the legacy shape")


def test_elyza_dataset_problems_name_the_row(tmp_path, smollm2):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"input": "q", "output": "a", "eval_aspect": "e"}\n{"input": "q2"}\n')
    (tmp_path / "folder.jsonl").mkdir()
    cases = ((rows, "row 2 of"), (tmp_path / "folder.jsonl", "is a folder"))
    for dataset, said in cases:
        suite = tmp_path / "suite.yaml"
        suite.write_text(
            f"models: [{{alias: smol, path: {smollm2}}}]\n"
            f"benchmarks: [elyza_tasks_100: {{dataset: {dataset}, judge: {{path: {smollm2}}}}}]\n"
        )
        assert_clean_failure(ggufbench("check", str(suite)), "1 problem(s)", said)
