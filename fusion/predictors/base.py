"""What every head kind shares: hyper-parameter parsing, network inputs and the neural-head skeleton.

A predictor maps the fitted fusion output (:class:`fusion.fusions.Prepared`) to ``[N, T]`` outputs:
probabilities for classification tasks and *standardised* values for regression tasks (the
:class:`fusion.model.TrainedModel` un-standardises them).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fusion.fusions import FusionPreprocessor, Prepared
from fusion.loop import Batch, LoopConfig, fit_network, labels_to_tensors, predict_batched
from fusion.nets import FusedInput, view_key

WEIGHTS_FILE = "weights.safetensors"


def _at_least(low: float) -> tuple[str, Any]:
    return f">= {low:g}", lambda v: v >= low


_POSITIVE = ("> 0", lambda v: v > 0)
_FRACTION = ("in [0, 1)", lambda v: 0 <= v < 1)
_SHARE = ("in (0, 1]", lambda v: 0 < v <= 1)

# The valid range of every numeric hyper-parameter of every head and of the concat_reduce fusion (a value
# outside it failed deep in training, or trained nothing: epochs=0 saved an untrained head).
RANGES: dict[str, tuple[str, Any]] = {
    **{n: _at_least(1) for n in ("hidden", "epochs", "patience", "batch_size", "gate_dim", "n_estimators",
                                "max_depth", "early_stopping_rounds", "n_experts", "cluster_dim",
                                "single_hidden", "components", "n_components")},
    **{n: _at_least(0) for n in ("layers", "weight_decay", "min_child_weight", "reg_lambda", "n_jobs",
                                "kl_weight", "scaffold_weight")},
    **{n: _POSITIVE for n in ("lr", "learning_rate", "alpha")},
    **{n: _FRACTION for n in ("dropout", "single_dropout")},
    **{n: _SHARE for n in ("subsample", "colsample_bytree")},
    "reduction": ("'pca' or 'cur'", lambda v: v in ("pca", "cur")),
    "task_weights": ("a list of numbers >= 0", lambda v: v is None or all(
        isinstance(w, int | float) and not isinstance(w, bool) and w >= 0 for w in v)),
}


def check_range(name: str, value: Any, owner: str) -> None:
    """``ValueError`` naming the hyper-parameter when ``value`` is not finite or outside its valid range."""
    if isinstance(value, float) and not math.isfinite(value):  # lr=Infinity trained nothing
        raise ValueError(f"hyper-parameter {name!r} of {owner} must be a finite number, got {value!r}")
    rule = RANGES.get(name)
    if rule is not None and not rule[1](value):
        raise ValueError(f"hyper-parameter {name!r} of {owner} must be {rule[0]}, got {value!r}")


def parse_params(cls: type, raw: dict[str, Any], head: str) -> Any:
    """Build the hyper-parameter dataclass ``cls`` from ``raw``; unknown names, values of the wrong type
    and values outside their range (:data:`RANGES`) are an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {unknown} for head {head!r}; valid: {sorted(names)}")
    defaults = cls()
    for name, value in raw.items():
        want = type(getattr(defaults, name))
        if not _of_type(value, want):
            raise ValueError(
                f"hyper-parameter {name!r} of head {head!r} must be {want.__name__}, got {value!r}"
            )
        check_range(name, value, f"head {head!r}")
    return cls(**raw)


def _of_type(value: object, want: type) -> bool:
    """Whether ``value`` fits a field whose default is of type ``want`` (an int fits a float field)."""
    if want is bool:
        return isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if want is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if want in (list, tuple):
        return isinstance(value, list | tuple)
    return want is type(None) or isinstance(value, want)


@dataclasses.dataclass
class NeuralParams:
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-5
    epochs: int = 100
    patience: int = 15
    batch_size: int = 128
    gate_dim: int = 128  # width of the learned gated fusion (``gated`` only)
    task_weights: list[float] | None = None  # loss weight per task column (``fusion.loop``); None = equal

    def loop(self, seed: int) -> LoopConfig:
        return LoopConfig(
            epochs=self.epochs,
            patience=self.patience,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            seed=seed,
            task_weights=None if self.task_weights is None else tuple(map(float, self.task_weights)),
        )


def input_block(pre: FusionPreprocessor, gate_dim: int) -> FusedInput:
    return FusedInput(pre.fused_dim, list(pre.views), [pre.dims[v] for v in pre.views], gate_dim)


def net_inputs(data: Prepared, gate: bool = False) -> dict[str, np.ndarray]:
    """``{"x": fused}`` (``concat*``) or ``{"view:<v>": z_v}`` (``gated``); ``"gate"`` = graph view."""
    arrays = {"x": data.fused} if data.fused is not None else {view_key(v): a for v, a in data.views.items()}
    if gate:
        arrays["gate"] = data.views["graph"]
    return arrays


def rows(arrays: dict[str, np.ndarray], idx: np.ndarray) -> Batch:
    return {k: torch.as_tensor(np.ascontiguousarray(v[idx]), dtype=torch.float32) for k, v in arrays.items()}


def finish(out: torch.Tensor, is_cls: torch.Tensor) -> np.ndarray:
    """Sigmoid on classification columns (probabilities); regression columns stay standardised."""
    return torch.where(is_cls, torch.sigmoid(out), out).numpy().astype(np.float32)


class NeuralPredictor:
    """Skeleton of a torch head: build -> (initialise from data) -> masked-loss training -> predict."""

    kind: ClassVar[str]
    params_cls: ClassVar[type] = NeuralParams
    uses_gate: ClassVar[bool] = False
    per_task: ClassVar[bool] = False

    def __init__(self, pre: FusionPreprocessor, task_types: list[str], params: Any) -> None:
        self.pre = pre
        self.task_types = list(task_types)
        self.params = params
        self.is_cls = torch.tensor([t == "classification" for t in task_types])
        self.net = self.build()

    def build(self) -> nn.Module:
        raise TypeError(f"{type(self).__name__} must define build()")

    def initialise(self, data: Prepared, train_idx: np.ndarray, seed: int) -> None:
        """Data-dependent initialisation before training (none by default)."""

    def forward(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return net(batch)

    def extra_loss(self, net: nn.Module, batch: Batch) -> torch.Tensor | None:
        return None

    def on_epoch_start(self, net: nn.Module, epoch: int) -> None:
        """Hook run before every epoch (none by default)."""

    @property
    def has_extra_loss(self) -> bool:
        return type(self).extra_loss is not NeuralPredictor.extra_loss

    def fit(
        self,
        data: Prepared,
        y: np.ndarray,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        seed: int,
        groups: np.ndarray | None = None,
    ) -> dict:
        torch.manual_seed(seed)
        self.net = self.build()
        self.groups = groups
        self.initialise(data, train_idx, seed)
        return self._train(data, y, train_idx, val_idx, self.params.loop(seed))

    def fine_tune(
        self,
        data: Prepared,
        y: np.ndarray,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        seed: int,
        lr: float,
    ) -> dict:
        """Continue training the fitted network on ``train_idx`` only (fresh optimiser, learning rate
        ``lr``, the same epochs / patience), keeping the starting weights unless an epoch beats their
        validation loss. Used after training on target + auxiliary rows (``grouping.evidence``)."""
        if self.per_task or self.has_extra_loss:
            raise ValueError(f"head {self.kind!r} does not support fine-tuning")
        cfg = dataclasses.replace(self.params.loop(seed), lr=lr, task_weights=None)
        return self._train(data, y, train_idx, val_idx, cfg, keep_start=True)

    def _train(
        self,
        data: Prepared,
        y: np.ndarray,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        cfg: LoopConfig,
        keep_start: bool = False,
    ) -> dict:
        arrays = net_inputs(data, self.uses_gate)
        train = {
            **rows(arrays, train_idx),
            **labels_to_tensors(y[train_idx]),
            "row": torch.as_tensor(train_idx, dtype=torch.long),
        }
        val = {**rows(arrays, val_idx), **labels_to_tensors(y[val_idx])}
        extra = self.extra_loss if self.has_extra_loss else None
        return fit_network(
            self.net,
            train,
            val,
            self.is_cls,
            cfg,
            forward=self.forward,
            extra_loss=extra,
            on_epoch_start=self.on_epoch_start,
            per_task=self.per_task,
            keep_start=keep_start,
        )

    def predict(self, data: Prepared) -> np.ndarray:
        batch = rows(net_inputs(data, self.uses_gate), np.arange(len(data)))
        return finish(predict_batched(self.net, batch, self.forward), self.is_cls)

    def config(self) -> dict:
        return {}

    def save(self, directory: Path) -> dict:
        save_file(
            {k: v.contiguous() for k, v in self.net.state_dict().items()}, str(directory / WEIGHTS_FILE)
        )
        return self.config()

    def load(self, directory: Path, config: dict) -> None:
        self.net.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        self.net.eval()
