"""The leaderboard's HTML pages (the submission form's POST is in web/uploads.py). Read routes are async, rendered
on the event loop, and CachedReads answers a repeated read in front of them: each page is rendered at most once
per CACHE_SECONDS (web/cache.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from ..ranking import COLUMNS, sort_rows
from .evidence import PLOTS, comparison
from .site import MAX_ID, SiteDep, shown

QUEUE_PAGE = 50  # submissions per queue page

router = APIRouter(include_in_schema=False)


@router.get("/")
def index(site: SiteDep) -> RedirectResponse:
    return RedirectResponse(f"/track/{site.tracks[0]}")


@router.get("/track/{track}", response_class=HTMLResponse)
async def track_page(site: SiteDep, track: str, sort: str = "rank", order: str = "desc") -> Response:
    site.known_track(track)
    rows = site.ranked(track)
    if sort != "rank":
        rows = sort_rows(rows, sort, order != "asc")
    return site.page("leaderboard.html", track=track, rows=rows, columns=COLUMNS, sort=sort, order=order,
                     private=site.cfg.tracks[track].is_private, mde=site.mde(track))


@router.get("/track/{track}/compare", response_class=HTMLResponse)
async def compare_page(site: SiteDep, track: str) -> Response:
    site.known_track(track)
    rows = site.ranked(track)
    private = site.cfg.tracks[track].is_private
    found = [site.table_of(r["source"].run_dir, r["source"].condition) if r.get("source") else None for r in rows]
    return site.page("compare.html", track=track, private=private, **comparison(rows, found, private))


@router.get("/submission/{sid}", response_class=HTMLResponse)
async def detail_page(site: SiteDep, sid: int) -> Response:
    sub = site.store.get(sid)
    if sub is None:
        raise HTTPException(404, f"no submission #{sid}")
    detail = site.detail(sub)
    return site.page("detail.html", sub=shown(sub), detail=detail,
                     plots=[p for p in PLOTS if p in detail.get("plots", [])])


@router.get("/submission/{sid}/plot/{name}")
def plot(site: SiteDep, sid: int, name: str) -> FileResponse:
    sub = site.store.get(sid)
    if sub is None or name not in PLOTS or not sub.get("result"):
        raise HTTPException(404, "no such plot")
    path = Path(sub["result"]["run_dir"]) / name
    if not path.is_file():
        raise HTTPException(404, "no such plot")
    return FileResponse(path, media_type="image/png")


@router.get("/queue", response_class=HTMLResponse)
async def queue_page(site: SiteDep, before: int | None = Query(None, ge=1, le=MAX_ID)) -> Response:
    subs = site.store.list_submissions(limit=QUEUE_PAGE, before=before)
    older = subs[-1]["id"] if len(subs) == QUEUE_PAGE else None
    return site.page("queue.html", subs=[shown(x) for x in subs], counts=site.store.counts(), older=older,
                     first_page=before is None)


@router.get("/submit", response_class=HTMLResponse)
def submit_form(site: SiteDep) -> HTMLResponse:
    return site.page("submit.html", base_models=site.cfg.base_models, outcome=None)
