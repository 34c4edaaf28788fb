"""Head kinds: each maps the fused representation to per-task outputs. ``PREDICTORS`` names them."""

from __future__ import annotations

from fusion.predictors.experts import ExpertsPredictor
from fusion.predictors.fmt import FMTPredictor
from fusion.predictors.mlp import MLPPredictor
from fusion.predictors.single_task import SingleTaskPredictor
from fusion.predictors.xgb import XGBPredictor

PREDICTORS: dict[str, type] = {
    "mlp": MLPPredictor,
    "xgb": XGBPredictor,
    "experts": ExpertsPredictor,
    "fmt": FMTPredictor,
    "single_task": SingleTaskPredictor,
}
HEADS: tuple[str, ...] = tuple(PREDICTORS)
