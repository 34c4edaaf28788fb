"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from app.api.deps import get_service
from app.api.schemas import LiveResponse, ReadyResponse
from app.api.service import ModelService

router = APIRouter(prefix="/v1/health", tags=["health"])


@router.get("/live", response_model=LiveResponse, summary="Liveness")
async def live() -> dict:
    """200 as long as the process serves HTTP."""
    return {"status": "alive"}


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Readiness",
    responses={503: {"model": ReadyResponse, "description": "Models loading or failed to load."}},
)
async def ready(service: ModelService = Depends(get_service)):
    """200 once the encoders and heads are loaded (503 before). ``degraded`` is true while the Redis
    cache is failing: requests still succeed, computing what the cache would have answered."""
    cache = service.cache.state()
    degraded = not cache.get("healthy", True)
    if service.ready:
        return {"status": "ready", "degraded": degraded, "cache": cache}
    status = "failed" if service.load_error else "loading"
    body = ReadyResponse(status=status, degraded=degraded, cache=cache, error=service.load_error)
    return JSONResponse(body.model_dump(), status_code=503)
