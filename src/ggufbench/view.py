"""Progress on the terminal: a bar per job with its node, rate and ETA, and event lines.

On a terminal, rich draws live bars; elsewhere (CI, a log file) only the event
lines are printed, so logs stay readable.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ggufbench.ledger import Ledger


class _RateColumn(TransferSpeedColumn):
    def render(self, task: Any) -> Any:
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} req/s", style="progress.data.speed")


class ProgressView:
    def __init__(self, console: Console, ledger: Ledger) -> None:
        self.console = console
        self.ledger = ledger
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressView:
        self.progress.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.refresh()
        self.progress.__exit__(et, e, tb)

    def refresh(self) -> None:
        hosts = {(a["job_id"], a["n"]): a["host"] for a in self.ledger.attempts()}
        for job in self.ledger.jobs():
            if job.status == "pending" and job.id not in self.tasks:
                continue
            if job.id not in self.tasks:
                self.tasks[job.id] = self.progress.add_task(job.id, total=job.total or None)
            task = self.tasks[job.id]
            host = hosts.get((job.id, job.attempts)) if job.status == "running" else None
            self.progress.update(
                task,
                completed=job.done,
                total=job.total or None,
                description=f"{job.id} [{job.status}]" + (f" on {escape(host)}" if host else ""),
            )

    def event(self, kind: str, data: dict[str, Any]) -> None:
        job, attempt = data.get("job"), data.get("attempt")
        if kind == "start":
            pid = data.get("pid")
            line = f"started  {job} (attempt {attempt}" + (f", pid {pid})" if pid else ")")
        elif kind == "placed":
            line = f"running  {job} (attempt {attempt}) on {data.get('node')}"
        elif kind == "done":
            line = f"[green]done[/]     {job}"
        elif kind == "retry":
            line = f"[yellow]retry[/]    {job} in {data['delay']:.0f}s: {data['error']}"
        elif kind == "failed":
            line = f"[red]failed[/]   {job}: {data['error']}"
        else:
            line = f"{kind} {job}"
        self.console.print(line, highlight=False)
