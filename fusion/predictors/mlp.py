"""``mlp``: one multi-task MLP on the fused vector, trained with the masked loss (:mod:`fusion.loop`)."""

from __future__ import annotations

from torch import nn

from fusion.nets import MultiTaskMLP
from fusion.predictors.base import NeuralParams, NeuralPredictor, input_block


class MLPPredictor(NeuralPredictor):
    kind = "mlp"
    params_cls = NeuralParams

    def build(self) -> nn.Module:
        p = self.params
        return MultiTaskMLP(
            input_block(self.pre, p.gate_dim), p.hidden, p.layers, p.dropout, len(self.task_types)
        )
