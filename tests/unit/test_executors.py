"""The executors' parts that need no cluster: the driver's ledger service, the model file
check on a node, what a worker's ending means, and Ray asked for where it is missing."""

import sys

import pytest

from ggufbench.config import Execution
from ggufbench.errors import ConfigError
from ggufbench.executors import EXIT_NODE_FILE, ending_of, make_executor, ray_missing
from ggufbench.executors._relay import LedgerService, job_files
from ggufbench.gguf_file import sha256_of
from ggufbench.ledger import JobRow, Ledger
from ggufbench.resources import Machine
from ggufbench.worker import NodeFileError, check_files

PLACE = {"host": "n1", "pid": 7, "device": "cpu", "cuda_visible_devices": None}


def served(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    ledger = Ledger(tmp_path / "ledger.sqlite", create=True)
    owner = ledger.claim()
    ledger.add_jobs([JobRow("m/t", "m", "t", "lm_eval", {})])
    placed = []
    return ledger, owner, LedgerService(None, tmp_path, owner, placed.append), placed


def test_the_service_commits_a_batch_at_once_and_refuses_stopped_attempts(tmp_path):
    ledger, owner, service, placed = served(tmp_path)
    ledger.start_attempt("m/t", owner, "")  # attempt 1: stopped by the driver
    ledger.end_attempt("m/t", 1, "failed", "its deadline passed")
    ledger.start_attempt("m/t", owner, "")
    row = ("k1", "generate", "model", {"prompt": "a"}, {"text": "b"})
    batch = [
        (1, "put", ([row],)),
        (2, "put", ([("k2", *row[1:])],)),
        (3, "lookup", (["k1", "k2", "k3"],)),
        (4, "progress", ("m/t", 1, 5, 10, None)),
        (5, "progress", ("m/t", 2, 2, 10, None)),
        (6, "place", ("m/t", 2, PLACE)),
    ]
    answers = {call: (ok, value) for call, ok, value in service.serve(ledger, batch)}
    assert answers[1] == answers[2] == (True, None)
    assert service.commits == 1 and service.answers == 2  # one transaction for both
    assert answers[3] == (True, {"k1": {"text": "b"}, "k2": {"text": "b"}})
    assert answers[4][0] is False and "stopped" in answers[4][1]
    assert answers[5] == (True, None) and ledger.job("m/t").done == 2
    assert [p.place["host"] for p in placed] == ["n1"]
    assert ledger.attempts("m/t")[-1]["host"] == "n1"


def test_a_finished_job_s_files_land_in_the_run_directory_before_it_is_done(tmp_path):
    ledger, owner, service, _ = served(tmp_path / "run")
    ledger.start_attempt("m/t", owner, "")
    scratch = tmp_path / "scratch"
    (scratch / "samples" / "m").mkdir(parents=True)
    (scratch / "samples" / "m" / "t.jsonl").write_bytes(b'{"doc_id": 0}\n')
    (scratch / "attempt.log").write_text("not a job file")
    files = job_files(scratch)
    assert list(files) == ["samples/m/t.jsonl"]
    (answer,) = service.serve(ledger, [(1, "finish", ("m/t", 1, {"metrics": {}}, files))])
    assert answer == (1, True, None)
    assert (tmp_path / "run" / "samples" / "m" / "t.jsonl").read_bytes() == b'{"doc_id": 0}\n'
    assert ledger.job("m/t").status == "done"


def test_a_job_writes_only_its_results_and_samples(tmp_path):
    ledger, owner, service, _ = served(tmp_path)
    ledger.start_attempt("m/t", owner, "")
    for name in ("run.json", "samples/../run.json", "logs/x.log"):
        ((_, ok, why),) = service.serve(ledger, [(1, "finish", ("m/t", 1, {}, {name: b"x"}))])
        assert not ok and "may not write" in why
    assert ledger.job("m/t").status == "running"


def test_a_model_file_missing_or_different_on_a_node_names_the_node_and_the_path(
    tmp_path, smollm2_file
):
    spec = {"model": {"runner": "llama-cpp", "path": str(smollm2_file)}}
    check_files(spec, sha256_of(smollm2_file), "n1 (Ray node 1a2b3c4d)")  # the same file
    with pytest.raises(NodeFileError, match=r"on n1 \(Ray node 1a2b3c4d\), .* differs"):
        check_files(spec, "0" * 64, "n1 (Ray node 1a2b3c4d)")
    missing = {"model": {"runner": "llama-cpp", "path": str(tmp_path / "gone.gguf")}}
    with pytest.raises(NodeFileError, match=f"on n2, {tmp_path / 'gone.gguf'} does not exist"):
        check_files(missing, None, "n2")
    judge = {**spec, "benchmark": {"judge": {"runner": "llama-cpp", "path": "/no/judge.gguf"}}}
    with pytest.raises(NodeFileError, match="/no/judge.gguf does not exist"):
        check_files(judge, None, "n3")


def test_a_missing_file_ends_a_local_attempt_for_good():
    ending = ending_of(EXIT_NODE_FILE, ["ggufbench-error: on vm, /m.gguf does not exist"])
    assert ending.permanent and ending.reason == "on vm, /m.gguf does not exist"


def test_ray_asked_for_where_it_is_not_installed_is_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    said = ray_missing()
    assert said is not None and "pip install 'ggufbench[ray]'" in said
    machine = Machine(cores=2, total_ram=2**30, available_ram=2**30)
    with pytest.raises(ConfigError, match=r"Ray is not installed; install it with"):
        make_executor(Execution(executor="ray"), machine, None)


@pytest.fixture
def smollm2_file():
    from ggufbench.testmodels import smollm2_path

    return smollm2_path()
