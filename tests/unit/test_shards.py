"""Shards: a task's documents split into ranges, each a job, the task's job after them."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from ggufbench.benchmarks.lm_eval_shard import in_shard
from ggufbench.config import validate_suite
from ggufbench.executors import LocalExecutor
from ggufbench.ledger import JobRow, Ledger
from ggufbench.plan import is_shard, new_jobs, plan, waits_for
from ggufbench.resources import Machine
from ggufbench.rundir import RunDir
from ggufbench.scheduler import Scheduler, Settings, outcome

WORKER = [sys.executable, str(Path(__file__).with_name("scripted_worker.py"))]
MACHINE = Machine(cores=8, total_ram=8 * 2**30, available_ram=8 * 2**30)


def suite(shards):
    return validate_suite(
        {
            "models": [{"alias": "a", "path": "/m/a.gguf"}],
            "benchmarks": [
                {"lm_eval": {"tasks": ["t1", "t2"], "shards": shards}},
                {"elyza_tasks_100": {"limit": 3}},
            ],
        },
        "suite.yaml",
    )


def test_a_sharded_task_is_its_shards_then_itself():
    jobs = plan(suite(3))
    ids = [j.id for j in jobs]
    assert ids[:4] == ["a/t1#1-of-3", "a/t1#2-of-3", "a/t1#3-of-3", "a/t1"]
    assert ids[-1] == "a/elyza_tasks_100"  # only lm-eval tasks are sharded
    parent = jobs[3]
    assert waits_for(parent) == ids[:3] and not is_shard(parent)
    assert [j.spec["shard"] for j in jobs[:3]] == [[0, 3], [1, 3], [2, 3]]
    assert all(j.spec["parent"] == "a/t1" and j.benchmark == "t1" for j in jobs[:3])


def test_auto_takes_the_executor_s_slots_and_a_run_keeps_its_shards():
    first = plan(suite("auto"), auto_shards=2)
    assert [j.id for j in first][:3] == ["a/t1#1-of-2", "a/t1#2-of-2", "a/t1"]
    assert [j.id for j in plan(suite("auto"))][:1] == ["a/t1"]  # one slot: no shards
    # resumed where more slots are free: the jobs already planned keep their two shards
    later = new_jobs(plan(suite("auto"), auto_shards=4), {j.id for j in first})
    assert later == []


@given(
    docs=st.dictionaries(st.sampled_from(["x", "y", "z"]), st.sets(st.integers(0, 60)), min_size=1),
    count=st.integers(1, 7),
    repeats=st.integers(1, 3),
)
def test_every_request_is_in_exactly_one_shard_of_contiguous_ranges(docs, count, repeats):
    requests = [
        SimpleNamespace(task_name=task, doc_id=doc)
        for task, ids in docs.items()
        for doc in sorted(ids)
        for _ in range(repeats)
    ]
    seen = []
    for index in range(count):
        mine = in_shard(requests, index, count)
        seen += mine
        for task, ids in docs.items():
            chosen = sorted({requests[i].doc_id for i in mine if requests[i].task_name == task})
            ordered = sorted(ids)
            if chosen:  # a range of the task's documents in order
                start = ordered.index(chosen[0])
                assert ordered[start : start + len(chosen)] == chosen
            assert abs(len(chosen) - len(ids) / count) < 1
    assert sorted(seen) == list(range(len(requests)))


def test_the_task_s_job_starts_once_its_shards_have_ended(tmp_path):
    run = RunDir(tmp_path)
    ledger = Ledger(run.ledger, create=True)
    owner = ledger.claim()
    shards = [
        JobRow(f"m/t#{i}", "m", "t", "lm_eval", {"behaviour": "ok", "sleep": 0.5, "shard": [i, 2]})
        for i in range(2)
    ]
    shards[1] = JobRow("m/t#1", "m", "t", "lm_eval", {"behaviour": "permanent", "shard": [1, 2]})
    parent = JobRow("m/t", "m", "t", "lm_eval", {"behaviour": "ok", "shards": ["m/t#0", "m/t#1"]})
    ledger.add_jobs([*shards, parent])
    executor = LocalExecutor(MACHINE, 3, worker_cmd=WORKER)
    executor.attach(run.path, owner)
    assert Scheduler(run, ledger, owner, executor, Settings()).loop() == "done"
    rows = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    ends = [r["end"] for r in rows if "end" in r and r["job"] != "m/t"]
    (start,) = [r["start"] for r in rows if "start" in r and r["job"] == "m/t"]
    assert start >= max(ends)
    # a failed shard leaves its documents to the task's job, whose status is the run's
    assert {j.id: j.status for j in ledger.jobs()}["m/t#1"] == "failed"
    assert outcome(ledger.jobs()) == "done"
