"""Dependencies shared by the /v1 routes: the API key, the model service and request limits.

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread pool, a thread
hop per dependency per request that costs more than the work they do."""

from __future__ import annotations

import secrets

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from app.api.service import ModelService
from app.settings import Settings

API_KEY_HEADER = "X-API-Key"
_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Required on every /v1 call when MOLFUSION_API_KEY is set.",
)


async def get_service(request: Request) -> ModelService:
    return request.app.state.service


def api_key_ok(key: str | None, expected: str | None) -> bool:
    """Whether ``key`` (the ``X-API-Key`` header) passes: always when no key is configured, else when it
    equals ``expected`` (constant-time comparison)."""
    if not expected:
        return True
    return bool(key) and secrets.compare_digest(key.encode(), expected.encode())


async def require_api_key(request: Request, key: str | None = Security(_api_key_header)) -> None:
    """401 unless the ``X-API-Key`` header matches ``MOLFUSION_API_KEY`` (no-op when that is unset)."""
    if not api_key_ok(key, request.app.state.settings.api_key):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"missing or invalid API key (header {API_KEY_HEADER})",
            headers={"WWW-Authenticate": "ApiKey"},
        )


def check_molecule_count(n: int, settings: Settings) -> None:
    """413 when a request carries more molecules than ``max_molecules_per_request``."""
    if n > settings.max_molecules_per_request:
        limit = settings.max_molecules_per_request
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"too many molecules in 'smiles': {n} > {limit} "
            "(MOLFUSION_MAX_MOLECULES_PER_REQUEST); split the request",
        )
