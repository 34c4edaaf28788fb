"""Recommendation jobs and the auxiliary-data catalog over HTTP.

- ``POST /v1/recommendations`` (multipart: ``file`` CSV + form fields) validates the upload at once
  (clear 4xx) and answers ``202`` with the job id; ``GET /v1/recommendations/{id}`` reports
  ``queued`` / ``running`` (progress) / ``done`` (result) / ``failed`` (reason) / ``cancelled``;
  ``DELETE /v1/recommendations/{id}`` cancels a queued or running job.
- ``GET /v1/datasets`` lists the catalog with a file check; ``POST /v1/datasets`` registers a user set
  (multipart CSV + its columns), stored next to the user catalog JSON.

The job machinery (Redis + arq worker, or in-process) is :mod:`app.jobs`; :func:`lifespan` creates it
at start-up (it is also created on first use when the app does not run this lifespan).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Request, UploadFile, status
from fastapi.responses import JSONResponse

from app.jobs import (
    JobService,
    extra_catalog_path,
    read_job,
    run_recommendation,
    shared_embedder,
    user_datasets_dir,
    validate_upload,
)
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/recommendations", tags=["recommendations"])
datasets_router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_create_lock = asyncio.Lock()


def _settings(app: FastAPI) -> Settings:
    return getattr(app.state, "settings", None) or get_settings()


def _job_body(app: FastAPI, settings: Settings):
    """In-process jobs use the service's own embedder when it is loaded (one copy of the encoders)."""

    def body(data: bytes, params: dict, progress) -> dict:
        service = getattr(app.state, "service", None)
        embedder = getattr(service, "embedder", None) or shared_embedder()
        return run_recommendation(data, params, settings, progress, embedder=embedder)

    return body


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the job service (arq pool or in-process runner) on start-up and close it on shutdown."""
    settings = _settings(app)
    try:
        _require_shared_jobs(settings)
    except HTTPException as exc:
        log.warning("recommendation jobs disabled", extra={"reason": exc.detail})
        yield
        return
    app.state.recommendation_jobs = await JobService.create(settings, _job_body(app, settings))
    try:
        yield
    finally:
        service = app.state.recommendation_jobs
        app.state.recommendation_jobs = None
        await service.close()


def _require_shared_jobs(settings: Settings) -> None:
    """In-process jobs live in one worker process; with several, a job's requests would reach others."""
    if settings.workers > 1 and not settings.jobs_redis:
        raise HTTPException(
            503,
            detail=(
                f"recommendation jobs need Redis when the service runs {settings.workers} worker processes: "
                "set MOLFUSION_REDIS_URL (or MOLFUSION_JOBS_REDIS_URL), or serve with --workers 1"
            ),
        )


async def get_jobs(request: Request) -> JobService:
    _require_shared_jobs(_settings(request.app))
    service = getattr(request.app.state, "recommendation_jobs", None)
    if service is None:
        async with _create_lock:
            service = getattr(request.app.state, "recommendation_jobs", None)
            if service is None:
                settings = _settings(request.app)
                service = await JobService.create(settings, _job_body(request.app, settings))
                request.app.state.recommendation_jobs = service
    return service


def _catalog(extra: Path) -> list:
    """The catalog entries; 503 when the user catalog file is unreadable (an operator's problem)."""
    from grouping.catalog import CatalogError, load_catalog

    try:
        return load_catalog(extra)
    except CatalogError as exc:
        raise HTTPException(503, detail=f"catalog unreadable: {exc}") from exc


def _error(status_code: int, field: str, msg: str, kind: str = "invalid_upload") -> HTTPException:
    return HTTPException(status_code, detail=[{"loc": ["body", field], "msg": msg, "type": kind}])


async def _read_limited(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise _error(413, "file", f"upload is larger than {limit} bytes (MOLFUSION_UPLOAD_MAX_BYTES)")
    return data


def _split_list(value: str | None) -> list[str] | None:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    return items or None


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def submit_recommendation(
    request: Request,
    file: UploadFile = File(
        ..., description="Target data set: CSV with a SMILES column and label column(s)."
    ),
    smiles_column: str | None = Form(None, description="SMILES column (auto-detected when omitted)."),
    targets: str | None = Form(
        None, description="Comma-separated label columns (default: numeric columns)."
    ),
    task_type: str = Form(
        "auto", description="auto, classification or regression (for every label column)."
    ),
    method: str = Form("molgroup", description="molgroup, structure, all or none."),
    exclude: str | None = Form(None, description="Comma-separated catalog sets to leave out."),
) -> JSONResponse:
    """Validate the upload and queue a recommendation job (202 + id)."""
    from grouping.catalog import CatalogError, without
    from grouping.methods import METHODS
    from grouping.target import TASK_TYPE_CHOICES, TargetError

    settings = _settings(request.app)
    _require_shared_jobs(settings)
    sent = await request.form()  # (already parsed by FastAPI) an empty field would become the default
    for field, choices in (("method", list(METHODS)), ("task_type", list(TASK_TYPE_CHOICES))):
        if field in sent and not str(sent[field]).strip():
            raise _error(422, field, f"{field} is empty: leave it out (the default) or give one of {choices}")
    if method not in METHODS:
        raise _error(422, "method", f"method {method!r} not in {list(METHODS)}")
    entries = _catalog(extra_catalog_path(settings))
    try:
        without(entries, _split_list(exclude) or [])
    except CatalogError as exc:
        raise _error(422, "exclude", str(exc)) from exc
    data = await _read_limited(file, settings.upload_max_bytes)
    params: dict[str, Any] = {
        "name": Path(file.filename or "target").stem or "target",
        "smiles_column": smiles_column or None,
        "targets": _split_list(targets),
        "task_type": task_type,
        "method": method,
        "exclude": _split_list(exclude) or [],
    }
    try:
        target = await asyncio.to_thread(validate_upload, data, params, settings)
    except TargetError as exc:
        raise _error(exc.status, exc.field, str(exc)) from exc
    jobs = await get_jobs(request)
    job = await jobs.submit(params, data)
    body = {
        "id": job["id"],
        "status": job["status"],
        "valid_rows": len(target.smiles),
        "invalid_rows": target.invalid_rows,
        "label_columns": target.label_columns,
        "task_types": target.task_types,
        "url": f"/v1/recommendations/{job['id']}",
    }
    return JSONResponse(body, status_code=202, headers={"Location": body["url"]})


def _public(job: dict) -> dict:
    keys = ("id", "status", "progress", "message", "created_at", "started_at", "finished_at", "params")
    out = {k: job.get(k) for k in keys}
    if job["status"] == "done":
        out["result"] = job.get("result")
    if job["status"] == "failed":
        out["error"] = job.get("error")
    return out


@router.get("/{job_id}")
async def get_recommendation(job_id: str, request: Request) -> dict:
    """The job's state; ``result`` when done, ``error`` when failed."""
    job = await read_job((await get_jobs(request)).store, job_id)
    if job is None:
        raise HTTPException(404, detail=f"no recommendation job {job_id!r} (unknown or expired)")
    return _public(job)


@router.delete("/{job_id}")
async def cancel_recommendation(job_id: str, request: Request) -> dict:
    """Cancel a queued or running job (409 when it has already finished)."""
    jobs = await get_jobs(request)
    job = await read_job(jobs.store, job_id)
    if job is None:
        raise HTTPException(404, detail=f"no recommendation job {job_id!r} (unknown or expired)")
    if not await jobs.cancel(job_id):
        current = await read_job(jobs.store, job_id)
        state = current["status"] if current else "expired"
        raise HTTPException(409, detail=f"job {job_id!r} is already {state}; nothing to cancel")
    return {"id": job_id, "status": "cancelled"}


@datasets_router.get("")
async def list_datasets(request: Request) -> dict:
    """Catalog sets (shipped and user-registered), each with a check that its file and columns exist."""
    from grouping.catalog import check_catalog

    settings = _settings(request.app)
    entries = _catalog(extra_catalog_path(settings))
    checks = await asyncio.to_thread(check_catalog, entries, settings.data_dir)
    return {
        "catalog_dir": str(settings.data_dir),
        "datasets": [{**e.to_json(), **c} for e, c in zip(entries, checks, strict=True)],
    }


_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@datasets_router.post("", status_code=status.HTTP_201_CREATED)
async def register_dataset_endpoint(
    request: Request,
    file: UploadFile = File(..., description="The data set: CSV with a SMILES column and label column(s)."),
    name: str = Form(..., description="Catalog name: lower-case letters, digits, '_', '-', '.'."),
    smiles_column: str = Form(..., description="SMILES column."),
    label_columns: str = Form(..., description="Comma-separated label columns."),
    task_type: str = Form(..., description="classification or regression."),
) -> dict:
    """Store the uploaded CSV and add it to the user catalog (409 when the name is taken)."""
    from grouping.catalog import CatalogError, NameTakenError, parse_entry, register_dataset
    from grouping.target import TargetError, uncompressed_csv

    settings = _settings(request.app)
    if not _SAFE_NAME.match(name):
        raise _error(
            422, "name", f"name {name!r} must be lower-case letters, digits, '_', '-', '.' (<= 64)"
        )
    extra = extra_catalog_path(settings)
    if any(e.name == name for e in _catalog(extra)):
        raise _error(409, "name", f"a data set named {name!r} is already in the catalog", "conflict")
    limit = settings.upload_max_bytes
    try:  # stored as a plain .csv: a gzip upload is decompressed (as a target upload is)
        data = uncompressed_csv(await _read_limited(file, limit), limit)
    except TargetError as exc:
        raise _error(exc.status, exc.field, str(exc)) from exc
    labels = _split_list(label_columns)
    if task_type not in ("classification", "regression"):
        raise _error(422, "task_type", f"task_type {task_type!r} must be classification or regression")
    if not labels:
        raise _error(422, "label_columns", "give at least one label column")
    folder = user_datasets_dir(settings)
    path = folder / f"{name}-{uuid.uuid4().hex[:12]}.csv"  # concurrent uploads never share a file
    try:
        entry = parse_entry(
            {
                "name": name,
                "file": str(path),
                "smiles_column": smiles_column,
                "label_columns": labels,
                "task_type": task_type,
            },
            source="user",
        )
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entry = await asyncio.to_thread(register_dataset, extra, entry, settings.data_dir)
    except NameTakenError as exc:  # registered meanwhile by a concurrent request
        path.unlink(missing_ok=True)
        raise _error(409, "name", str(exc), "conflict") from exc
    except CatalogError as exc:
        path.unlink(missing_ok=True)
        shown = file.filename or "the upload"  # the message names the upload, not the server's storage path
        raise _error(422, "file", str(exc).replace(str(path), shown).replace(path.name, shown)) from exc
    except OSError as exc:  # the user folder, catalog or lock file cannot be written: the operator's side
        path.unlink(missing_ok=True)
        detail = f"cannot store the data set: {exc} (MOLFUSION_CATALOG_EXTRA)"
        raise HTTPException(503, detail=detail) from exc
    return entry.to_json()
