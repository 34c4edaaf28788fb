"""GET /v1/properties: the served property heads."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import get_service
from app.api.schemas import PropertiesResponse
from app.api.service import ModelService

router = APIRouter(prefix="/v1", tags=["service"])


@router.get("/properties", response_model=PropertiesResponse, summary="Served properties")
async def properties(service: ModelService = Depends(get_service)) -> dict:
    """Every served head with its tasks, task types, units, encoder versions and card metrics; heads
    found but not served are listed under ``skipped`` with the reason."""
    service.resolve_properties(None)  # 503 while loading
    return {
        "properties": [service.head_infos[name] for name in sorted(service.heads)],
        "skipped": service.skipped_heads,
    }
