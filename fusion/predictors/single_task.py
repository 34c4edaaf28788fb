"""``single_task``: one independent one-hidden-layer MLP per task (the single-task baseline).

All ``T`` models live in one :class:`fusion.nets.TaskEnsemble` and are trained in one loop; each task
sees only its own labelled rows, and early stopping / best-epoch restoration is per task.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from fusion.fusions import Prepared
from fusion.loop import predict_batched
from fusion.nets import TaskEnsemble
from fusion.predictors.base import NeuralParams, NeuralPredictor, net_inputs, rows


@dataclasses.dataclass
class SingleTaskParams(NeuralParams):
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.1


class SingleTaskPredictor(NeuralPredictor):
    kind = "single_task"
    params_cls = SingleTaskParams
    per_task = True

    def build(self) -> nn.Module:
        if self.pre.fused_dim is None:
            raise ValueError(f"head {self.kind!r} needs fusion 'concat' or 'concat_reduce', not 'gated'")
        p = self.params
        return TaskEnsemble(self.pre.fused_dim, p.hidden, len(self.task_types), p.dropout)

    def hidden(self, data: Prepared) -> np.ndarray:
        """Each task model's hidden representation, concatenated: ``[N, T * hidden]``."""
        batch = rows(net_inputs(data), np.arange(len(data)))
        net: TaskEnsemble = self.net  # type: ignore[assignment]
        with torch.no_grad():
            h = predict_batched(net, batch, lambda m, b: m.hidden(b))  # type: ignore[operator]
        return h.reshape(len(data), -1).numpy()
