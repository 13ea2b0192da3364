"""The study's compact results, checked into the repository: what the report needs, without samples' text or
weights, so docs/validity.md can be rebuilt (`--report-only`) from arms run at different times on different
machines.

    studies/results/<arm>/<run>/results.json        the eval run's results (eval/runlog.py)
    studies/results/<arm>/<run>/samples.jsonl.gz    its samples: scores, monitor values, scalar white-box readings
    studies/results/<arm>/<run>/dataset.json        the corpus manifest's code book and config (code kind, counts)
    studies/results/<arm>/<run>/compact.json        where it came from (folder, results.json sha256 and time) and
                                                    the hash of its inputs (a later sitting skips the run)
    studies/results/<arm>/timings.json              each step's seconds, the machine and the revision
    studies/results/selection/choice.json           the recipe the later arms train with
    studies/results/mde_components.json             the positive control's variance components (eval/mde.py)

A run is compacted again only when its source changed; an older source never replaces a newer copy (a machine
with yesterday's runs/ cannot undo today's arm).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stegobench.core.errors import InputError
from stegobench.core.provenance import atomic_write_json, git_revision, sha256_file
from stegobench.core.records import read_json_record
from stegobench.data_gen.generate import MANIFEST, read_manifest
from stegobench.data_gen.records import CorpusIdentity
from stegobench.eval.runlog import RESULTS, RunLog, RunLogError, read_run, write_compact_run

from .arms import Arm, RecipeChoice

COMPACT = "compact.json"
DATASET = "dataset.json"
TIMINGS = "timings.json"
CHOICE = "choice.json"


@dataclass(frozen=True)
class Compacted:
    """What compacting one run did: 'added', 'replaced', 'unchanged' or 'kept' (the store's copy is newer)."""

    arm: Arm
    name: str
    action: str

    def __str__(self) -> str:
        why = {"kept": " (the store's copy is newer than this source)"}.get(self.action, "")
        return f"{self.arm.value}/{self.name}: {self.action}{why}"


def kept_corpus(run_folder: Path) -> CorpusIdentity | None:
    """What a compact run kept of its corpus's manifest (dataset.json), None when it kept none."""
    path = run_folder / DATASET
    return read_json_record(CorpusIdentity, path, "the study's store") if path.is_file() else None


class ResultsStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, arm: Arm, name: str) -> Path:
        return self.root / arm.value / name

    # ------------------------------------------------------------ runs

    def run(self, arm: Arm, name: str) -> RunLog | None:
        folder = self.folder(arm, name)
        return read_run(folder) if (folder / RESULTS).is_file() else None

    def runs(self, arm: Arm) -> dict[str, RunLog]:
        base = self.root / arm.value
        if not base.is_dir():
            return {}
        return {p.name: read_run(p) for p in sorted(base.iterdir()) if (p / RESULTS).is_file()}

    def dataset(self, arm: Arm, name: str) -> CorpusIdentity | None:
        """The run's corpus manifest as kept (config and code book), None when it was not there to keep."""
        return kept_corpus(self.folder(arm, name))

    def inputs_sha256(self, arm: Arm, name: str) -> str | None:
        """The inputs' hash a kept run was compacted with (studies/validity.py `run_inputs_sha256`; None: none
        recorded, or the run is not kept)."""
        if not (self.folder(arm, name) / RESULTS).is_file():
            return None
        return (_read_json(self.folder(arm, name) / COMPACT) or {}).get("inputs_sha256")

    def compact(self, arm: Arm, source: str | Path, name: str | None = None, note: str = "",
                inputs_sha256: str | None = None) -> Compacted:
        """Keep a compact copy of the eval run in `source` under <arm>/<name> (default: its folder name); `note`
        says anything its origin does not (a rescored copy of another folder); `inputs_sha256` what the run
        depends on, so a later sitting skips it."""
        source = Path(source)
        name = name or source.name
        try:
            run = read_run(source)
        except RunLogError as e:
            raise InputError(f"cannot keep {source} in {self.root}: {e}") from None
        results = source / RESULTS
        origin = {"source": str(source.resolve()), "source_results_sha256": sha256_file(results),
                  "source_mtime": os.stat(results).st_mtime,
                  "evaluated_at": run.environment.get("git_revision"), "compacted_at": git_revision(),
                  **({"note": note} if note else {}), **({"inputs_sha256": inputs_sha256} if inputs_sha256 else {})}
        dest = self.folder(arm, name)
        kept = _read_json(dest / COMPACT)
        action = "added"
        if kept is not None and (dest / RESULTS).is_file():
            if kept.get("source_results_sha256") == origin["source_results_sha256"]:
                if inputs_sha256 and kept.get("inputs_sha256") != inputs_sha256:
                    atomic_write_json(dest / COMPACT, {**kept, "inputs_sha256": inputs_sha256})
                return Compacted(arm, name, "unchanged")
            if kept.get("source_mtime", 0) > origin["source_mtime"]:
                return Compacted(arm, name, "kept")
            action = "replaced"
        corpus = Path(run.dataset.path)
        manifest = read_manifest(corpus) if (corpus / MANIFEST).is_file() else None

        def extras(staging: Path) -> None:
            atomic_write_json(staging / COMPACT, origin)
            if manifest is not None:
                atomic_write_json(staging / DATASET, asdict(manifest.identity()))

        write_compact_run(run, dest, extras)
        return Compacted(arm, name, action)

    # ------------------------------------------------------------ timings, the recipe

    def timings(self, arm: Arm) -> dict[str, Any]:
        return _read_json(self.root / arm.value / TIMINGS) or {}

    def record_timings(self, arm: Arm, steps: dict[str, float], skipped: set[str], machine: dict[str, Any]) -> None:
        """This sitting's step times for `arm`; a step skipped now (finished earlier) keeps the time it took then."""
        before = dict(self.timings(arm).get("steps", []))
        merged = {name: (before.get(name, seconds) if name in skipped else seconds) for name, seconds in steps.items()}
        merged = {**{k: v for k, v in before.items() if k not in merged}, **merged}
        atomic_write_json(self.root / arm.value / TIMINGS,
                          {"steps": list(merged.items()), "total_seconds": round(sum(merged.values()), 1),
                           "machine": machine, "revision": git_revision()})

    def choice(self) -> RecipeChoice | None:
        doc = _read_json(self.root / Arm.SELECTION.value / CHOICE)
        if doc is None:
            return None
        try:
            return RecipeChoice.from_record(doc)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{self.root / Arm.SELECTION.value / CHOICE}: malformed ({type(e).__name__}: {e}); "
                             "run `--only selection` again to rewrite it") from None

    def record_choice(self, choice: RecipeChoice) -> Path:
        path = self.root / Arm.SELECTION.value / CHOICE
        atomic_write_json(path, {**choice.to_record(), "revision": git_revision()})
        return path


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable ({e})") from None
