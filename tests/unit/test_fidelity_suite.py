"""The fidelity benchmark in a suite: its settings, its jobs, its preflight sentences."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ggufbench import fidelity
from ggufbench.backends import BackendInfo
from ggufbench.benchmarks._job import JobContext
from ggufbench.benchmarks.fidelity_job import _baseline_index, _Chunks, _commit_index
from ggufbench.cached import Timing
from ggufbench.config import FidelityBenchmark, apply_overrides, load_suite, parse_suite
from ggufbench.errors import ConfigError, GgufbenchError
from ggufbench.fidelity._rows import baseline_rows, variant_rows
from ggufbench.ledger import JobRow, Ledger
from ggufbench.plan import FIDELITY, fidelity_skipped, plan, waits_for
from ggufbench.preflight import check
from ggufbench.testmodels import smollm2_path

HTTP = {"runner": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}


def suite_data(bench: dict[str, Any] | None = None, **baseline: Any) -> dict[str, Any]:
    base = {"alias": "base", "path": str(smollm2_path()), "baseline": True} | baseline
    return {
        "models": [base, {"alias": "q4", "path": str(smollm2_path())}, {"alias": "web", **HTTP}],
        "defaults": {"n_gpu_layers": 0},
        "benchmarks": [{"fidelity": bench or {}}],
    }


def problems(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    return check(parse_suite(data, tmp_path), datasets=False).problems


def test_the_defaults_are_the_cores():
    spec = FidelityBenchmark()
    assert (spec.top_k, spec.tail_samples) == (
        fidelity.DEFAULT_TOP_K,
        fidelity.DEFAULT_TAIL_SAMPLES,
    )
    assert (spec.text, spec.n_ctx, spec.chunks) == (None, 512, None)


def test_the_text_is_taken_from_the_suites_folder(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("models: [{alias: a, path: a.gguf}]\nbenchmarks: [{fidelity: {text: c.txt}}]\n")
    ((_, spec),) = load_suite(path).benchmark_specs()
    assert spec.text == tmp_path / "c.txt"


@pytest.mark.parametrize(
    ("bench", "said"),
    [
        ({"n_ctx": 511}, "fidelity n_ctx is 511; give an even number of at least 4"),
        ({"n_ctx": 2}, "fidelity n_ctx is 2; give an even number of at least 4"),
        ({"chunks": 0}, "fidelity chunks is 0; give at least 1, or leave it out"),
        ({"top_k": 0}, "top_k"),
        ({"txt": "c.txt"}, "txt: Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_one_sentence(tmp_path, bench, said):
    with pytest.raises(ConfigError) as caught:
        parse_suite(suite_data(bench), tmp_path)
    assert said in str(caught.value)
    assert "\n" not in str(caught.value)


def test_limit_caps_the_chunks_and_a_fraction_leaves_them(tmp_path):
    suite = parse_suite(suite_data({"chunks": 5}), tmp_path)
    assert apply_overrides(suite, limit=3).benchmark_specs()[0][1].chunks == 3
    assert apply_overrides(suite, limit=9).benchmark_specs()[0][1].chunks == 5
    assert apply_overrides(suite, limit=0.5).benchmark_specs()[0][1].chunks == 5


def test_a_job_for_the_baseline_and_one_per_in_process_model_that_waits_for_it(tmp_path):
    jobs = {j.id: j for j in plan(parse_suite(suite_data({"n_ctx": 256}), tmp_path))}
    assert set(jobs) == {"base/fidelity", "q4/fidelity"}  # the HTTP model takes no part
    assert waits_for(jobs["base/fidelity"]) == []
    assert waits_for(jobs["q4/fidelity"]) == ["base/fidelity"]
    for job in jobs.values():
        assert (job.kind, job.spec["baseline"]) == (FIDELITY, "base")
        model = job.spec["model"]
        assert (model["n_ctx"], model["n_batch"], model["thinking"]) == (256, 256, "none")


def test_models_narrows_the_variants_but_the_baseline_always_runs(tmp_path):
    suite = parse_suite(suite_data({"models": ["q4"]}), tmp_path)
    assert [j.id for j in plan(suite)] == ["base/fidelity", "q4/fidelity"]
    suite = parse_suite(suite_data({"models": ["base"]}), tmp_path)
    assert [j.id for j in plan(suite)] == ["base/fidelity"]


def test_a_model_on_another_runner_is_left_out_with_a_sentence(tmp_path):
    suite = parse_suite(suite_data(), tmp_path)
    (why,) = fidelity_skipped(suite).values()
    assert why.startswith("web is skipped: ") and "runner openai" in why
    report = check(suite, datasets=False)
    assert why in report.notes and report.problems == []
    assert set(report.footprints) >= {"base/fidelity", "q4/fidelity"}
    # the job's own n_ctx: more cells reserve more memory
    wider = check(parse_suite(suite_data({"n_ctx": 2048}), tmp_path), datasets=False)
    assert wider.footprints["q4/fidelity"] > report.footprints["q4/fidelity"]


def test_preflight_sentences(tmp_path):
    (tmp_path / "latin.txt").write_bytes(b"\xff not UTF-8 " * 200)
    (tmp_path / "short.txt").write_text("a few words")
    (tmp_path / "folder").mkdir()
    cases = {
        "nothere.txt": "fidelity text {} cannot be read (No such file or directory); "
        "check the path",
        "folder": "fidelity text {} is a folder; give a plain-text file",
        "latin.txt": "fidelity text {} is not UTF-8 text (byte 0 is not); save it as UTF-8",
        "short.txt": "fidelity text {} has 11 bytes, and n_ctx 512 needs at least 1024 tokens; "
        "give a longer text or a smaller n_ctx",
    }
    for name, said in cases.items():
        found = problems(tmp_path, suite_data({"text": name}))
        assert found == [said.format(tmp_path / name)]


def test_a_suite_without_an_in_process_baseline_is_a_problem(tmp_path):
    unmarked = suite_data(baseline=False)
    assert problems(tmp_path, unmarked) == [
        "fidelity compares every model with the baseline, and no model of the suite has "
        "baseline: true; mark the model to compare with (or leave fidelity out with --benchmarks)"
    ]
    remote = suite_data()
    remote["models"][2]["baseline"], remote["models"][0]["baseline"] = True, False
    assert problems(tmp_path, remote) == [
        "fidelity needs the baseline 'web' in this process, but it uses runner openai; run the "
        "baseline with runner llama-cpp"
    ]
    twice = suite_data()
    twice["benchmarks"] *= 2
    assert problems(tmp_path, twice) == [
        "the suite has 2 fidelity benchmarks; keep one (each model has one fidelity result)"
    ]


def job_context(ledger: Ledger, owner: str, alias: str) -> JobContext:
    spec = {"baseline": "base", "name": FIDELITY, "benchmark": FidelityBenchmark().model_dump()}
    return JobContext(Path("."), f"{alias}/fidelity", alias, FIDELITY, spec, ledger, owner, None)  # type: ignore[arg-type]


def test_a_model_whose_baseline_job_did_not_finish_fails_with_one_sentence(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite", create=True)
    owner = ledger.claim()
    with pytest.raises(GgufbenchError) as caught:
        _baseline_index(job_context(ledger, owner, "q4"))
    assert str(caught.value) == (
        "q4 is not compared: the baseline's fidelity job base/fidelity did not finish (the "
        "report gives its reason); fix that and resume the run"
    )
    # the baseline's job commits its index through the same store; then it is found
    index = {"records": ["k0"], "vocab": "v", "details": {"text": "/c.txt"}}
    ctx = job_context(ledger, owner, "base")
    _commit_index(ctx, "base-sha256", index)
    assert _baseline_index(job_context(ledger, owner, "q4")) == index
    _commit_index(ctx, "base-sha256", index)  # again: the same index
    with pytest.raises(GgufbenchError, match="has changed since this run measured"):
        _commit_index(ctx, "base-sha256", {**index, "records": ["k1"]})
    ledger.close()


def test_the_baselines_own_ppl_is_the_ppl_base_of_every_variant():
    rng = np.random.default_rng(3)
    records, stats = [], []
    for chunk, rows in enumerate((40, 25, 31)):
        logits = rng.normal(0, 3, (rows, 500)).astype(np.float32)
        targets = rng.integers(0, 500, rows).astype(np.int32)
        record = baseline_rows(logits, targets, 16, 16, seed=bytes([chunk]))
        record = fidelity.BaselineRecord(**{**record.__dict__, "chunk": chunk})
        noisy = (logits + rng.normal(0, 0.1, logits.shape)).astype(np.float32)
        stats.append(fidelity.chunk_stats(chunk, variant_rows(noisy, record)))
        records.append(record)
    own = fidelity.baseline_figures(reversed(records))
    figures = fidelity.combine(stats)
    assert own["ppl"] == figures["ppl_base"]  # exactly, value and error
    assert (own["n_tokens"], own["n_chunks"]) == (96, 3)
    with pytest.raises(ValueError, match="twice"):
        fidelity.baseline_figures(records + records[:1])


def chunks_of(ledger: Ledger, owner: str, timing: Timing) -> _Chunks:
    """A job's chunks over the real ledger; the backend and cache wrapper are fakes that hold
    only what the chunks read of them (their identity and settings, the timing)."""
    ledger.add_jobs([JobRow("q4/fidelity", "q4", FIDELITY, FIDELITY, {})])
    ctx = job_context(ledger, owner, "q4")
    ctx.cached = SimpleNamespace(timing=timing)  # type: ignore[assignment]
    fake_backend = SimpleNamespace(info=BackendInfo("llama-cpp", "q4-sha256", {}), n_ctx=256)
    return _Chunks(ctx, fake_backend, fidelity.VARIANT_KIND, 2)  # type: ignore[arg-type]


def test_chunks_are_committed_at_once_and_served_from_the_ledger(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite", create=True)
    owner = ledger.claim()
    chunks = chunks_of(ledger, owner, Timing())
    assert chunks._deadline() is None  # the first chunk: its speed is not known yet
    key, data = chunks.answer({"chunk": 0}, lambda: b"\x00stats\xff")
    assert data == b"\x00stats\xff" and ledger.cache_count() == 1
    assert (ledger.job("q4/fidelity").done, ledger.job("q4/fidelity").total) == (1, 2)
    assert chunks._deadline() is not None  # now timed
    again = chunks.answer({"chunk": 0}, lambda: pytest.fail("computed twice"))
    assert again == (key, data)
    assert chunks.work(0.0)["requests"] == {"total": 2, "computed": 1, "from_cache": 1}
    other = Ledger(tmp_path / "other.sqlite", create=True)
    fixed = chunks_of(other, other.claim(), Timing(fixed_s=30))
    assert fixed._deadline() is not None  # request_timeout_s holds from the first chunk
    other.close()
    ledger.close()
