"""The executors' parts that need no cluster: the driver's ledger service, the model file
check on a node, what a worker's ending means, and Ray asked for where it is missing."""

import socket
import sys

import pytest

from ggufbench import status
from ggufbench.benchmarks.elyza_data import demo_dataset_path
from ggufbench.config import Execution, parse_suite
from ggufbench.errors import ConfigError
from ggufbench.executors import EXIT_NODE_FILE, ending_of, make_executor, ray_missing
from ggufbench.executors._relay import LedgerService, job_files
from ggufbench.gguf_file import sha256_of
from ggufbench.jobrun import NodeFileError, check_files
from ggufbench.ledger import JobRow, Ledger
from ggufbench.preflight import check
from ggufbench.resources import Machine
from ggufbench.status import Rates
from ggufbench.testmodels import smollm2_path

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
        (7, "progress", ("m/t", 2, 3, 10, None)),  # the later report of the same attempt
    ]
    answers = {call: (ok, value) for call, ok, value in service.serve(ledger, batch)}
    assert answers[1] == answers[2] == (True, None)
    assert service.commits == 1 and service.answers == 2  # one transaction for both
    assert answers[3] == (True, {"k1": {"text": "b"}, "k2": {"text": "b"}})
    assert answers[4][0] is False and "stopped" in answers[4][1]
    assert answers[5] == answers[7] == (True, None) and ledger.job("m/t").done == 3
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


def test_ray_client_asked_for_where_it_is_not_installed_is_one_sentence(monkeypatch):
    on_ray = pytest.importorskip("ggufbench.executors._ray")
    monkeypatch.setattr(on_ray, "_has_client", lambda: False)
    with socket.create_server(("127.0.0.1", 0)) as listening:  # something answers there
        address = f"ray://127.0.0.1:{listening.getsockname()[1]}"
        with pytest.raises(ConfigError, match=r"needs Ray's client, which is not installed"):
            on_ray.reachable(address)
        plain = address.removeprefix("ray://")
        assert on_ray.reachable(plain) == plain  # host:port needs no client


def test_a_client_connection_the_head_could_not_serve_is_made_again(monkeypatch):
    """The head's server for a connection can fail to start; a fresh connection gets another.
    Ray itself is replaced by a recording stand-in: no head can be made to fail on purpose."""
    on_ray = pytest.importorskip("ggufbench.executors._ray")
    calls: list[str] = []

    def init(address: str, **_: object) -> None:
        calls.append(address)
        if len(calls) <= failures:
            raise ConnectionAbortedError("Initialization failure from server:\nTraceback ...")

    monkeypatch.setattr(on_ray.ray, "init", init)
    failures = 1
    on_ray._client_init("ray://127.0.0.1:10001")
    assert calls == ["ray://127.0.0.1:10001"] * 2
    calls.clear()
    failures = 1 + on_ray.CLIENT_INIT_RETRIES  # every connection fails: Ray's error, as it was
    with pytest.raises(ConnectionAbortedError, match="Initialization failure from server"):
        on_ray._client_init("ray://127.0.0.1:10001")
    assert len(calls) == 1 + on_ray.CLIENT_INIT_RETRIES


@pytest.fixture
def smollm2_file():
    return smollm2_path()


def test_a_running_job_s_rate_is_its_answers_per_second_lately(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(status.time, "monotonic", lambda: clock[0])
    rates = Rates()

    def job(done, status="running", attempts=1):
        return JobRow("m/t", "m", "t", "lm_eval", {}, status, attempts, done=done, total=99)

    assert rates.observe([job(0)]) == {}
    for done in range(1, 40):
        clock[0] += 2.0
        seen = rates.observe([job(done * 3)])
    assert seen == {"m/t": 1.5}  # 3 answers every 2 s, over the last 30 s
    clock[0] += 2.0
    assert rates.observe([job(0, attempts=2)]) == {}  # a new attempt counts afresh
    assert rates.observe([job(5, status="done", attempts=2)]) == {}


def test_on_ray_the_preflight_leaves_memory_to_the_cluster(tmp_path, monkeypatch):
    tiny = Machine(cores=2, total_ram=2**20, available_ram=2**20)  # no model fits here
    monkeypatch.setattr("ggufbench.resources.probe", lambda: tiny)
    model = str(smollm2_path())
    data = {
        "models": [{"alias": "m", "path": model, "n_gpu_layers": 0}],
        "benchmarks": [{"elyza_tasks_100": {"dataset": str(demo_dataset_path())}}],
        "execution": {"executor": "local"},
    }
    data["benchmarks"][0]["elyza_tasks_100"]["judge"] = {"path": model, "n_ctx": 8192}
    local = check(parse_suite(data, tmp_path), datasets=False)
    assert len([p for p in local.problems if "but this machine has" in p]) == 2
    data["execution"]["executor"] = "ray"
    on_ray = check(parse_suite(data, tmp_path), datasets=False)
    assert not [p for p in on_ray.problems if "but this machine has" in p]
    assert on_ray.footprints == local.footprints  # what each job reserves on its node
    assert on_ray.footprints["m/elyza_tasks_100"] > on_ray.footprints["m"]


def test_an_attempt_told_to_stop_is_refused_but_its_answers_are_kept(tmp_path):
    ledger, owner, service, _ = served(tmp_path)
    ledger.start_attempt("m/t", owner, "")
    service.stop_attempts([("m/t", 1)])
    row = ("k1", "generate", "model", {"prompt": "a"}, {"text": "b"})
    batch = [(1, "progress", ("m/t", 1, 1, 2, None)), (2, "put", ([row],))]
    answers = {call: (ok, value) for call, ok, value in service.serve(ledger, batch)}
    assert answers[1][0] is False and "stopped by the driver" in answers[1][1]
    assert answers[2] == (True, None) and ledger.cache_count() == 1
