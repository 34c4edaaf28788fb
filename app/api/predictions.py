"""POST /v1/predict: property predictions per molecule from the served heads."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import check_molecule_count
from app.api.schemas import BODY_ERRORS, PredictRequest, PredictResponse, json_response
from app.api.service import ModelService

router = APIRouter(prefix="/v1", tags=["molecules"])


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
    result = await service.predict(body.smiles, heads)
    meta = {name: service.head_infos[name] for name in heads}
    tables = {name: result.predictions[name].tolist() for name in heads}
    items = []
    n_ok = 0
    for i, raw in enumerate(body.smiles):
        error = result.errors[i]
        item = {
            "input": raw,
            "canonical_smiles": result.canonical[i],
            "status": "ok" if error is None else "invalid",
            "error": error,
            "predictions": None,
        }
        if error is None:
            n_ok += 1
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
    service.metrics.molecules.labels("predict", "ok").inc(n_ok)
    service.metrics.molecules.labels("predict", "invalid").inc(len(items) - n_ok)
    return json_response({"results": items})
