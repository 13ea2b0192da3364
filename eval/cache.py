"""A disk cache of generations, so an interrupted evaluation resumes where it stopped and a repeated one is free.

One JSONL file per decoding context (backend identity: model and adapter hashes, sampling, backend version);
one line per prompt, keyed by the prompt's sha256. Lines are appended and flushed per batch; a torn last line
from a crash is ignored on the next read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from stegobench.core.provenance import sha256_json


def content_identity(backend) -> dict[str, Any]:
    """A backend's identity less the folder its adapter was read from (content, not location: the same adapter
    stored elsewhere, a leaderboard upload, must hit the same entries; its weights' hash stays in)."""
    return {k: v for k, v in backend.identity().items() if k != "adapter"}


class GenerationCache:
    def __init__(self, root: Path, context: dict[str, Any]):
        self.path = Path(root) / f"{sha256_json(context)[:32]}.jsonl"
        self.entries: dict[str, str] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash
                self.entries[row["key"]] = row["response"]

    @staticmethod
    def key(prompt: str) -> str:
        return hashlib.sha256(prompt.encode("utf-8")).hexdigest()

    def get(self, prompt: str) -> str | None:
        return self.entries.get(self.key(prompt))

    def put_many(self, prompts: list[str], responses: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for p, r in zip(prompts, responses):
                self.entries[self.key(p)] = r
                f.write(json.dumps({"key": self.key(p), "response": r}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
