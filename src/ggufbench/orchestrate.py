"""run and resume: preflight, the run directory, the scheduler, the reports."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ggufbench.config import Suite, apply_overrides
from ggufbench.errors import ConfigError
from ggufbench.executors import WORKER_CMD, Executor, make_executor, worker_env
from ggufbench.ledger import Ledger
from ggufbench.plan import model_settings, new_jobs, plan
from ggufbench.preflight import Report, check
from ggufbench.report import print_summary, write_reports
from ggufbench.resources import probe
from ggufbench.rundir import RunDir, create_run, created_here, creator, find_unfinished
from ggufbench.scheduler import Scheduler, Settings
from ggufbench.spare import Spare
from ggufbench.status import StatusWriter
from ggufbench.view import ProgressView

EXIT_CODES = {"done": 0, "partial": 1, "failed": 1, "interrupted": 130}


def preflight(suite: Suite, console: Console) -> Report:
    with console.status("preflight checks", spinner="dots") as spin:
        report = check(suite, say=lambda s: spin.update(f"preflight: {s}"))
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if report.problems:
        raise ConfigError(
            f"{len(report.problems)} problem(s) found, nothing was started:\n  - "
            + "\n  - ".join(report.problems)
        )
    return report


def run_suite(suite: Suite, console: Console, *, fresh: bool = False) -> int:
    with _spare(suite) as spare:  # the first worker imports while the preflight runs
        report = preflight(suite, console)
        with _executor(suite, spare) as executor:  # an unreachable cluster: nothing started
            run = None if fresh else find_unfinished(suite)
            if run is not None:
                console.print(
                    f"resuming the unfinished run {escape(str(run.path))} "
                    "(use --fresh to start a new one)"
                )
            else:
                run = create_run(suite)
                console.print(f"new run: {escape(str(run.path))}")
            # on_finish comes from the suite file this user gave: it runs
            return drive(run, suite, report, console, executor, own_hook=True)


def resume_run(
    path: Path, console: Console, *, executor: str | None = None, address: str | None = None
) -> int:
    """Resume a run, on the executor it ran on unless ``executor`` or ``address`` is given."""
    run = RunDir(path)
    meta = run.meta()  # a clear error if this is not a run directory
    suite = apply_overrides(run.suite(), executor=executor, address=address)
    with _spare(suite) as spare:
        report = preflight(suite, console)
        with _executor(suite, spare) as chosen:
            console.print(f"resuming {escape(str(run.path))}")
            return drive(
                run,
                suite,
                report,
                console,
                chosen,
                retry_failed=True,
                own_hook=created_here(meta),  # another's run directory never runs their command
            )


@contextmanager
def _spare(suite: Suite) -> Iterator[Spare | None]:
    if suite.execution.executor != "local":
        yield None  # jobs run elsewhere
        return
    spare = Spare(WORKER_CMD, worker_env())
    spare.start()
    try:
        yield spare
    finally:
        spare.close()


@contextmanager
def _executor(suite: Suite, spare: Spare | None) -> Iterator[Executor]:
    executor = make_executor(suite.execution, probe(), spare)
    try:
        yield executor
    finally:
        executor.close()


def drive(
    run: RunDir,
    suite: Suite,
    report: Report,
    console: Console,
    executor: Executor,
    *,
    retry_failed: bool = False,
    own_hook: bool = False,
) -> int:
    run.lock()
    ledger = Ledger(run.ledger, create=True)
    owner = ledger.claim()
    stale = ledger.interrupt_running("the process driving this run stopped before it ended")
    if stale:
        console.print(f"{stale} attempt(s) of the previous process were interrupted; continuing")
    known = {job.id for job in ledger.jobs()}
    ledger.add_jobs(new_jobs(plan(suite, auto_shards=executor.slots()), known))
    if retry_failed:
        ledger.db.execute("UPDATE jobs SET status='pending', error=NULL WHERE status='failed'")
    run.update_meta(status="running", pid=os.getpid(), models=report.models)
    executor.attach(run.path, owner)
    writer = StatusWriter(run, ledger)
    with ProgressView(console, ledger) as view:
        scheduler = Scheduler(
            run, ledger, owner, executor, _settings(suite, report), listener=view.event
        )
        scheduler.install_signals()

        def tick() -> None:
            view.refresh()
            writer.maybe_write()

        status = scheduler.loop(tick)
    writer.maybe_write(status, force=True)
    run.update_meta(status=status, pid=None)
    write_reports(run, ledger, status)
    ledger.close()
    run.unlock()
    _on_finish(suite, run, status, console, own_hook)
    console.print(f"run {status}: {run.path}", markup=False)
    print_summary(console, run.path)
    return EXIT_CODES.get(status, 1)


def _settings(suite: Suite, report: Report) -> Settings:
    ex = suite.execution
    timeout = None if ex.request_timeout_s == "auto" else float(ex.request_timeout_s)
    wants_gpu = {m.alias: model_settings(suite, m)["n_gpu_layers"] != 0 for m in suite.models}
    sha256 = {alias: info["sha256"] for alias, info in report.models.items() if "sha256" in info}
    return Settings(
        retries=ex.retries,
        job_timeout_s=ex.job_timeout_s,
        request_timeout_s=timeout,
        footprints=report.footprints,
        wants_gpu=wants_gpu,
        sha256=sha256,
    )


def _on_finish(suite: Suite, run: RunDir, status: str, console: Console, own: bool) -> None:
    """Run execution.on_finish, unless the run directory is someone else's (``own`` false)."""
    command = suite.execution.on_finish
    if not command:
        return
    if not own:
        note = escape(_foreign_hook_note(run, status, command))
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
        return
    env = dict(os.environ, GGUFBENCH_RUN_DIR=str(run.path), GGUFBENCH_STATUS=status)
    done = subprocess.run(command, shell=True, env=env, check=False)
    if done.returncode != 0:
        console.print(f"[yellow]on_finish exited with code {done.returncode}[/]")


def _foreign_hook_note(run: RunDir, status: str, command: str) -> str:
    """Why on_finish did not run on resume, and the line that runs it by hand."""
    who = run.meta().get("creator")
    me = creator()
    if isinstance(who, dict):
        origin = f"was created by {who.get('user')} (uid {who.get('uid')}) on {who.get('host')}"
    else:
        origin = "does not record who created it"
    by_hand = (
        f"GGUFBENCH_RUN_DIR={shlex.quote(str(run.path.resolve()))} GGUFBENCH_STATUS={status}"
        f" sh -c {shlex.quote(command)}"
    )
    return (
        f"on_finish was not run: {run.path} {origin}, and resume runs only the on_finish"
        f" of runs created by the same user on the same host ({me['user']} on {me['host']})."
        f" Its command: {command}\n"
        f"  Check it, then run it by hand with GGUFBENCH_RUN_DIR and GGUFBENCH_STATUS set:"
        f" {by_hand}"
    )
