"""The evaluator's web app: leaderboard pages, model detail pages, the queue, a submission form and a JSON API.

    stegobench serve --host 127.0.0.1 --port 8000        # then open http://127.0.0.1:8000/

Server-side Jinja2 templates with autoescaping (every user-typed string is escaped), no front-end build step.
Reading needs no token; submitting needs a token from `stegobench leaderboard add-token NAME`, sent as
`Authorization: Bearer TOKEN` (API) or in the form's token field, which is checked before the body is read
(web/guard.py). Read pages are served from a cache at most CACHE_SECONDS old (web/cache.py); the queue is
paged. OpenAPI schema: /openapi.json.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from stegobench.core.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

from ..artifacts import clean_staging
from ..config import LeaderboardConfig
from ..ranking import (COLUMNS, Learned, VersusBase, cell_text, format_value, leaderboard_rows, plain_row, sort_rows,
                       track_mde, verdict_text)
from ..store import Store
from ..submit import Outcome, SubmissionRequest, submit_uploads
from ..validation import load_checkers
from ..text import visible
from stegobench.eval import labels

from .cache import CachedReads
from .evidence import PER_GROUP, comparison, measure_rows, sample_groups
from .guard import Gate, Refused, UploadGuard

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PLOTS = ("rates.png", "per_mapping.png")  # report images a detail page may show, by fixed name
CACHE_SECONDS = 1.0  # a finished job shows up within a second; measured: see speed/serve_load.py
QUEUE_PAGE = 50  # submissions per queue page
DETAILS_KEPT = 256  # finished runs' detail tables kept in memory
MAX_ID = 2**63 - 1  # the id column's range: a `before` past it is refused (422), not a database error


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "-"


def create_app(cfg: LeaderboardConfig, store: Store | None = None) -> FastAPI:
    store = store or Store(cfg.db_url())
    removed = clean_staging(cfg.data_path())  # uploads of a server killed mid-upload
    if removed:
        log.warning("removed %d staging folder(s) left by a stopped upload: %s", len(removed), ", ".join(removed))
    # Imported now, once: a lazy `transformers` import racing in parallel first uploads failed them with 500s.
    load_checkers(isolated=True)  # uploads are validated in processes forked from a server started now
    app = FastAPI(title="stegobench leaderboard", version="1",
                  description="Submit LoRA adapters or merged models; read ranked covert-use scores.")
    # Autoescaping makes submitted text inert HTML; `finalize` also writes its control and invisible characters
    # (bidi overrides, zero-width) as escapes, so a stored name cannot reorder or hide itself on a page.
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      finalize=lambda v: visible(v, keep="\n\t"))
    env.filters["interval"] = format_value
    env.filters["verdict"] = verdict_text
    env.filters["when"] = _fmt_time
    env.globals.update(cell=cell_text, indistinct=VersusBase.NOT_DISTINGUISHABLE.value,
                       none_shown=Learned.NONE_SHOWN.value, measure=labels.measure, per_group=PER_GROUP)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    tracks = list(cfg.tracks)
    cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def ranked(track: str) -> list[dict[str, Any]]:
        """Leaderboard rows, recomputed at most once per CACHE_SECONDS: readers far outnumber finished jobs."""
        hit = cache.get(track)
        if hit is None or time.monotonic() - hit[0] > CACHE_SECONDS:
            hit = cache[track] = (time.monotonic(), leaderboard_rows(store, track))
        return [dict(r) for r in hit[1]]

    mdes: dict[str, Any] = {}

    def mde(track: str):
        """The track's MDE, computed once: it depends on the track config and the components file alone."""
        if track not in mdes:
            mdes[track] = track_mde(cfg, track)
        return mdes[track]

    details: OrderedDict[tuple[int, str], dict[str, Any]] = OrderedDict()

    def run_detail(sub: dict[str, Any]) -> dict[str, Any]:
        """_run_detail, kept per finished run: a run folder never changes once its job is FINISHED, and reading
        its samples was the slowest part of any page (a render blocks the event loop: web/cache.py)."""
        if not sub.get("result"):
            return _run_detail(sub, cfg)
        key = (sub["id"], sub["result"]["run_dir"])
        if key not in details:
            detail = _run_detail(sub, cfg)
            if detail.get("missing"):
                return detail  # the operator may restore the folder
            details[key] = detail
            while len(details) > DETAILS_KEPT:
                details.popitem(last=False)
        details.move_to_end(key)
        return details[key]

    def page(name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(tracks=tracks, **ctx)
        return HTMLResponse(html, status_code=status_code)

    def known_track(track: str) -> str:
        if track not in cfg.tracks:
            raise HTTPException(404, f"unknown track {track!r}; tracks: {', '.join(tracks)}")
        return track

    # -- upload admission (before the body is read: web/guard.py) -------------------------------------

    def authenticate(token: str | None) -> tuple[int, str]:
        owner = store.token_owner(token.strip() if token else None)
        if owner is None:
            raise Refused(401, "a valid submitter token is required (ask the operator: stegobench leaderboard "
                               "add-token NAME)", headers={"WWW-Authenticate": "Bearer"})
        return owner

    def reserve(owner: tuple[int, str]) -> None:
        if not store.reserve_upload(owner[0], cfg.submissions_per_hour, 3600):
            raise Refused(429, f"rate limit: {cfg.submissions_per_hour} submissions per hour per token",
                          headers={"Retry-After": "600"})

    def refusal(path: str, refused: Refused) -> Response:
        if path == "/submit":
            return page("submit.html", status_code=refused.status, base_models=cfg.base_models, outcome=None,
                        error=refused.detail)
        return ApiJSON({"detail": refused.detail}, status_code=refused.status)

    app.add_middleware(UploadGuard, gate=Gate(
        routes={"/api/submissions": "header", "/submit": "form"},
        max_body=int(cfg.max_upload_mb * 2**20) + 2**20,  # the files plus room for the form's text fields
        too_large=f"upload over this evaluator's cap of {cfg.max_upload_mb:.0f} MiB",
        authenticate=authenticate, reserve=reserve, respond=refusal,
        idle_timeout=cfg.upload_idle_timeout_seconds, body_timeout=cfg.upload_timeout_seconds))

    def owner_of(request: Request) -> tuple[int, str]:
        owner = getattr(request.state, "owner", None)  # set by the guard, which admitted this upload
        if owner is None:
            raise HTTPException(401, "a valid submitter token is required")
        return owner

    def accept(owner: tuple[int, str], display_name: str, track: str, base_model: str, revision: str | None,
               notes: str, adapter_config: UploadFile | None, adapter_weights: UploadFile | None,
               merged_config: UploadFile | None, merged_weights: UploadFile | None) -> Outcome:
        req = SubmissionRequest(display_name=display_name, submitter=owner[1], track=track, base_model=base_model,
                                revision=revision or None, notes=notes or "", token_id=owner[0])
        # Canonical names come from the form field; the user's file name is never a path.
        if adapter_config is not None or adapter_weights is not None:
            kind, files = "adapter", {ADAPTER_CONFIG: adapter_config, ADAPTER_WEIGHTS: adapter_weights}
        elif merged_config is not None or merged_weights is not None:
            kind, files = "merged", {"config.json": merged_config, "model.safetensors": merged_weights}
        else:
            kind, files = "base", {}
        uploads = {name: (f.filename, f.file) for name, f in files.items() if f is not None}
        return submit_uploads(cfg, store, req, kind if uploads else "base", uploads)

    # -- pages ------------------------------------------------------------------------------------------
    # Read routes are async (rendered on the event loop), and CachedReads answers a repeated read in front of
    # them: each page is rendered at most once per CACHE_SECONDS (web/cache.py).
    app.add_middleware(CachedReads, ttl=CACHE_SECONDS)

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse(f"/track/{tracks[0]}")

    @app.get("/track/{track}", response_class=HTMLResponse, include_in_schema=False)
    async def track_page(track: str, sort: str = "rank", order: str = "desc") -> Response:
        known_track(track)

        rows = ranked(track)
        if sort != "rank":
            rows = sort_rows(rows, sort, order != "asc")
        return page("leaderboard.html", track=track, rows=rows, columns=COLUMNS, sort=sort, order=order,
                    private=cfg.tracks[track].is_private, mde=mde(track))

    tables: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def table_of(run_dir: str, condition: str):
        """One condition's result table, kept like a detail (finished runs do not change; a rescore rewrites a run
        and its summary's score with it, so the key includes nothing more)."""
        from stegobench.core.errors import StegobenchError
        from stegobench.eval.runlog import read_run

        key = (run_dir, condition)
        if key not in tables:
            try:
                tables[key] = read_run(run_dir).conditions[condition].table
            except (StegobenchError, KeyError):
                return None
            while len(tables) > DETAILS_KEPT:
                tables.popitem(last=False)
        return tables[key]

    @app.get("/track/{track}/compare", response_class=HTMLResponse, include_in_schema=False)
    async def compare_page(track: str) -> Response:
        known_track(track)
        rows = ranked(track)
        private = cfg.tracks[track].is_private
        found = [table_of(r["source"].run_dir, r["source"].condition) if r.get("source") else None for r in rows]
        return page("compare.html", track=track, private=private, **comparison(rows, found, private))

    @app.get("/submission/{sid}", response_class=HTMLResponse, include_in_schema=False)
    async def detail_page(sid: int) -> Response:
        sub = store.get(sid)
        if sub is None:
            raise HTTPException(404, f"no submission #{sid}")
        detail = run_detail(sub)
        return page("detail.html", sub=_shown(sub), detail=detail,
                    plots=[p for p in PLOTS if p in detail.get("plots", [])])

    @app.get("/submission/{sid}/plot/{name}", include_in_schema=False)
    def plot(sid: int, name: str) -> FileResponse:
        sub = store.get(sid)
        if sub is None or name not in PLOTS or not sub.get("result"):
            raise HTTPException(404, "no such plot")
        path = Path(sub["result"]["run_dir"]) / name
        if not path.is_file():
            raise HTTPException(404, "no such plot")
        return FileResponse(path, media_type="image/png")

    @app.get("/queue", response_class=HTMLResponse, include_in_schema=False)
    async def queue_page(before: int | None = Query(None, ge=1, le=MAX_ID)) -> Response:
        subs = store.list_submissions(limit=QUEUE_PAGE, before=before)
        older = subs[-1]["id"] if len(subs) == QUEUE_PAGE else None
        return page("queue.html", subs=[_shown(x) for x in subs], counts=store.counts(), older=older,
                    first_page=before is None)

    @app.get("/submit", response_class=HTMLResponse, include_in_schema=False)
    def submit_form() -> HTMLResponse:
        return page("submit.html", base_models=cfg.base_models, outcome=None)

    @app.post("/submit", response_class=HTMLResponse, include_in_schema=False)
    def submit_form_post(request: Request, display_name: str = Form(""),
                         track: str = Form(""), base_model: str = Form(""), revision: str = Form(""),
                         notes: str = Form(""), adapter_config: UploadFile | None = File(None),
                         adapter_weights: UploadFile | None = File(None)) -> HTMLResponse:
        outcome = accept(owner_of(request), display_name, track, base_model, revision, notes,
                         _present(adapter_config), _present(adapter_weights), None, None)
        return page("submit.html", status_code=201 if outcome.status == "PENDING" else 422,
                    base_models=cfg.base_models, outcome=outcome)

    # -- JSON API -----------------------------------------------------------------------------------------

    @app.get("/api/tracks", summary="Tracks this evaluator accepts")
    def api_tracks() -> list[dict[str, Any]]:
        return [{"name": t, "private_split": s.is_private, "data_config": s.data_config, "mde": mde(t).to_record()}
                for t, s in cfg.tracks.items()]

    @app.get("/api/leaderboard/{track}", summary="Ranked rows of a track (baselines marked)")
    async def api_leaderboard(track: str) -> Response:
        known_track(track)
        return ApiJSON([plain_row(r) for r in ranked(track)])

    @app.get("/api/submissions/{sid}", summary="One submission: status, reason, result")
    async def api_submission(sid: int) -> Response:
        sub = store.get(sid)
        if sub is None:
            raise HTTPException(404, f"no submission #{sid}")
        return ApiJSON(_public(sub))

    @app.get("/api/queue", summary="Counts by state and the latest submissions, newest first, a page at a time")
    async def api_queue(limit: int = Query(100, ge=1, le=200), before: int | None = Query(None, ge=1, le=MAX_ID),
                        ) -> Response:
        subs = store.list_submissions(limit=limit, before=before)
        older = f"/api/queue?limit={limit}&before={subs[-1]['id']}" if len(subs) == limit else None
        return ApiJSON({"counts": store.counts(), "submissions": [_public(s) for s in subs], "next": older})

    @app.post("/api/submissions", status_code=201, summary="Submit an adapter or merged model (Bearer token)")
    def api_submit(request: Request, display_name: str = Form(...), track: str = Form(...),
                   base_model: str = Form(...), revision: str = Form(""), notes: str = Form(""),
                   adapter_config: UploadFile | None = File(None), adapter_weights: UploadFile | None = File(None),
                   merged_config: UploadFile | None = File(None), merged_weights: UploadFile | None = File(None)
                   ) -> JSONResponse:
        outcome = accept(owner_of(request), display_name, track, base_model, revision, notes, _present(adapter_config),
                         _present(adapter_weights), _present(merged_config), _present(merged_weights))
        body = {"id": outcome.id, "status": outcome.status, "reason": outcome.reason,
                "duplicate_of": outcome.duplicate_of, "url": f"/submission/{outcome.id}"}
        return ApiJSON(body, status_code=201 if outcome.status == "PENDING" else 422)

    return app


class ApiJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: a name's bidi override or zero-width character reaches a
    reader's terminal (curl) as \\u202e text, never as the character itself."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _present(f: UploadFile | None) -> UploadFile | None:
    """A form's empty file input arrives as an upload with no name: treat it as absent."""
    return f if f is not None and (f.filename or f.size) else None


# Reasons and worker errors are shown to anyone: server paths and SQL stay in the operator's database only.
_SERVER_PATH = re.compile(r"(?<![\w.])/(?:[\w.@+-]+/)*[\w.@+-]+")
_SQL = re.compile(r"\((?:sqlite3|psycopg|sqlalchemy)[^)]*\).*|\[SQL:.*", re.DOTALL)


def public_text(text: str | None) -> str | None:
    if not text:
        return text
    return _SQL.sub("(database error: details are in the evaluator's log)", _SERVER_PATH.sub("<server path>", text))


def _shown(sub: dict[str, Any]) -> dict[str, Any]:
    """A submission as pages and the API show it: reasons and errors without server paths or SQL."""
    errors = sub.get("errors") or []
    errors = json.loads(errors) if isinstance(errors, str) else errors  # list rows keep the stored JSON text
    return {**sub, "reason": public_text(sub.get("reason")),
            "errors": [{**e, "error": public_text(e.get("error"))} for e in errors]}


def _public(sub: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "created_at", "display_name", "submitter", "track", "base_model", "revision", "kind",
            "artifact_sha256", "size_bytes", "notes", "status", "reason", "attempts", "finished_at")
    out = {k: sub.get(k) for k in keep}
    out["reason"] = public_text(out["reason"])
    # The worker's machine record (argv, paths) stays with the operator.
    out["result"] = ({k: v for k, v in sub["result"]["summary"].items() if k != "environment"}
                     if sub.get("result") else None)
    return out


def _run_detail(sub: dict[str, Any], cfg: LeaderboardConfig) -> dict[str, Any]:
    """Per-split and per-mapping tables, plots and sample answers grouped by what drives the score, from the
    submission's run folder (web/evidence.py)."""
    from dataclasses import asdict

    from stegobench.core.errors import StegobenchError
    from stegobench.eval.runlog import read_run

    res = sub.get("result")
    if not res:
        return {}
    try:
        run = read_run(res["run_dir"])
        entry = run.conditions[res["summary"]["condition"]]
    except (StegobenchError, KeyError):
        return {"missing": True}  # the run folder is the operator's; its path is not shown
    private = cfg.tracks[sub["track"]].is_private if sub["track"] in cfg.tracks else True
    # a private split's questions must not leak
    groups = [] if private else sample_groups(list(run.samples(res["summary"]["condition"])))
    table = asdict(entry.table)
    return {"splits": table["splits"], "measures": measure_rows(table["splits"]),
            "per_mapping": mapping_rows(entry.table, private),
            "cloze": entry.cloze, "plots": [p for p in PLOTS if (run.folder / p).exists()],
            "groups": groups, "private": private, "seconds": entry.seconds}


def _cell(interval) -> dict[str, Any] | None:
    from dataclasses import asdict

    return None if interval is None else asdict(interval)


def mapping_rows(table, private: bool) -> list[dict[str, Any]]:
    """Per-mapping rows labelled code → concept (the concept alone where the track's codes are private)."""
    return [{"id": mid, "split": m.split.replace("_", "-"), "mapping": labels.mapping_label("" if private else m.code,
                                                                                           m.concept),
             "n": m.n, "uses_code": _cell(m.uses_code_interval), "covert": _cell(m.covert_interval)}
            for mid, m in table.per_mapping.items()]
