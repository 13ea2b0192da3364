"""Turning a submission (a local folder from the CLI, or uploaded files from the web) into a queued job.

Every submission is stored, accepted or not: a refused one as REJECTED with the validation's reason, so the
submitter can read why on the queue page.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from stegobench.core.adapters import adapter_content_sha256
from stegobench.core.errors import UserError
from stegobench.core.provenance import sha256_json

from .artifacts import (ADAPTER_FILES, PICKLE_SUFFIXES, artifact_folder, collect_folder, commit, discard, listing,
                        staging)
from .config import LeaderboardConfig
from .ranking import BASELINE_LABELS, baseline_name
from .store import Store
from .text import fold, name_problem, normalise, visible
from .validation import (Checked, Rejected, ValidationCrashed, check_submission, dedup_key, resolve_base,
                         validate_isolated)

log = logging.getLogger(__name__)

MAX_NAME = 100
MAX_NOTES = 2000
UPLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class SubmissionRequest:
    display_name: str
    submitter: str
    track: str
    base_model: str
    revision: str | None = None
    notes: str = ""
    token_id: int | None = None


@dataclass(frozen=True)
class Outcome:
    id: int
    status: str  # PENDING or REJECTED
    reason: str | None
    duplicate_of: int | None = None


class UploadTooLarge(Rejected):
    pass


TEXT_FIELDS = ("display_name", "submitter", "track", "base_model", "revision", "notes")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text (the database takes UTF-8 without NUL), or None. A name that was not
    UTF-8 reaches Python as lone surrogates (argv, file names)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            shown = repr(value.encode("utf-8", "surrogateescape"))  # the bytes as given: b'run\xff'
        except UnicodeEncodeError:
            shown = ascii(value)
        return f"is not valid UTF-8 ({shown}); use UTF-8 text"
    if "\x00" in value:
        return f"contains a NUL character ({ascii(value)}); remove it"
    return None


def storable(value: str) -> str:
    """`value` with what the database refuses (lone surrogates, NUL) and what a terminal acts on (ESC, CR, bidi
    overrides: text.visible) written as escapes, for a refusal's record."""
    return visible(value.encode("utf-8", "backslashreplace").decode("utf-8"))


def _check_fields(req: SubmissionRequest, cfg: LeaderboardConfig, store: Store) -> SubmissionRequest:
    """The request with its names NFKC-normalised (benchmark/text.py), or Rejected naming the field."""
    for name in TEXT_FIELDS:
        problem = text_problem(getattr(req, name) or "")
        if problem:
            raise Rejected(f"{name} {problem}")
    req = replace(req, display_name=normalise(req.display_name), submitter=normalise(req.submitter),
                  notes=normalise(req.notes))
    for name in ("display_name", "submitter", "base_model"):
        value = getattr(req, name)
        if not value or not value.strip():
            raise Rejected(f"{name} is empty")
        limit = MAX_NAME * 5 if name == "base_model" else MAX_NAME  # a folder path may be long
        if len(value) > limit:
            raise Rejected(f"{name} is longer than {limit} characters")
    if len(req.notes) > MAX_NOTES:
        raise Rejected(f"notes are longer than {MAX_NOTES} characters")
    for name, keep in (("display_name", ""), ("submitter", ""), ("notes", "\r\n\t")):
        problem = name_problem(getattr(req, name), keep)
        if problem:
            raise Rejected(f"{name} {problem}")
    if req.track not in cfg.tracks:
        raise Rejected(f"unknown track {req.track!r}; this evaluator accepts: {', '.join(cfg.tracks)}")
    _check_name_is_not_taken(req, cfg, store)
    return req


def _check_name_is_not_taken(req: SubmissionRequest, cfg: LeaderboardConfig, store: Store) -> None:
    """A name that reads the same as another submitter's entry (or a baseline row) would pass for it."""
    mine = fold(req.display_name)
    for model in cfg.base_models:
        for label in BASELINE_LABELS.values():
            if fold(baseline_name(model, label)) == mine:
                raise Rejected(f"display_name {req.display_name!r} reads the same as the baseline row "
                               f"{baseline_name(model, label)!r}; choose another name")
    for sid, name, submitter in store.names_in_use():
        if submitter != req.submitter and fold(name) == mine:
            raise Rejected(f"display_name {req.display_name!r} reads the same as submission #{sid}'s {visible(name)!r} "
                           "by another submitter (names are compared after NFKC normalisation, case folding and "
                           "mapping look-alike letters); choose another name")


def _check(cfg: LeaderboardConfig, staged: Path, kind: str, base: Path | None, pickles: list[str],
           isolate: bool) -> Checked:
    """check_submission, in a child process with a time limit when `isolate` (the web server: validate_isolated)."""
    args = (staged, kind, base, cfg.max_adapter_rank, int(cfg.max_upload_mb * 2**20), pickles)
    if not isolate:
        return check_submission(*args)
    try:
        return validate_isolated(cfg.validation_timeout_seconds, *args)
    except ValidationCrashed:
        log.exception("validation of an upload failed")
        raise Rejected("validation failed unexpectedly (the evaluator's log has the details); the operator has "
                       "been told, and the same files may be submitted again later") from None


def _finish(cfg: LeaderboardConfig, store: Store, req: SubmissionRequest, kind: str, staged: Path | None,
            pickles: list[str], allow_folders: bool, isolate: bool = False) -> Outcome:
    data = cfg.data_path()
    try:
        req = _check_fields(req, cfg, store)
        if kind != "base" and staged is None:
            raise Rejected("no files were submitted")
        base = resolve_base(req.base_model, cfg.base_models, allow_folders)
        artifact, size, content, files = None, 0, None, None
        if kind != "base":
            checked = _check(cfg, staged, kind, base, pickles, isolate)
            size, content = checked.size_bytes, checked.content_sha256
            files = listing(staged)
            artifact = sha256_json(files)
        key = dedup_key(req.track, req.base_model, content or artifact)
        original = store.holder(key)
        if original is not None:  # refused before anything is stored: a duplicate leaves no files behind
            return _duplicate(store, req, kind, artifact, size, original)
        if kind != "base":
            commit(data, staged, tokenizer_from=base if kind == "merged" else None, files=files)
        new_id, original = store.add_submission(
            display_name=req.display_name, submitter=req.submitter, track=req.track, base_model=req.base_model,
            revision=req.revision, kind=kind, artifact_sha256=artifact, size_bytes=size, notes=req.notes,
            token_id=req.token_id, dedup_key=key)
        if original is not None:  # lost a race with the same content: its files go unless another entry uses them
            if artifact is not None and not store.artifact_in_use(artifact):
                discard(data, artifact)
            return Outcome(new_id, "REJECTED", store.get(new_id)["reason"], original)
        return Outcome(new_id, "PENDING", None)
    except Rejected as exc:
        return _finish_rejected(store, req, kind, str(exc))


@dataclass(frozen=True)
class Requeued:
    ids: list[int]  # back to PENDING
    refused: dict[int, str]  # id -> why it stays FAILED


def requeue(cfg: LeaderboardConfig, store: Store, ids: list[int] | None = None) -> Requeued:
    """FAILED submissions back to the queue, each only if its content is not queued or ranked again meanwhile
    (a FAILED entry frees its dedup key, so the same adapter may have been resubmitted since)."""
    done, refused = [], {}
    for row in store.failed(ids):
        try:
            key = dedup_key(row["track"], row["base_model"], _stored_content(cfg, row))
        except (OSError, ValueError, UserError) as exc:
            refused[row["id"]] = f"its stored files cannot be read ({exc})"
            continue
        holder = store.requeue(row["id"], key)
        if holder is None:
            done.append(row["id"])
        else:
            refused[row["id"]] = f"duplicate of submission #{holder}, which holds the same content now"
    return Requeued(done, refused)


def _stored_content(cfg: LeaderboardConfig, row: dict) -> str | None:
    """What the submission's dedup key was made of (see _finish): an adapter's canonical content, else the
    artifact's sha256 (None for a base model)."""
    if row["kind"] != "adapter" or not row["artifact_sha256"]:
        return row["artifact_sha256"]
    folder = artifact_folder(cfg.data_path(), row["artifact_sha256"])
    return adapter_content_sha256(folder)


def _duplicate(store: Store, req: SubmissionRequest, kind: str, artifact: str | None, size: int,
               original: int) -> Outcome:
    reason = store.duplicate_reason(original)
    new_id, _ = store.add_submission(
        display_name=req.display_name, submitter=req.submitter, track=req.track, base_model=req.base_model,
        revision=req.revision, kind=kind, artifact_sha256=artifact, size_bytes=size, notes=req.notes,
        token_id=req.token_id, reason=reason)
    return Outcome(new_id, "REJECTED", reason, original)


def submit_folder(cfg: LeaderboardConfig, store: Store, req: SubmissionRequest, adapter: str | None = None,
                  merged: str | None = None, allow_folders: bool = True) -> Outcome:
    """The operator's CLI: an adapter folder (peft save_pretrained), a merged model folder, or neither (the base
    model itself)."""
    if adapter and merged:
        raise Rejected("give an adapter or a merged model, not both")
    folder = adapter or merged
    kind = "adapter" if adapter else "merged" if merged else "base"
    if folder is None:
        return _finish(cfg, store, req, kind, None, [], allow_folders)
    if not Path(folder).is_dir():
        raise Rejected(f"{folder}: not a folder")
    problem = special_entry(Path(folder))
    if problem is not None:
        return _finish_rejected(store, req, kind, problem)
    with staging(cfg.data_path()) as staged:
        _, pickles = collect_folder(Path(folder), kind, staged)
        return _finish(cfg, store, req, kind, staged, pickles, allow_folders)


def special_entry(folder: Path) -> str | None:
    """Why a submitted folder cannot be read as plain files, or None. Links are refused, never followed (a
    linked config would copy another file's content into a public reason); a FIFO, socket or a folder where a
    file belongs gets its own accurate reason."""
    if folder.is_symlink():
        return "the submitted folder is a symbolic link; submit a real folder (links are never followed)"
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(root) / name
            shown = ascii(str(path.relative_to(folder)))
            problem = text_problem(name)
            if problem:
                return f"a file name in the submitted folder {problem} (rename the file)"
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                return f"{shown} is a symbolic link; submit regular files (links are never followed)"
            if stat.S_ISDIR(mode) and Path(root) == folder and (name in ADAPTER_FILES or Path(name).suffix.lower()
                                                                  in (".json", ".safetensors", *PICKLE_SUFFIXES)):
                return f"{shown} is a folder where a file belongs; submit the file itself"
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                return f"{shown} is not a regular file (a FIFO, socket or device); submit regular files"
    return None


def submit_uploads(cfg: LeaderboardConfig, store: Store, req: SubmissionRequest, kind: str,
                   uploads: dict[str, tuple[str | None, BinaryIO]]) -> Outcome:
    """The web API: `uploads` maps a canonical file name (chosen by the server from the form field, never by
    the user) to (the user's file name, a readable stream). The user's file name is only read for its
    suffix, to refuse pickle weights without opening them. Reading stops at the size cap."""
    pickles: list[str] = []
    budget = int(cfg.max_upload_mb * 2**20)
    with staging(cfg.data_path()) as staged:
        try:
            for canonical, (user_name, stream) in uploads.items():
                if user_name and Path(user_name).suffix.lower() in PICKLE_SUFFIXES:
                    pickles.append(Path(user_name).name)
                    continue
                with open(staged / canonical, "wb") as out:
                    while chunk := stream.read(UPLOAD_CHUNK):
                        budget -= len(chunk)
                        if budget < 0:
                            raise UploadTooLarge(f"submission is over this evaluator's cap of "
                                                 f"{cfg.max_upload_mb:.0f} MiB")
                        out.write(chunk)
        except UploadTooLarge as exc:
            return _finish_rejected(store, req, kind, str(exc))
        # Validation runs in its own process here: a server's pages must not wait on one submission's checks.
        return _finish(cfg, store, req, kind, staged, pickles, allow_folders=False, isolate=True)


def _finish_rejected(store: Store, req: SubmissionRequest, kind: str, reason: str) -> Outcome:
    """Store a refusal. Its text is made storable first: the reason may quote a name that is not UTF-8."""
    reason = storable(reason)
    new_id, _ = store.add_submission(
        display_name=storable(req.display_name)[:MAX_NAME] or "?", submitter=storable(req.submitter)[:MAX_NAME] or "?",
        track=storable(req.track)[:MAX_NAME], base_model=storable(req.base_model)[:MAX_NAME * 5],
        revision=storable(req.revision)[:MAX_NAME] if req.revision else None, kind=kind, artifact_sha256=None,
        size_bytes=0, notes=storable(req.notes)[:MAX_NOTES], token_id=req.token_id, reason=reason)
    return Outcome(new_id, "REJECTED", reason)
