"""Linear dimension reduction fitted on training rows: PCA or CUR column selection.

* PCA: ``Z = (X - mu) V_k`` with ``V_k`` the top-``k`` right singular vectors of the centred training
  matrix (randomized SVD, Halko, Martinsson & Tropp, 2011).
* CUR (column part): keep the ``k`` original columns with the largest statistical leverage
  ``pi_j = (1/k) sum_{r<=k} V_{jr}^2`` (Mahoney & Drineas, 2009, PNAS 106:697), selected
  deterministically by rank (Papailiopoulos, Kyrillidis & Boutsidis, 2014), so the reduced features
  stay interpretable as original embedding dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.utils.extmath import randomized_svd

ReductionMethod = Literal["pca", "cur"]
METHODS: tuple[str, ...] = ("pca", "cur")


@dataclass
class Reducer:
    method: ReductionMethod
    mean: np.ndarray  # [D] training mean (PCA centring)
    components: np.ndarray  # [D, k] PCA basis; empty for CUR
    columns: np.ndarray  # [k] selected columns for CUR; empty for PCA

    @classmethod
    def fit(cls, x: np.ndarray, n_components: int, method: ReductionMethod = "pca", seed: int = 0) -> Reducer:
        if method not in METHODS:
            raise ValueError(f"reduction must be one of {METHODS}, got {method!r}")
        x = np.asarray(x, dtype=np.float32)
        k = int(max(1, min(n_components, x.shape[0] - 1, x.shape[1])))
        mean = x.mean(axis=0)
        _, _, vt = randomized_svd(x - mean, n_components=k, n_iter=4, random_state=seed)
        if method == "pca":
            return cls("pca", mean.astype(np.float32), vt.T.astype(np.float32), np.zeros(0, dtype=np.int64))
        leverage = (vt**2).sum(axis=0) / k
        columns = np.sort(np.argsort(-leverage, kind="stable")[:k]).astype(np.int64)
        return cls("cur", mean.astype(np.float32), np.zeros((0, 0), dtype=np.float32), columns)

    @property
    def out_dim(self) -> int:
        return int(self.components.shape[1]) if self.method == "pca" else int(self.columns.size)

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.method == "pca":
            return ((x - self.mean) @ self.components).astype(np.float32)
        return x[:, self.columns]

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.mean": self.mean,
            f"{prefix}.components": self.components,
            f"{prefix}.columns": self.columns,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str, method: ReductionMethod) -> Reducer:
        return cls(
            method, arrays[f"{prefix}.mean"], arrays[f"{prefix}.components"], arrays[f"{prefix}.columns"]
        )
