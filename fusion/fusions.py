"""Fusion strategies over the encoder views, fitted on training rows and saved with the head.

* ``concat``: each view standardised with its training statistics, then concatenated,
  ``x = [z_smiles ; z_graph]`` (the multi-view representation).
* ``concat_reduce``: ``concat`` followed by a reduction fitted on training rows only (PCA by default,
  CUR column selection as an option; :mod:`fusion.reduction`), then standardised again.
* ``gated``: the standardised views are handed separately to a learned gate trained with the head
  (:class:`fusion.nets.GatedFusion`); only neural heads accept it.

:class:`FusionPreprocessor` does the fitted, non-learned part; its output :class:`Prepared` carries the
standardised views (for ``gated`` and for the experts' gate) and the fused matrix (``concat*``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fusion.reduction import Reducer, ReductionMethod
from fusion.scaling import Standardizer

FUSIONS: tuple[str, ...] = ("concat", "concat_reduce", "gated")
ENCODER_VIEWS: tuple[str, ...] = ("smiles", "graph")


def order_views(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Encoder views first in their canonical order, then any other named view alphabetically.

    A ``fused`` view (the embedder's concatenation) is dropped when both encoder views are given,
    because the heads fuse the views themselves."""
    names = list(dict.fromkeys(names))
    if "fused" in names and all(v in names for v in ENCODER_VIEWS):
        names.remove("fused")
    return tuple(
        [v for v in ENCODER_VIEWS if v in names] + sorted(v for v in names if v not in ENCODER_VIEWS)
    )


@dataclass
class Prepared:
    """Standardised views (row-aligned) and, for ``concat*`` fusions, the fused matrix."""

    views: dict[str, np.ndarray]
    fused: np.ndarray | None

    def rows(self, idx: np.ndarray) -> Prepared:
        return Prepared(
            {k: v[idx] for k, v in self.views.items()}, None if self.fused is None else self.fused[idx]
        )

    def __len__(self) -> int:
        return len(next(iter(self.views.values())))


@dataclass
class FusionPreprocessor:
    fusion: str
    views: tuple[str, ...]
    dims: dict[str, int]
    scalers: dict[str, Standardizer] = field(default_factory=dict)
    reducer: Reducer | None = None
    reduced_scaler: Standardizer | None = None

    @classmethod
    def fit(
        cls,
        views: dict[str, np.ndarray],
        train_idx: np.ndarray,
        fusion: str = "concat",
        n_components: int = 128,
        reduction: ReductionMethod = "pca",
        seed: int = 0,
    ) -> FusionPreprocessor:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        names = order_views(list(views))
        if fusion == "gated" and len(names) < 2:
            raise ValueError(f"gated fusion needs at least two views, got {list(names)}")
        pre = cls(fusion, names, {v: int(views[v].shape[1]) for v in names})
        pre.scalers = {v: Standardizer.fit(views[v][train_idx]) for v in names}
        if fusion == "concat_reduce":
            x = pre._concat({v: pre.scalers[v].transform(views[v][train_idx]) for v in names})
            pre.reducer = Reducer.fit(x, n_components, reduction, seed)
            pre.reduced_scaler = Standardizer.fit(pre.reducer.transform(x))
        return pre

    def _concat(self, std: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([std[v] for v in self.views], axis=1)

    @property
    def fused_dim(self) -> int | None:
        if self.fusion == "gated":
            return None
        if self.reducer is not None:
            return self.reducer.out_dim
        return sum(self.dims[v] for v in self.views)

    def check(self, views: dict[str, np.ndarray]) -> None:
        for v in self.views:
            if v not in views:
                raise ValueError(f"missing view {v!r}; this head needs {list(self.views)}")
            arr = views[v]
            if arr.ndim != 2 or arr.shape[1] != self.dims[v]:
                raise ValueError(f"view {v!r} has shape {tuple(arr.shape)}; expected [N, {self.dims[v]}]")
        lengths = {len(views[v]) for v in self.views}
        if len(lengths) != 1:
            raise ValueError(f"views have different row counts: { {v: len(views[v]) for v in self.views} }")

    def transform(self, views: dict[str, np.ndarray]) -> Prepared:
        self.check(views)
        std = {v: self.scalers[v].transform(views[v]) for v in self.views}
        if self.fusion == "gated":
            return Prepared(std, None)
        fused = self._concat(std)
        if self.reducer is not None and self.reduced_scaler is not None:
            fused = self.reduced_scaler.transform(self.reducer.transform(fused))
        return Prepared(std, fused)

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for v in self.views:
            out.update(self.scalers[v].arrays(f"view.{v}"))
        if self.reducer is not None and self.reduced_scaler is not None:
            out.update(self.reducer.arrays("reduce"))
            out.update(self.reduced_scaler.arrays("reduced"))
        return out

    def config(self) -> dict:
        return {
            "fusion": self.fusion,
            "views": list(self.views),
            "dims": self.dims,
            "reduction": None if self.reducer is None else self.reducer.method,
        }

    @classmethod
    def from_saved(cls, config: dict, arrays: dict[str, np.ndarray]) -> FusionPreprocessor:
        views = tuple(config["views"])
        pre = cls(config["fusion"], views, {k: int(v) for k, v in config["dims"].items()})
        pre.scalers = {v: Standardizer.from_arrays(arrays, f"view.{v}") for v in views}
        if config.get("reduction"):
            pre.reducer = Reducer.from_arrays(arrays, "reduce", config["reduction"])
            pre.reduced_scaler = Standardizer.from_arrays(arrays, "reduced")
        return pre
