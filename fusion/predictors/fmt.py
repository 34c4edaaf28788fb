"""``fmt``: embedding-fusion multi-task learning.

1. Train one single-task head per task (:mod:`fusion.predictors.single_task`) on the fused vector.
2. Take every head's learned hidden representation ``h_t(x)`` and concatenate: ``H = [h_1; ...; h_T]``.
3. Reduce ``H`` with PCA (or CUR) fitted on the training rows only, then standardise.
4. Train a multi-task MLP with the masked loss on the reduced representation.

The single-task heads turn each weakly-labelled task into a dense learned feature that every molecule
has, so the final multi-task head sees information from all tasks for every row (data fusion at the
embedding level for sparse, weakly correlated properties).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_np
from safetensors.numpy import save_file as save_np
from safetensors.torch import load_file, save_file
from torch import nn

from fusion.fusions import FusionPreprocessor, Prepared
from fusion.loop import fit_network, labels_to_tensors, predict_batched
from fusion.nets import FusedInput, MultiTaskMLP
from fusion.predictors.base import NeuralParams, NeuralPredictor, finish, rows
from fusion.predictors.single_task import SingleTaskParams, SingleTaskPredictor
from fusion.reduction import Reducer
from fusion.scaling import Standardizer

SINGLE_FILE = "single_task.safetensors"
MULTI_FILE = "multi_task.safetensors"
REDUCE_FILE = "fmt_reduction.safetensors"


@dataclasses.dataclass
class FMTParams(NeuralParams):
    hidden: int = 128
    layers: int = 1
    single_hidden: int = 32
    single_dropout: float = 0.1
    components: int = 64
    reduction: str = "pca"


class FMTPredictor(NeuralPredictor):
    kind = "fmt"
    params_cls = FMTParams

    def __init__(self, pre: FusionPreprocessor, task_types: list[str], params: FMTParams) -> None:
        self.single = SingleTaskPredictor(pre, task_types, self._single_params(params))
        self.reducer: Reducer | None = None
        self.scaler: Standardizer | None = None
        super().__init__(pre, task_types, params)

    @staticmethod
    def _single_params(p: FMTParams) -> SingleTaskParams:
        return SingleTaskParams(
            hidden=p.single_hidden,
            dropout=p.single_dropout,
            lr=p.lr,
            weight_decay=p.weight_decay,
            epochs=p.epochs,
            patience=p.patience,
            batch_size=p.batch_size,
        )

    def _reduced_dim(self) -> int:
        return self.reducer.out_dim if self.reducer is not None else self.params.components

    def build(self) -> nn.Module:
        p = self.params
        return MultiTaskMLP(
            FusedInput(self._reduced_dim(), [], [], 0), p.hidden, p.layers, p.dropout, len(self.task_types)
        )

    def _stage2(self, data: Prepared) -> dict[str, np.ndarray]:
        assert self.reducer is not None and self.scaler is not None
        return {"x": self.scaler.transform(self.reducer.transform(self.single.hidden(data)))}

    def fit(
        self,
        data: Prepared,
        y: np.ndarray,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        seed: int,
        groups: np.ndarray | None = None,
    ) -> dict:
        info_single = self.single.fit(data, y, train_idx, val_idx, seed)
        h_train = self.single.hidden(data.rows(train_idx))
        self.reducer = Reducer.fit(h_train, self.params.components, self.params.reduction, seed)  # type: ignore[arg-type]
        self.scaler = Standardizer.fit(self.reducer.transform(h_train))
        torch.manual_seed(seed)
        self.net = self.build()
        x = self._stage2(data)
        train = {**rows(x, train_idx), **labels_to_tensors(y[train_idx])}
        val = {**rows(x, val_idx), **labels_to_tensors(y[val_idx])}
        info = fit_network(self.net, train, val, self.is_cls, self.params.loop(seed))
        return {"single_task": info_single, "multi_task": info, "reduced_dim": self._reduced_dim()}

    def predict(self, data: Prepared) -> np.ndarray:
        x = rows(self._stage2(data), np.arange(len(data)))
        return finish(predict_batched(self.net, x, self.forward), self.is_cls)

    def save(self, directory: Path) -> dict:
        assert self.reducer is not None and self.scaler is not None
        save_file(
            {k: v.contiguous() for k, v in self.single.net.state_dict().items()}, str(directory / SINGLE_FILE)
        )
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(directory / MULTI_FILE))
        save_np(
            {**self.reducer.arrays("reduce"), **self.scaler.arrays("scale")}, str(directory / REDUCE_FILE)
        )
        return {"reduction": self.reducer.method, "reduced_dim": self.reducer.out_dim}

    def load(self, directory: Path, config: dict) -> None:
        arrays = load_np(str(directory / REDUCE_FILE))
        self.reducer = Reducer.from_arrays(arrays, "reduce", config["reduction"])
        self.scaler = Standardizer.from_arrays(arrays, "scale")
        self.single.net.load_state_dict(load_file(str(directory / SINGLE_FILE)))
        self.net = self.build()
        self.net.load_state_dict(load_file(str(directory / MULTI_FILE)))
        self.single.net.eval()
        self.net.eval()
