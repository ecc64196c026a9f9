"""A scripted fake worker for scheduler tests: no model, behaviour from the job spec.

It takes the same arguments as ``python -m ggufbench.worker`` (or, as a spare,
``--standby`` and then its job on stdin) and does what the
job's spec says: finish, crash, hang past its deadline, fail once, fail until
its attempt number reaches ``ok_from``, or fail with an error that retrying
cannot fix.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ggufbench.executors._base import ERROR_PREFIX, EXIT_USER_ERROR
from ggufbench.ledger import Ledger
from ggufbench.spare import STANDBY_FLAG

spare = sys.argv[1:] == [STANDBY_FLAG]
if spare:  # the spare protocol of ggufbench.worker: the job arrives on stdin
    order = json.loads(sys.stdin.readline() or "null")
    if order is None:
        sys.exit(0)
    os.environ.update(order["env"])
    fd = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv[1:] = order["argv"]

parser = argparse.ArgumentParser()
parser.add_argument("run_dir", type=Path)
parser.add_argument("job_id")
parser.add_argument("owner")
parser.add_argument("--threads", type=int)
args = parser.parse_args()
ledger = Ledger(args.run_dir / "ledger.sqlite")
job = ledger.job(args.job_id)
behaviour = job.spec["behaviour"]
with open(args.run_dir / "events.jsonl", "a") as fh:
    event = {
        "job": job.id,
        "start": time.time(),
        "threads": args.threads,
        "spare": spare,
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    fh.write(json.dumps(event) + "\n")
time.sleep(job.spec.get("sleep", 0.0))
if behaviour == "crash":
    os.abort()
if behaviour == "fail_once" and job.attempts == 1:
    sys.exit(1)
if behaviour == "fail_until" and job.attempts < job.spec["ok_from"]:
    sys.exit(1)
if behaviour == "permanent":
    print(f"{ERROR_PREFIX}lm-eval task 'nope' does not exist", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
if behaviour == "hang":
    ledger.progress(args.owner, job.id, 0, 1, time.time() + 0.3)
    time.sleep(60)
ledger.finish_job(args.owner, job.id, {"metrics": {"acc": {"value": 1.0, "stderr": 0.0}}})
with open(args.run_dir / "events.jsonl", "a") as fh:
    fh.write(json.dumps({"job": job.id, "end": time.time()}) + "\n")
