"""Submissions over the web: the form's POST and the API's, admitted before their body is read (web/guard.py)."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from stegobench.core.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

from ..submit import Outcome, SubmissionRequest, submit_uploads
from .guard import Gate, Refused
from .site import ApiJSON, Site, SiteDep

router = APIRouter()


def upload_gate(site: Site) -> Gate:
    """What the guard checks before an upload's body is read: its token, the token's hourly slot, the body's size
    and pace; a refusal is rendered as the route would render it."""
    cfg, store = site.cfg, site.store

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
            return site.page("submit.html", status_code=refused.status, base_models=cfg.base_models, outcome=None,
                             error=refused.detail)
        return ApiJSON({"detail": refused.detail}, status_code=refused.status)

    return Gate(
        routes={"/api/submissions": "header", "/submit": "form"},
        max_body=int(cfg.max_upload_mb * 2**20) + 2**20,  # the files plus room for the form's text fields
        too_large=f"upload over this evaluator's cap of {cfg.max_upload_mb:.0f} MiB",
        authenticate=authenticate, reserve=reserve, respond=refusal,
        idle_timeout=cfg.upload_idle_timeout_seconds, body_timeout=cfg.upload_timeout_seconds)


def _owner_of(request: Request) -> tuple[int, str]:
    owner = getattr(request.state, "owner", None)  # set by the guard, which admitted this upload
    if owner is None:
        raise HTTPException(401, "a valid submitter token is required")
    return owner


def _present(f: UploadFile | None) -> UploadFile | None:
    """A form's empty file input arrives as an upload with no name: treat it as absent."""
    return f if f is not None and (f.filename or f.size) else None


def _accept(site: Site, request: Request, display_name: str, track: str, base_model: str, revision: str | None,
            notes: str, adapter_config: UploadFile | None, adapter_weights: UploadFile | None,
            merged_config: UploadFile | None = None, merged_weights: UploadFile | None = None) -> Outcome:
    """The upload as a submission of its kind (the files given by the form's fields, present ones only)."""
    owner = _owner_of(request)
    req = SubmissionRequest(display_name=display_name, submitter=owner[1], track=track, base_model=base_model,
                            revision=revision or None, notes=notes or "", token_id=owner[0])
    # Canonical names come from the form field; the user's file name is never a path.
    files: dict[str, UploadFile | None]
    if adapter_config is not None or adapter_weights is not None:
        kind, files = "adapter", {ADAPTER_CONFIG: adapter_config, ADAPTER_WEIGHTS: adapter_weights}
    elif merged_config is not None or merged_weights is not None:
        kind, files = "merged", {"config.json": merged_config, "model.safetensors": merged_weights}
    else:
        kind, files = "base", {}
    uploads = {name: (f.filename, f.file) for name, f in files.items() if f is not None}
    return submit_uploads(site.cfg, site.store, req, kind if uploads else "base", uploads)


@router.post("/submit", response_class=HTMLResponse, include_in_schema=False)
def submit_form_post(site: SiteDep, request: Request, display_name: str = Form(""),
                     track: str = Form(""), base_model: str = Form(""), revision: str = Form(""),
                     notes: str = Form(""), adapter_config: UploadFile | None = File(None),
                     adapter_weights: UploadFile | None = File(None)) -> HTMLResponse:
    outcome = _accept(site, request, display_name, track, base_model, revision, notes, _present(adapter_config),
                      _present(adapter_weights))
    return site.page("submit.html", status_code=201 if outcome.status == "PENDING" else 422,
                     base_models=site.cfg.base_models, outcome=outcome)


@router.post("/api/submissions", status_code=201, summary="Submit an adapter or merged model (Bearer token)")
def api_submit(site: SiteDep, request: Request, display_name: str = Form(...), track: str = Form(...),
               base_model: str = Form(...), revision: str = Form(""), notes: str = Form(""),
               adapter_config: UploadFile | None = File(None), adapter_weights: UploadFile | None = File(None),
               merged_config: UploadFile | None = File(None), merged_weights: UploadFile | None = File(None)
               ) -> JSONResponse:
    outcome = _accept(site, request, display_name, track, base_model, revision, notes, _present(adapter_config),
                      _present(adapter_weights), _present(merged_config), _present(merged_weights))
    body = {"id": outcome.id, "status": outcome.status, "reason": outcome.reason,
            "duplicate_of": outcome.duplicate_of, "url": f"/submission/{outcome.id}"}
    return ApiJSON(body, status_code=201 if outcome.status == "PENDING" else 422)
