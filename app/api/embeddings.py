"""POST /v1/embed: embedding vectors per molecule and view."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import check_molecule_count
from app.api.schemas import BODY_ERRORS, EmbedRequest, EmbedResponse, json_response
from app.api.service import ModelService

router = APIRouter(prefix="/v1", tags=["molecules"])


@router.post("/embed", response_model=EmbedResponse, summary="Embed molecules", responses=BODY_ERRORS)
async def embed(body: EmbedRequest, request: Request) -> Response:
    """Embeddings for each SMILES in the requested views, in input order. Invalid SMILES get
    ``status: invalid`` and a reason; the others still succeed."""
    service: ModelService = request.app.state.service
    check_molecule_count(len(body.smiles), service.settings)
    views = tuple(dict.fromkeys(body.views))
    result = await service.embed(body.smiles, views)
    rows = {v: result.vectors[v].tolist() for v in views}
    items = []
    for i, raw in enumerate(body.smiles):
        ok = result.errors[i] is None
        items.append(
            {
                "input": raw,
                "canonical_smiles": result.canonical[i],
                "status": "ok" if ok else "invalid",
                "error": result.errors[i],
                "embeddings": {v: rows[v][i] for v in views} if ok else None,
            }
        )
    n_ok = int(np.sum([e is None for e in result.errors]))
    service.metrics.count_molecules("embed", n_ok, len(items) - n_ok)
    embedder = service.embedder
    return json_response(
        {
            "encoder_versions": embedder.versions,
            "dims": {v: embedder.dims[v] for v in views},
            "results": items,
        }
    )
