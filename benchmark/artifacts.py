"""Submitted files, stored content-addressed under the evaluator's data directory.

Names a user typed never become paths: each file is stored as blobs/<sha256[:2]>/<sha256>, and a submission's
folder (artifacts/<artifact sha256>/) holds only names this module chose (FILE_ROLES), linked to those blobs.
An upload is staged in incoming/upload-*/ (its artifact folder is built there too) and published by renames; a
process killed mid-upload leaves only a staging folder, which `clean_staging` removes at the next start-up.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stegobench.core.adapters import ADAPTER_FILES
from stegobench.core.provenance import atomic_write_json, sha256_file, sha256_json

MERGED_REQUIRED = ("config.json",)
MERGED_OPTIONAL = ("generation_config.json", "model.safetensors.index.json")
_SHARD = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors$")
# Weight formats that unpickle (run code) when loaded: refused by name, never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "chat_template.jinja")


def is_allowed_name(kind: str, name: str) -> bool:
    if kind == "adapter":
        return name in ADAPTER_FILES
    return name in MERGED_REQUIRED or name in MERGED_OPTIONAL or bool(_SHARD.match(name))


STAGING_PREFIX = "upload-"


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, mode)
        yield


@contextmanager
def staging(data_dir: Path) -> Iterator[Path]:
    """A fresh private folder for one upload, on the same filesystem as the blobs (so moves are renames), removed
    on exit. It stays locked (flock, released by the kernel when the process dies) while in use, so that
    `clean_staging` removes a killed process's folders and never a live upload's."""
    root = data_dir / "incoming"
    root.mkdir(parents=True, exist_ok=True)
    with _flock(data_dir / "incoming.lock", fcntl.LOCK_SH):  # no clean-up between creating and locking
        folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
        fd = os.open(folder, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def clean_staging(data_dir: Path) -> list[str]:
    """Remove the staging folders of processes that died mid-upload (no one holds their lock); returns their names."""
    root = data_dir / "incoming"
    if not root.is_dir():
        return []
    removed = []
    with _flock(data_dir / "incoming.lock", fcntl.LOCK_EX):
        for entry in sorted(root.glob(STAGING_PREFIX + "*")):
            try:
                fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)
            except OSError:
                continue  # not a folder this module made (a link, a file): left alone
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live upload
            finally:
                os.close(fd)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def collect_folder(folder: Path, kind: str, dest: Path) -> tuple[list[str], list[str]]:
    """Copy the files a submission of `kind` may hold from a local folder into `dest` (operator CLI).
    Returns (names copied, names of pickle weight files seen)."""
    copied, pickles = [], []
    for entry in sorted(folder.iterdir()):
        if entry.suffix.lower() in PICKLE_SUFFIXES:  # as the web refuses them: .BIN is a pickle too
            pickles.append(entry.name)
        elif entry.is_file() and is_allowed_name(kind, entry.name):
            shutil.copyfile(entry, dest / entry.name)
            copied.append(entry.name)
    return copied, pickles


def listing(folder: Path) -> dict[str, str]:
    """{file name: sha256} of a submission folder; its canonical-JSON hash names the artifact."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def commit(data_dir: Path, staged: Path, tokenizer_from: Path | None = None,
           files: dict[str, str] | None = None) -> tuple[str, Path]:
    """Move a validated upload (a `staging` folder) into the blob store and build its artifact folder; returns
    (sha256, folder). The folder is built inside `staged` and published by one rename. `files`: its `listing`,
    when the caller has it already.

    `tokenizer_from` copies the base model's tokenizer into a merged model's folder (uploads carry weights
    and config only) — those files are the evaluator's, not the submitter's, so they are not part of the hash.
    """
    files = files if files is not None else listing(staged)
    artifact = sha256_json(files)
    folder = data_dir / "artifacts" / artifact
    if (folder / "listing.json").exists():
        return artifact, folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    blobs = data_dir / "blobs"
    for name, digest in files.items():
        blob = blobs / digest[:2] / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            os.replace(staged / name, blob)
    build = staged / ".artifact"
    build.mkdir()
    for name, digest in files.items():
        blob, target = blobs / digest[:2] / digest, build / name
        if not blob.exists() and (staged / name).exists():  # removed by a refused duplicate's `discard` meanwhile
            os.replace(staged / name, blob)
        try:
            os.link(blob, target)
        except OSError:
            shutil.copyfile(blob, target)
    if tokenizer_from is not None:
        for name in TOKENIZER_FILES:
            if (tokenizer_from / name).exists():
                shutil.copyfile(tokenizer_from / name, build / name)
    atomic_write_json(build / "listing.json", files)  # last: a folder with listing.json is complete
    try:
        os.replace(build, folder)
    except OSError:  # another submission of the same files won the race; theirs is identical
        pass
    return artifact, folder


def discard(data_dir: Path, artifact_sha256: str) -> None:
    """Remove a refused submission's artifact folder, and each of its blobs no other artifact folder links (a blob
    with one link is held by the blob store alone)."""
    folder = artifact_folder(data_dir, artifact_sha256)
    try:
        files = json.loads((folder / "listing.json").read_text())
    except (OSError, ValueError):
        files = {}
    shutil.rmtree(folder, ignore_errors=True)
    for digest in files.values():
        blob = data_dir / "blobs" / digest[:2] / digest
        try:
            if blob.stat().st_nlink == 1:
                blob.unlink()
        except OSError:
            pass


def artifact_folder(data_dir: Path, artifact_sha256: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{64}", artifact_sha256 or ""):
        raise ValueError(f"not an artifact sha256: {artifact_sha256!r}")
    return data_dir / "artifacts" / artifact_sha256
