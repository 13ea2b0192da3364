"""Where a run's time goes: spans of named work, appended to one JSONL file when $STEGOBENCH_PROFILE names it.

    STEGOBENCH_PROFILE=/tmp/qs.jsonl .venv/bin/stegobench quickstart    # (speed/bench.py's quickstart section)
    .venv/bin/python -m stegobench.core.profile /tmp/qs.jsonl            # the table: each step's time by work

Unset (the default), a span costs one environment lookup and writes nothing. Every process of a run appends to
the same file: the quickstart, each `stegobench` command it starts, accelerate's training process. A span knows
its parent within its process (a stack) and across processes: while a span is open, its id is in the
environment ($STEGOBENCH_PROFILE_PARENT), so a process started inside it hangs its spans under it. A span's own
time is its wall time less its children's, so the table adds up to the steps' wall time without double counting.
Each line is one O_APPEND write, so processes never interleave inside a line.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator

ENV = "STEGOBENCH_PROFILE"
PARENT_ENV = "STEGOBENCH_PROFILE_PARENT"


class Work(StrEnum):
    """What a span's own time was spent on (the rows of the profile)."""

    STEP = "step (process exits, waits; outside the rest)"
    IMPORTS = "process start and imports"
    COMMAND = "command (outside the rest)"
    GENERATE_CORPUS = "corpus generation"
    MODEL_LOAD = "model load (transformers)"
    MERGE = "adapter merge (saved folder)"
    ENGINE_START = "vLLM engine start"
    WEIGHT_SWAP = "vLLM weights swapped in place"
    DECODE = "decoding"
    CALIBRATION = "monitor calibration (outside the rest)"
    CONDITION = "condition steps (prompts, cache, white-box)"
    MONITORS = "monitors"
    SCORING = "scoring (semantic fit)"
    RECALL = "recall (outside decoding)"
    CLOZE = "cloze"
    STATISTICS = "statistics (bootstrap)"
    FILE_IO = "file I/O (read corpus, write run)"
    TRAIN_DATA = "training data (tokenize, pack)"
    TRAIN_STEPS = "training steps"
    WORKER_SETUP = "worker set-up (track, store)"
    SUBMIT = "submission checks and upload"


_ids = itertools.count()
_stack: list[str] = []


def model_label(folder: str | Path) -> str:
    """A model folder as the profile counts it: its last two parts (models/NAME, merged/DIGEST)."""
    return "/".join(Path(folder).parts[-2:])


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def _append(path: str, record: dict[str, Any]) -> None:
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _parent() -> str | None:
    return _stack[-1] if _stack else os.environ.get(PARENT_ENV)


@contextmanager
def span(work: Work, **labels: Any) -> Iterator[None]:
    """Time the block as `work` (labels: what a reader needs, e.g. which model) when profiling is on."""
    path = os.environ.get(ENV)
    if not path:
        yield
        return
    span_id, parent = f"{os.getpid()}:{next(_ids)}", _parent()
    previous_env = os.environ.get(PARENT_ENV)
    _stack.append(span_id)
    os.environ[PARENT_ENV] = span_id
    start = time.time()
    try:
        yield
    finally:
        end = time.time()
        _stack.pop()
        if previous_env is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = previous_env
        _append(path, {"id": span_id, "parent": parent, "work": work.value, "start": round(start, 4),
                       "seconds": round(end - start, 4), "pid": os.getpid(), "labels": labels})


def process_started() -> float | None:
    """Epoch seconds when this process started (Linux /proc), or None where that cannot be read."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def record_imports(what: str) -> None:
    """The time from this process's start to now (the interpreter and its imports) as one IMPORTS span."""
    path, started = os.environ.get(ENV), process_started()
    if not path or started is None:
        return
    _append(path, {"id": f"{os.getpid()}:{next(_ids)}", "parent": _parent(), "work": Work.IMPORTS.value,
                   "start": round(started, 4), "seconds": round(max(0.0, time.time() - started), 4),
                   "pid": os.getpid(), "labels": {"process": what}})


# ---------------------------------------------------------------- reading a profile


@dataclass
class Span:
    id: str
    parent: str | None
    work: str
    start: float
    seconds: float
    labels: dict[str, Any]
    children: list["Span"] = field(default_factory=list)

    @property
    def own_seconds(self) -> float:
        return max(0.0, self.seconds - sum(c.seconds for c in self.children))


def read_spans(path: str | Path) -> list[Span]:
    """Every span in the file, children linked to parents (a span whose parent is not in the file is a root)."""
    spans = [Span(r["id"], r["parent"], r["work"], r["start"], r["seconds"], r.get("labels", {}))
             for r in map(json.loads, Path(path).read_text().splitlines()) if r]
    by_id = {s.id: s for s in spans}
    for s in spans:
        if s.parent in by_id:
            by_id[s.parent].children.append(s)
    return spans


@dataclass
class Profile:
    """Each step's wall time and its own time by work (count, seconds), and how often each model was loaded."""

    steps: dict[str, float]
    by_step: dict[str, dict[str, tuple[int, float]]]
    loads: dict[str, dict[str, int]]  # model folder name -> {"model load": n, "vLLM engine start": n, ...}

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "loads": self.loads,
                "by_step": {s: {w: {"count": n, "seconds": round(t, 1)} for w, (n, t) in rows.items()}
                            for s, rows in self.by_step.items()}}


LOAD_WORK = (Work.MODEL_LOAD, Work.ENGINE_START, Work.MERGE, Work.WEIGHT_SWAP)


def summarize(spans: list[Span]) -> Profile:
    """Every span's own time under the step it ran in (its nearest STEP ancestor; none: 'other')."""
    ids = {s.id for s in spans}
    steps: dict[str, float] = {}
    by_step: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
    loads: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    load_work = {w.value for w in LOAD_WORK}

    def visit(s: Span, step: str) -> None:
        if s.work == Work.STEP.value:
            step = str(s.labels.get("step", "?"))
            steps[step] = steps.get(step, 0.0) + s.seconds
        n, t = by_step[step].get(s.work, (0, 0.0))
        by_step[step][s.work] = (n + 1, t + s.own_seconds)
        if s.work in load_work:
            loads[str(s.labels.get("model", "?"))][s.work] += 1
        for c in sorted(s.children, key=lambda c: c.start):
            visit(c, step)

    for root in sorted((s for s in spans if s.parent not in ids), key=lambda s: s.start):
        visit(root, "other")
    return Profile(steps, dict(by_step), {m: dict(v) for m, v in loads.items()})


def render(profile: Profile) -> str:
    """A plain-text table: per step, each kind of work's count and own seconds, largest first."""
    lines = [f"{'step':8s} {'work':46s} {'count':>6s} {'seconds':>8s}"]
    for step, rows in profile.by_step.items():
        lines.append(f"{step:8s} {'(wall time)':46s} {'':>6s} {profile.steps.get(step, 0):8.1f}")
        for work, (n, t) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
            if t >= 0.05:
                lines.append(f"{'':8s} {work:46s} {n:6d} {t:8.1f}")
    lines.append("models loaded (by folder): " + "; ".join(
        f"{m}: " + ", ".join(f"{w} x{n}" for w, n in sorted(c.items())) for m, c in sorted(profile.loads.items())))
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(summarize(read_spans(sys.argv[1]))))
