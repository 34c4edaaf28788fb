"""Feature standardisation and label scaling, fitted on training rows only and stored as arrays.

Standardisation: ``z = (x - mu) / s`` with ``mu``, ``s`` the per-column mean and standard deviation of
the training rows (``s`` floored at ``1e-6`` so constant columns map to 0). Regression labels are
standardised the same way per task (over the task's labelled training rows) and un-standardised at
prediction: ``y = mu_t + s_t * y_hat``; classification tasks are left as 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STD_FLOOR = 1e-6


@dataclass
class Standardizer:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        x = np.asarray(x, dtype=np.float64)
        return cls(x.mean(axis=0).astype(np.float32), np.maximum(x.std(axis=0), STD_FLOOR).astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.mean": self.mean, f"{prefix}.std": self.std}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> Standardizer:
        return cls(arrays[f"{prefix}.mean"], arrays[f"{prefix}.std"])


@dataclass
class LabelScaler:
    """Per-task affine label scaling; identity (0, 1) for classification tasks."""

    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, y: np.ndarray, task_types: list[str]) -> LabelScaler:
        means, stds = [], []
        for t, kind in enumerate(task_types):
            col = y[:, t][~np.isnan(y[:, t])]
            if kind == "regression" and col.size:
                means.append(float(col.mean()))
                stds.append(float(max(col.std(), STD_FLOOR)))
            else:
                means.append(0.0)
                stds.append(1.0)
        return cls(means, stds)

    def transform(self, y: np.ndarray) -> np.ndarray:
        return ((y - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return (y * np.asarray(self.std) + np.asarray(self.mean)).astype(np.float32)

    def to_json(self, tasks: list[str], task_types: list[str]) -> dict:
        return {
            "method": "per-task standardisation of regression labels over labelled training rows",
            "tasks": {
                t: {"type": k, "mean": m, "std": s}
                for t, k, m, s in zip(tasks, task_types, self.mean, self.std, strict=True)
            },
        }

    @classmethod
    def from_json(cls, raw: dict, tasks: list[str]) -> LabelScaler:
        return cls([raw["tasks"][t]["mean"] for t in tasks], [raw["tasks"][t]["std"] for t in tasks])
