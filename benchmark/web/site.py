"""The web app's shared state, handed to every route by one dependency (`SiteDep`): the config, the store, the
templates, and the caches that keep reads cheap; and how a submission is shown (without server paths or SQL)."""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from stegobench.eval import labels

from ..config import LeaderboardConfig
from ..ranking import Learned, VersusBase, cell_text, format_value, leaderboard_rows, track_mde, verdict_text
from ..store import Store
from ..text import visible
from .evidence import PER_GROUP, run_detail

HERE = Path(__file__).resolve().parent
CACHE_SECONDS = 1.0  # a finished job shows up within a second; measured: see speed/serve_load.py
DETAILS_KEPT = 256  # finished runs' detail tables kept in memory
MAX_ID = 2**63 - 1  # the id column's range: a `before` past it is refused (422), not a database error


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "-"


def _templates() -> Environment:
    # Autoescaping makes submitted text inert HTML; `finalize` also writes its control and invisible characters
    # (bidi overrides, zero-width) as escapes, so a stored name cannot reorder or hide itself on a page.
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      finalize=lambda v: visible(v, keep="\n\t"))
    env.filters["interval"] = format_value
    env.filters["verdict"] = verdict_text
    env.filters["when"] = _fmt_time
    env.globals.update(cell=cell_text, indistinct=VersusBase.NOT_DISTINGUISHABLE.value,
                       none_shown=Learned.NONE_SHOWN.value, measure=labels.measure, per_group=PER_GROUP)
    return env


class Site:
    """One evaluator's pages and API: what every route reads, with what it may keep between requests."""

    def __init__(self, cfg: LeaderboardConfig, store: Store):
        self.cfg, self.store = cfg, store
        self.tracks = list(cfg.tracks)
        self.templates = _templates()
        self._ranked: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._mdes: dict[str, Any] = {}
        self._details: OrderedDict[tuple[int, str], dict[str, Any]] = OrderedDict()
        self._tables: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def page(self, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(tracks=self.tracks, **ctx)
        return HTMLResponse(html, status_code=status_code)

    def known_track(self, track: str) -> str:
        if track not in self.cfg.tracks:
            raise HTTPException(404, f"unknown track {track!r}; tracks: {', '.join(self.tracks)}")
        return track

    def ranked(self, track: str) -> list[dict[str, Any]]:
        """Leaderboard rows, recomputed at most once per CACHE_SECONDS: readers far outnumber finished jobs."""
        hit = self._ranked.get(track)
        if hit is None or time.monotonic() - hit[0] > CACHE_SECONDS:
            hit = self._ranked[track] = (time.monotonic(), leaderboard_rows(self.store, track))
        return [dict(r) for r in hit[1]]

    def mde(self, track: str):
        """The track's MDE, computed once: it depends on the track config and the components file alone."""
        if track not in self._mdes:
            self._mdes[track] = track_mde(self.cfg, track)
        return self._mdes[track]

    def detail(self, sub: dict[str, Any]) -> dict[str, Any]:
        """run_detail, kept per finished run: a run folder never changes once its job is FINISHED, and reading
        its samples was the slowest part of any page (a render blocks the event loop: web/cache.py)."""
        if not sub.get("result"):
            return run_detail(sub, self.cfg)
        key = (sub["id"], sub["result"]["run_dir"])
        if key not in self._details:
            detail = run_detail(sub, self.cfg)
            if detail.get("missing"):
                return detail  # the operator may restore the folder
            self._details[key] = detail
            while len(self._details) > DETAILS_KEPT:
                self._details.popitem(last=False)
        self._details.move_to_end(key)
        return self._details[key]

    def table_of(self, run_dir: str, condition: str):
        """One condition's result table, kept like a detail (finished runs do not change; a rescore rewrites a run
        and its summary's score with it, so the key includes nothing more)."""
        from stegobench.core.errors import StegobenchError
        from stegobench.eval.runlog import read_run

        key = (run_dir, condition)
        if key not in self._tables:
            try:
                self._tables[key] = read_run(run_dir).conditions[condition].table
            except (StegobenchError, KeyError):
                return None
            while len(self._tables) > DETAILS_KEPT:
                self._tables.popitem(last=False)
        return self._tables[key]


async def get_site(request: Request) -> Site:
    """The app's Site (async: resolved on the event loop, as the read routes are; see web/cache.py)."""
    return request.app.state.site


SiteDep = Annotated[Site, Depends(get_site)]


class ApiJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: a name's bidi override or zero-width character reaches a
    reader's terminal (curl) as \\u202e text, never as the character itself."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


# Reasons and worker errors are shown to anyone: server paths and SQL stay in the operator's database only.
_SERVER_PATH = re.compile(r"(?<![\w.])/(?:[\w.@+-]+/)*[\w.@+-]+")
_SQL = re.compile(r"\((?:sqlite3|psycopg|sqlalchemy)[^)]*\).*|\[SQL:.*", re.DOTALL)


def public_text(text: str | None) -> str | None:
    if not text:
        return text
    return _SQL.sub("(database error: details are in the evaluator's log)", _SERVER_PATH.sub("<server path>", text))


def shown(sub: dict[str, Any]) -> dict[str, Any]:
    """A submission as pages show it: reasons and errors without server paths or SQL."""
    errors = sub.get("errors") or []
    errors = json.loads(errors) if isinstance(errors, str) else errors  # list rows keep the stored JSON text
    return {**sub, "reason": public_text(sub.get("reason")),
            "errors": [{**e, "error": public_text(e.get("error"))} for e in errors]}


def public_record(sub: dict[str, Any]) -> dict[str, Any]:
    """A submission as the API shows it: public fields, reasons without server paths or SQL, no machine record."""
    keep = ("id", "created_at", "display_name", "submitter", "track", "base_model", "revision", "kind",
            "artifact_sha256", "size_bytes", "notes", "status", "reason", "attempts", "finished_at")
    out = {k: sub.get(k) for k in keep}
    out["reason"] = public_text(out["reason"])
    # The worker's machine record (argv, paths) stays with the operator.
    out["result"] = ({k: v for k, v in sub["result"]["summary"].items() if k != "environment"}
                     if sub.get("result") else None)
    return out
