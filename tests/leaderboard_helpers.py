"""Helpers shared by the leaderboard tests: adapter folders to edit, a submission request, and a raw ASGI
multipart request (to send a body at the pace a test chooses)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from stegobench.benchmark.submit import SubmissionRequest


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))


def request(**kw) -> SubmissionRequest:
    return SubmissionRequest(**{"display_name": "run", "submitter": "tester", "track": "quickstart",
                                "base_model": "tiny-llama", **kw})


def multipart_scope(path: str, headers: dict[str, str], boundary: str) -> dict:
    """The ASGI scope of a multipart POST to `path` from 127.0.0.1."""
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in
                        {"content-type": f"multipart/form-data; boundary={boundary}", **headers}.items()],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
