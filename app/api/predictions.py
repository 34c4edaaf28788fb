"""POST /v1/predict: property predictions per molecule from the served heads.

Each result item is serialized on its own and remembered in the service's :class:`ResponseMemo` by
(raw input, versions of the requested heads); the response is those items joined. A request whose
every item is remembered is answered by concatenating bytes: here, or before FastAPI's routing by
:class:`app.api.fastpath.PredictFastPath`, which calls :func:`memo_answer` too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pydantic_core
from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import check_molecule_count
from app.api.schemas import BODY_ERRORS, PredictRequest, PredictResponse
from app.api.service import JobResult, ModelService

router = APIRouter(prefix="/v1", tags=["molecules"])

JSON = "application/json"
_OPEN, _CLOSE = b'{"results":[', b"]}"


def results_body(parts: list[bytes]) -> bytes:
    """``{"results": [...]}`` from serialized items: the same bytes as serializing the whole payload."""
    return _OPEN + b",".join(parts) + _CLOSE


def memo_answer(service: ModelService, smiles: list[str], heads: tuple[str, ...]) -> bytes | None:
    """The response body if every input's item is remembered for these heads (counted in the metrics
    as a memo answer), else ``None``. Dictionary look-ups only: safe on the event loop."""
    memo = service.responses
    if memo is None:
        return None
    hit = memo.recall(service.response_key(heads), smiles)
    if hit is None:
        return None
    parts, n_ok = hit
    service.metrics.memo_answers.inc()
    service.metrics.count_molecules("predict", n_ok, len(parts) - n_ok)
    return results_body(parts)


def _items(service: ModelService, smiles: list[str], heads: tuple[str, ...], result: JobResult) -> list[dict]:
    """Result items shaped like :class:`PredictItem`, in input order."""
    meta = {name: service.head_infos[name] for name in heads}
    tables = {name: result.predictions[name].tolist() for name in heads}
    items: list[dict[str, Any]] = []
    for i, raw in enumerate(smiles):
        error = result.errors[i]
        item: dict[str, Any] = {
            "input": raw,
            "canonical_smiles": result.canonical[i],
            "status": "ok" if error is None else "invalid",
            "error": error,
            "predictions": None,
        }
        if error is None:
            item["predictions"] = {
                name: {
                    "head": name,
                    "head_version": info["version"],
                    "encoder_versions": info["encoder_versions"],
                    "tasks": {
                        task: {"value": v, "task_type": kind, "units": unit}  # NaN -> null
                        for task, kind, unit, v in zip(
                            info["tasks"], info["task_types"], info["units"], tables[name][i], strict=True
                        )
                    },
                }
                for name, info in meta.items()
            }
        items.append(item)
    return items


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Predict molecular properties",
    responses={**BODY_ERRORS, 422: {"description": "Invalid body or an unknown property name."}},
)
async def predict(body: PredictRequest, request: Request) -> Response:
    """Predictions of the requested properties (all served heads when omitted) for each SMILES, in
    input order: probabilities for classification tasks, values in the label's units for regression.
    Invalid SMILES get ``status: invalid`` and a reason; the others still succeed."""
    service: ModelService = request.app.state.service
    check_molecule_count(len(body.smiles), service.settings)
    heads = service.resolve_properties(body.properties)
    remembered = memo_answer(service, body.smiles, heads)
    if remembered is not None:
        return Response(remembered, media_type=JSON)
    result = await service.predict(body.smiles, heads)
    items = _items(service, body.smiles, heads, result)
    # Serialized by pydantic-core without re-validating against the response model (the fuzz test
    # checks conformance); NaN/inf become null.
    parts = [pydantic_core.to_json(item, inf_nan_mode="null") for item in items]
    n_ok = sum(item["error"] is None for item in items)
    if service.responses is not None and service.canonicalize is not None:
        longest = service.canonicalize.policy.max_smiles_length  # over-long inputs are never kept
        finite = np.ones(len(items), dtype=bool)
        for name in heads:
            finite &= np.isfinite(result.predictions[name]).all(axis=1)
        service.responses.store(
            service.response_key(heads),
            len(heads),
            [
                (raw, part, item["error"] is None)
                for raw, part, item, whole in zip(body.smiles, parts, items, finite, strict=True)
                if len(raw) <= longest and (whole or item["error"] is not None)  # a null value: not kept
            ],
        )
    service.metrics.count_molecules("predict", n_ok, len(items) - n_ok)
    return Response(results_body(parts), media_type=JSON)
