"""Evaluation metrics per task: ROC-AUC (classification), RMSE and MAE (regression).

Only labelled rows count (NaN = missing label). ROC-AUC is undefined when a split holds a single
class for a task; that task is then reported as ``None`` and left out of the mean.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

CLASSIFICATION_METRICS = ("roc_auc",)
REGRESSION_METRICS = ("rmse", "mae")


def task_metrics(y_true: np.ndarray, y_pred: np.ndarray, task_type: str) -> dict[str, float | None]:
    keep = ~np.isnan(y_true) & ~np.isnan(y_pred)
    yt, yp = y_true[keep], y_pred[keep]
    if task_type == "classification":
        ok = yt.size > 0 and np.unique(yt).size == 2
        return {"roc_auc": float(roc_auc_score(yt, yp)) if ok else None, "n": int(yt.size)}
    if yt.size == 0:
        return {"rmse": None, "mae": None, "n": 0}
    err = yp - yt
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))), "n": int(yt.size)}


def evaluate(
    y_true: np.ndarray, y_pred: np.ndarray, task_types: list[str], tasks: list[str] | None = None
) -> dict:
    """``{"per_task": {task: {metric: value, "n": labelled rows}}, "mean": {metric: mean over tasks}}``.

    ``mean`` averages each metric over the tasks where it is defined; ``primary`` names the metric
    used for model selection (ROC-AUC when every task is a classification, else RMSE).
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    tasks = tasks or [f"task_{t}" for t in range(y_true.shape[1])]
    per_task = {name: task_metrics(y_true[:, t], y_pred[:, t], task_types[t]) for t, name in enumerate(tasks)}
    mean: dict[str, float | None] = {}
    for metric in CLASSIFICATION_METRICS + REGRESSION_METRICS:
        values = [m[metric] for m in per_task.values() if m.get(metric) is not None]
        if any(metric in m for m in per_task.values()):
            mean[metric] = float(np.mean(values)) if values else None
    return {"per_task": per_task, "mean": mean, "primary": primary_metric(task_types)}


def primary_metric(task_types: list[str]) -> str:
    return "roc_auc" if all(t == "classification" for t in task_types) else "rmse"


def is_better(a: float | None, b: float | None, metric: str) -> bool:
    """Whether score ``a`` beats ``b`` for ``metric`` (``None`` never wins)."""
    if a is None:
        return False
    if b is None:
        return True
    return a > b if metric == "roc_auc" else a < b
