"""Submitted files, stored content-addressed under the evaluator's data directory.

Names a user typed never become paths: each file is stored as blobs/<sha256[:2]>/<sha256>, and a submission's
folder (artifacts/<artifact sha256>/) holds only names this module chose (FILE_ROLES), linked to those blobs.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from stegobench.core.provenance import atomic_write_json, sha256_file, sha256_json

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
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


def incoming_dir(data_dir: Path) -> Path:
    """A fresh private folder for one upload, on the same filesystem as the blobs (so moves are renames)."""
    root = data_dir / "incoming"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="upload-", dir=root))


def collect_folder(folder: Path, kind: str, dest: Path) -> tuple[list[str], list[str]]:
    """Copy the files a submission of `kind` may hold from a local folder into `dest` (operator CLI).
    Returns (names copied, names of pickle weight files seen)."""
    copied, pickles = [], []
    for entry in sorted(folder.iterdir()):
        if entry.suffix in PICKLE_SUFFIXES:
            pickles.append(entry.name)
        elif entry.is_file() and is_allowed_name(kind, entry.name):
            shutil.copyfile(entry, dest / entry.name)
            copied.append(entry.name)
    return copied, pickles


def listing(folder: Path) -> dict[str, str]:
    """{file name: sha256} of a submission folder; its canonical-JSON hash names the artifact."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def commit(data_dir: Path, staged: Path, tokenizer_from: Path | None = None) -> tuple[str, Path]:
    """Move a validated upload into the blob store and build its artifact folder; returns (sha256, folder).

    `tokenizer_from` copies the base model's tokenizer into a merged model's folder (uploads carry weights
    and config only) — those files are the evaluator's, not the submitter's, so they are not part of the hash.
    """
    files = listing(staged)
    artifact = sha256_json(files)
    folder = data_dir / "artifacts" / artifact
    if (folder / "listing.json").exists():
        shutil.rmtree(staged, ignore_errors=True)
        return artifact, folder
    blobs = data_dir / "blobs"
    for name, digest in files.items():
        blob = blobs / digest[:2] / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            os.replace(staged / name, blob)
    build = folder.with_name(f".{artifact}.{uuid.uuid4().hex}")
    build.mkdir(parents=True)
    for name, digest in files.items():
        target = build / name
        try:
            os.link(blobs / digest[:2] / digest, target)
        except OSError:
            shutil.copyfile(blobs / digest[:2] / digest, target)
    if tokenizer_from is not None:
        for name in TOKENIZER_FILES:
            if (tokenizer_from / name).exists():
                shutil.copyfile(tokenizer_from / name, build / name)
    atomic_write_json(build / "listing.json", files)  # last: a folder with listing.json is complete
    try:
        os.replace(build, folder)
    except OSError:  # another submission of the same files won the race; theirs is identical
        shutil.rmtree(build, ignore_errors=True)
    shutil.rmtree(staged, ignore_errors=True)
    return artifact, folder


def artifact_folder(data_dir: Path, artifact_sha256: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{64}", artifact_sha256 or ""):
        raise ValueError(f"not an artifact sha256: {artifact_sha256!r}")
    return data_dir / "artifacts" / artifact_sha256
