"""``experts``: topology-specific experts mixed by a clustering gate over the graph view.

Model: :class:`fusion.nets.TopologyExperts`. Training loss (per minibatch ``B``)

    L = L_task + lambda_kl * KL(P_B || Q_B) + lambda_scaf * L_scaf

* ``Q`` are the Student-t soft assignments of the gate embeddings to ``K`` centroids, ``P`` DEC's
  sharpened target (Xie, Girshick & Farhadi, 2016), recomputed over all training rows at the start of
  every epoch and held fixed within it (self-training on the cluster structure);
* ``L_scaf = mean_i ||q_i - qbar_s(i)||^2`` over rows whose Bemis–Murcko scaffold occurs at least twice
  in the batch, ``qbar_s`` the batch mean assignment of scaffold ``s``: molecules sharing a scaffold are
  pulled to the same cluster (``groups`` = integer scaffold id per row; without it this term is 0).

Initialisation: the gate projection is the top-``cluster_dim`` PCA basis of the standardised training
graph vectors, and the centroids are k-means centres (k-means++, seeded) of the projected training rows.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn

from fusion.fusions import Prepared
from fusion.loop import Batch
from fusion.nets import TopologyExperts, sharpened_target
from fusion.predictors.base import NeuralParams, NeuralPredictor, input_block
from fusion.reduction import Reducer

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ExpertsParams(NeuralParams):
    hidden: int = 128
    layers: int = 1
    n_experts: int = 4
    cluster_dim: int = 32
    alpha: float = 1.0
    kl_weight: float = 0.1
    scaffold_weight: float = 0.1


class ExpertsPredictor(NeuralPredictor):
    kind = "experts"
    params_cls = ExpertsParams
    uses_gate = True

    def build(self) -> nn.Module:
        if "graph" not in self.pre.views:
            raise ValueError("the experts head needs the 'graph' view for its clustering gate")
        p = self.params
        return TopologyExperts(
            input_block(self.pre, p.gate_dim),
            self.pre.dims["graph"],
            p.cluster_dim,
            p.n_experts,
            p.hidden,
            p.layers,
            p.dropout,
            len(self.task_types),
            p.alpha,
        )

    def initialise(self, data: Prepared, train_idx: np.ndarray, seed: int) -> None:
        g = data.views["graph"][train_idx]
        red = Reducer.fit(g, self.params.cluster_dim, "pca", seed)
        k = red.out_dim
        net: TopologyExperts = self.net  # type: ignore[assignment]
        with torch.no_grad():
            net.embed.weight.zero_()
            net.embed.bias.zero_()
            net.embed.weight[:k] = torch.as_tensor(red.components.T)
            net.embed.bias[:k] = -torch.as_tensor(red.mean @ red.components)
            e = net.embed(torch.as_tensor(g)).numpy()
        n_clusters = min(self.params.n_experts, len(train_idx))
        km = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit(e)
        with torch.no_grad():
            net.centroids.copy_(
                torch.as_tensor(km.cluster_centers_, dtype=torch.float32)
                if n_clusters == self.params.n_experts
                else torch.as_tensor(e[np.arange(self.params.n_experts) % len(e)])
            )
        self.gate_train = torch.as_tensor(g)
        pos = np.full(int(train_idx.max()) + 1 if len(train_idx) else 0, -1, dtype=np.int64)
        pos[train_idx] = np.arange(len(train_idx))
        self.pos = torch.as_tensor(pos)
        self.target = torch.zeros(len(train_idx), self.params.n_experts)

    def on_epoch_start(self, net: nn.Module, epoch: int) -> None:
        with torch.no_grad():
            net.eval()
            self.target = sharpened_target(net.assignment({"gate": self.gate_train}))  # type: ignore[operator]

    def forward(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        out, q = net.forward_with_assignment(batch)  # type: ignore[operator]
        self._last_q = q
        return out

    def extra_loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        q = self._last_q.clamp_min(1e-8)
        p = self.target[self.pos[batch["row"]]]
        kl = (p * (p.clamp_min(1e-8).log() - q.log())).sum(dim=1).mean()
        loss = self.params.kl_weight * kl
        if self.groups is not None and self.params.scaffold_weight > 0:
            loss = loss + self.params.scaffold_weight * scaffold_alignment(
                q, torch.as_tensor(self.groups[batch["row"].numpy()])
            )
        return loss


def scaffold_alignment(q: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """``mean_i ||q_i - qbar_{s(i)}||^2`` over rows whose group occurs at least twice in the batch."""
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), q.shape[1]).index_add_(0, inverse, q)
    centre = sums / counts.unsqueeze(1)
    shared = counts[inverse] >= 2
    if not bool(shared.any()):
        return q.sum() * 0.0
    return (q[shared] - centre[inverse[shared]]).pow(2).sum(dim=1).mean()
