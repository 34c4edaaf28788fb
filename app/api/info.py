"""GET /v1/info: versions, encoders, device and cache state."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Depends

from app.api.deps import get_service
from app.api.schemas import InfoResponse
from app.api.service import ModelService

router = APIRouter(prefix="/v1", tags=["service"])


def _package_version() -> str:
    try:
        return version("molfusion")
    except PackageNotFoundError:
        return "unknown"


@router.get("/info", response_model=InfoResponse, summary="Service information")
async def info(service: ModelService = Depends(get_service)) -> dict:
    from models.embedder import device_description

    service.resolve_properties(None)  # 503 while loading
    embedder = service.embedder
    s = service.settings
    return {
        "version": _package_version(),
        "encoders": [
            {"view": v, "version": embedder.versions[v], "dim": embedder.dims[v]} for v in ("smiles", "graph")
        ],
        "device": device_description(embedder.device),
        "cache": service.cache.state(),
        "properties": sorted(service.heads),
        "microbatch": {"max_size": s.microbatch_max_size, "max_wait_ms": s.microbatch_max_wait_ms},
        "limits": {
            "max_molecules_per_request": s.max_molecules_per_request,
            "max_smiles_length": s.max_smiles_length,
            "max_request_bytes": s.max_request_bytes,
        },
    }
