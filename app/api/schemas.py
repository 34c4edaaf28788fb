"""Request and response bodies of the /v1 API (pydantic; they are what ``/docs`` shows)."""

from __future__ import annotations

from typing import Literal

import pydantic_core
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

View = Literal["smiles", "graph", "fused"]
Status = Literal["ok", "invalid"]

_SMILES_FIELD = Field(
    ...,
    min_length=1,
    description="SMILES strings, one molecule each. Results come back in the same order; invalid ones "
    "get status 'invalid' and a reason.",
    examples=[["CCO", "c1ccccc1O", "not-a-smiles"]],
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedRequest(_Strict):
    smiles: list[str] = _SMILES_FIELD
    views: list[View] = Field(
        default=["fused"],
        min_length=1,
        description="Embedding views: 'smiles' (transformer), 'graph' (GNN), 'fused' (their concatenation).",
    )


class EmbedItem(BaseModel):
    input: str
    canonical_smiles: str | None = Field(description="RDKit canonical SMILES (after salt stripping).")
    status: Status
    error: str | None = Field(default=None, description="Why the input is invalid.")
    embeddings: dict[str, list[float]] | None = Field(
        default=None, description="View -> float vector; absent for invalid inputs."
    )


class EmbedResponse(BaseModel):
    encoder_versions: dict[str, str]
    dims: dict[str, int]
    results: list[EmbedItem]


class PredictRequest(_Strict):
    smiles: list[str] = _SMILES_FIELD
    properties: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Property (head) names from GET /v1/properties; every served head when omitted.",
        examples=[["bbbp", "esol"]],
    )


class TaskPrediction(BaseModel):
    value: float | None = Field(description="Probability (classification) or value in `units` (regression).")
    task_type: Literal["classification", "regression"]
    units: str | None = None


class PropertyPrediction(BaseModel):
    head: str = Field(description="Head that produced the values.")
    head_version: str | None = None
    encoder_versions: dict[str, str | None] = Field(description="Encoder view -> version the head used.")
    tasks: dict[str, TaskPrediction]


class PredictItem(BaseModel):
    input: str
    canonical_smiles: str | None
    status: Status
    error: str | None = None
    predictions: dict[str, PropertyPrediction] | None = Field(
        default=None, description="Property -> prediction; absent for invalid inputs."
    )


class PredictResponse(BaseModel):
    results: list[PredictItem]


class PropertyInfo(BaseModel):
    name: str
    version: str | None = None
    description: str | None = None
    tasks: list[str]
    task_types: list[Literal["classification", "regression"]]
    units: list[str | None]
    views: list[str]
    encoder_versions: dict[str, str | None]
    metrics: dict = Field(default_factory=dict, description="Evaluation metrics from the head's card.")


class PropertiesResponse(BaseModel):
    properties: list[PropertyInfo]
    skipped: dict[str, str] = Field(default_factory=dict, description="Heads not served, with the reason.")


class EncoderInfo(BaseModel):
    view: str
    version: str
    dim: int


class DeviceInfo(BaseModel):
    type: str
    name: str


class InfoResponse(BaseModel):
    version: str
    encoders: list[EncoderInfo]
    device: DeviceInfo
    cache: dict = Field(description="Cache backend and its state (hits, misses, health, last error).")
    properties: list[str]
    microbatch: dict[str, int | float]  # max_size (int), max_wait_ms (float)
    limits: dict[str, int]


class LiveResponse(BaseModel):
    status: Literal["alive"] = "alive"


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "failed"]
    degraded: bool = Field(
        description="True while a component (the Redis cache) is failing; requests still succeed."
    )
    cache: dict
    error: str | None = None


class ErrorResponse(BaseModel):
    detail: str | list


def json_response(payload: dict) -> Response:
    """Serialize a payload already shaped like the route's response model, in pydantic's Rust encoder,
    without re-validating it (validating a large nested response costs more than a cached request's
    own work). The models still document the responses, and the schema-conformance fuzz test checks
    that the payloads match them. NaN/inf become ``null``."""
    return Response(pydantic_core.to_json(payload, inf_nan_mode="null"), media_type="application/json")


BODY_ERRORS = {
    400: {"model": ErrorResponse, "description": "The body could not be read (e.g. not UTF-8)."},
    413: {"model": ErrorResponse, "description": "Too many molecules or request body too large."},
}
