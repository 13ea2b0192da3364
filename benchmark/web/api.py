"""The JSON API's reads (its submission endpoint is in web/uploads.py). OpenAPI schema: /openapi.json."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from ..ranking import plain_row
from .site import MAX_ID, ApiJSON, SiteDep, public_record

router = APIRouter(prefix="/api")


@router.get("/tracks", summary="Tracks this evaluator accepts")
def api_tracks(site: SiteDep) -> list[dict[str, Any]]:
    return [{"name": t, "private_split": s.is_private, "data_config": s.data_config, "mde": site.mde(t).to_record()}
            for t, s in site.cfg.tracks.items()]


@router.get("/leaderboard/{track}", summary="Ranked rows of a track (baselines marked)")
async def api_leaderboard(site: SiteDep, track: str) -> Response:
    site.known_track(track)
    return ApiJSON([plain_row(r) for r in site.ranked(track)])


@router.get("/submissions/{sid}", summary="One submission: status, reason, result")
async def api_submission(site: SiteDep, sid: int) -> Response:
    sub = site.store.get(sid)
    if sub is None:
        raise HTTPException(404, f"no submission #{sid}")
    return ApiJSON(public_record(sub))


@router.get("/queue", summary="Counts by state and the latest submissions, newest first, a page at a time")
async def api_queue(site: SiteDep, limit: int = Query(100, ge=1, le=200),
                    before: int | None = Query(None, ge=1, le=MAX_ID)) -> Response:
    subs = site.store.list_submissions(limit=limit, before=before)
    older = f"/api/queue?limit={limit}&before={subs[-1]['id']}" if len(subs) == limit else None
    return ApiJSON({"counts": site.store.counts(), "submissions": [public_record(s) for s in subs], "next": older})
