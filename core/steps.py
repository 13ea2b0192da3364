"""Numbered steps of a long command (the quickstart, the validity study): a header, the command, each step's time."""

from __future__ import annotations

import signal
import subprocess
import time

from . import profile
from .errors import CommandFailed, Interrupted
from .paths import REPO_ROOT


def call_through_ctrl_c(cmd: list[str], cwd=None, child_ignores_ctrl_c: bool = False) -> tuple[int, bool]:
    """(exit code, whether Ctrl-C was pressed) of `cmd`, waiting for it through Ctrl-C: the terminal sends SIGINT
    to every process of its group, and a waiting Python parent used to print a KeyboardInterrupt traceback over
    the child's own one-line stop. The child acts on Ctrl-C (or, `child_ignores_ctrl_c`, starts ignoring it: a
    launcher whose own child takes it back); this process notes it and keeps waiting."""
    pressed: list[bool] = []
    previous = signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
                                if child_ignores_ctrl_c else None)
        code = proc.wait()  # interrupted by the handler above, the wait resumes (PEP 475)
    finally:
        signal.signal(signal.SIGINT, previous)
    return code, bool(pressed)


class Steps:
    """Runs numbered steps (a command, a function or both); `what` names the command to rerun after a failure."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.n, self.start = total, what, 0, time.perf_counter()
        self.seconds: dict[str, float] = {}  # each finished step's wall time, in the order they ran

    def run(self, name: str, title: str, cmd: list[str] | None = None, fn=None):
        self.n += 1
        so_far = (time.perf_counter() - self.start) / 60
        print(f"\n=== [{self.n}/{self.total}] {title}   ({so_far:.1f} min so far)", flush=True)
        start = time.perf_counter()
        with profile.span(profile.Work.STEP, step=name):
            result = self._run(name, cmd, fn)
        self.seconds[name] = round(time.perf_counter() - start, 1)
        print(f"--- {name}: {self.seconds[name]:.0f} s", flush=True)
        return result

    def _run(self, name: str, cmd: list[str] | None, fn):
        result = None
        if cmd is not None:
            shown = ["stegobench", *cmd[3:]] if cmd[1:3] == ["-m", "stegobench.cli"] else cmd
            print("$ " + " ".join(shown), flush=True)
            code, pressed = call_through_ctrl_c(cmd, cwd=REPO_ROOT)
            if pressed:
                raise Interrupted(f"stopped by Ctrl-C in step {self.n} ({name}); run `{self.what}` again to continue "
                                  "(finished steps are reused)")
            if code != 0:
                raise CommandFailed(f"step {self.n} ({name}) failed with exit code {code}; its output is above. Fix "
                                    f"it and run `{self.what}` again (finished steps are reused).")
        if fn is not None:
            result = fn()
        return result
