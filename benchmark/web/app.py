"""The evaluator's web app: leaderboard pages, model detail pages, the queue, a submission form and a JSON API.

    stegobench serve --host 127.0.0.1 --port 8000        # then open http://127.0.0.1:8000/

Server-side Jinja2 templates with autoescaping (every user-typed string is escaped), no front-end build step.
Reading needs no token; submitting needs a token from `stegobench leaderboard add-token NAME`, sent as
`Authorization: Bearer TOKEN` (API) or in the form's token field, which is checked before the body is read
(web/guard.py). Read pages are served from a cache at most CACHE_SECONDS old (web/cache.py); the queue is
paged. OpenAPI schema: /openapi.json.

The routes are three routers, each reading the shared state through one dependency (web/site.py: `SiteDep`):
pages (web/pages.py), the JSON API's reads (web/api.py) and the uploads of both (web/uploads.py).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ..artifacts import clean_staging
from ..config import LeaderboardConfig
from ..store import Store
from ..validation import load_checkers
from . import api, pages, uploads
from .cache import CachedReads
from .guard import UploadGuard
from .site import CACHE_SECONDS, HERE, Site

log = logging.getLogger(__name__)


def create_app(cfg: LeaderboardConfig, store: Store | None = None) -> FastAPI:
    site = Site(cfg, store or Store(cfg.db_url()))
    removed = clean_staging(cfg.data_path())  # uploads of a server killed mid-upload
    if removed:
        log.warning("removed %d staging folder(s) left by a stopped upload: %s", len(removed), ", ".join(removed))
    # Imported now, once: a lazy `transformers` import racing in parallel first uploads failed them with 500s.
    load_checkers(isolated=True)  # uploads are validated in processes forked from a server started now
    app = FastAPI(title="stegobench leaderboard", version="1",
                  description="Submit LoRA adapters or merged models; read ranked covert-use scores.")
    app.state.site = site  # every route's `SiteDep` (web/site.py)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    # Middleware added last runs first: a cached read is answered before the upload guard looks at it.
    app.add_middleware(UploadGuard, gate=uploads.upload_gate(site))
    app.add_middleware(CachedReads, ttl=CACHE_SECONDS)
    for router in (pages.router, api.router, uploads.router):  # the OpenAPI schema lists the routes in this order
        app.include_router(router)
    return app
