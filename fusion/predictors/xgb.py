"""``xgb``: gradient-boosted trees (XGBoost, Chen & Guestrin 2016), one booster per task.

Each task trains on its labelled training rows of the fused vector (``binary:logistic`` or
``reg:squarederror`` on standardised labels), with early stopping on the task's validation rows
(log-loss / RMSE, ``early_stopping_rounds``); the best iteration is kept for prediction. Boosters are
stored in XGBoost's native UBJSON format. XGBoost is imported when a booster is first trained or
loaded, so importing the heads (e.g. for an MLP-only job or a benchmark host without it) does not need it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fusion.fusions import FusionPreprocessor, Prepared

if TYPE_CHECKING:
    import xgboost

log = logging.getLogger(__name__)


@dataclasses.dataclass
class XGBParams:
    n_estimators: int = 1000
    learning_rate: float = 0.05
    max_depth: int = 6
    min_child_weight: float = 1.0
    subsample: float = 0.8
    colsample_bytree: float = 0.5
    reg_lambda: float = 1.0
    early_stopping_rounds: int = 50
    n_jobs: int = 0  # 0 = all cores


def booster_file(task_index: int) -> str:
    return f"xgb_task_{task_index}.ubj"


class XGBPredictor:
    kind = "xgb"
    params_cls = XGBParams

    def __init__(self, pre: FusionPreprocessor, task_types: list[str], params: XGBParams) -> None:
        if pre.fused_dim is None:
            raise ValueError("head 'xgb' needs fusion 'concat' or 'concat_reduce', not 'gated'")
        self.pre = pre
        self.task_types = list(task_types)
        self.params = params
        self.boosters: list[xgboost.Booster] = []
        self.best_iterations: list[int] = []

    def _xgb_params(self, kind: str, seed: int) -> dict:
        p = self.params
        return {
            "objective": "binary:logistic" if kind == "classification" else "reg:squarederror",
            "eval_metric": "logloss" if kind == "classification" else "rmse",
            "eta": p.learning_rate,
            "max_depth": p.max_depth,
            "min_child_weight": p.min_child_weight,
            "subsample": p.subsample,
            "colsample_bytree": p.colsample_bytree,
            "lambda": p.reg_lambda,
            "tree_method": "hist",
            "seed": seed,
            "nthread": p.n_jobs,
            "verbosity": 0,
        }

    def fit(
        self,
        data: Prepared,
        y: np.ndarray,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        seed: int,
        groups: np.ndarray | None = None,
    ) -> dict:
        assert data.fused is not None
        import xgboost as xgb

        self.boosters, self.best_iterations = [], []
        for t, kind in enumerate(self.task_types):
            tr = train_idx[~np.isnan(y[train_idx, t])]
            va = val_idx[~np.isnan(y[val_idx, t])]
            dtrain = xgb.DMatrix(data.fused[tr], label=y[tr, t])
            evals = [(xgb.DMatrix(data.fused[va], label=y[va, t]), "val")] if len(va) else []
            booster = xgb.train(
                self._xgb_params(kind, seed),
                dtrain,
                num_boost_round=self.params.n_estimators,
                evals=evals,
                early_stopping_rounds=self.params.early_stopping_rounds if evals else None,
                verbose_eval=False,
            )
            best = int(booster.best_iteration) if evals else self.params.n_estimators - 1
            self.boosters.append(booster)
            self.best_iterations.append(best)
        return {"best_iterations": list(self.best_iterations)}

    def predict(self, data: Prepared) -> np.ndarray:
        assert data.fused is not None
        out = np.empty((len(data), len(self.task_types)), dtype=np.float32)
        if not len(data):
            return out
        import xgboost as xgb

        d = xgb.DMatrix(data.fused)
        for t, booster in enumerate(self.boosters):
            out[:, t] = booster.predict(d, iteration_range=(0, self.best_iterations[t] + 1))
        return out

    def save(self, directory: Path) -> dict:
        for t, booster in enumerate(self.boosters):
            booster.save_model(str(directory / booster_file(t)))
        return {"best_iterations": list(self.best_iterations)}

    def load(self, directory: Path, config: dict) -> None:
        self.best_iterations = [int(b) for b in config["best_iterations"]]
        import xgboost as xgb

        self.boosters = []
        for t in range(len(self.task_types)):
            booster = xgb.Booster()
            booster.load_model(str(directory / booster_file(t)))
            self.boosters.append(booster)
