"""The real ``ggufbench`` entry point run in this process, as a test harness.

``ggufbench.cli.main`` is called exactly as the console script calls it, with
click's runner isolating argv, stdout, stderr and the environment, so its own
handling of user errors and interrupts is what a test sees. Any exception
other than SystemExit escapes to the test.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from unittest import mock

from typer.testing import CliRunner

from ggufbench.cli import main
from ggufbench.cli._app import app

ENV = {"COLUMNS": "200", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def invoke(*args: str) -> Outcome:
    """Run ``ggufbench ARGS`` through ``main()``; its exit code and what it printed."""
    # main() registers every command on the shared app; keep one registration per call.
    saved = list(app.registered_commands), list(app.registered_groups)
    code = 0
    argv = ["ggufbench", *args]
    with CliRunner().isolation(env=ENV) as (out, err, _), mock.patch.object(sys, "argv", argv):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            app.registered_commands[:], app.registered_groups[:] = saved
        stdout, stderr = out.getvalue(), err.getvalue()
    return Outcome(code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
