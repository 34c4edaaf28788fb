"""Neural building blocks of the heads (PyTorch). Each module states its formula.

Inputs of every network are a dict of float tensors: ``"x"`` (the fused vector for ``concat*``
fusions) or one ``"view:<name>"`` entry per standardised view (``gated``), plus ``"gate"`` (the
standardised graph view) for the experts' clustering gate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def view_key(view: str) -> str:
    return f"view:{view}"


class GatedFusion(nn.Module):
    """Learned per-dimension gating between views.

    Each view is projected to a common width ``d``: ``p_v = W_v z_v + b_v``. Gate logits come from all
    projections, ``a = U [p_1; ...; p_V] + c`` reshaped to ``[V, d]``, and weights are a softmax over
    views per dimension, ``g_v = softmax_v(a)_v``; the fused vector is ``sum_v g_v * p_v`` (for two views
    this is ``g * p_1 + (1 - g) * p_2`` with ``g = sigmoid(a_1 - a_2)``).
    """

    def __init__(self, views: list[str], dims: list[int], out_dim: int) -> None:
        super().__init__()
        self.views = list(views)
        self.proj = nn.ModuleList(nn.Linear(d, out_dim) for d in dims)
        self.gate = nn.Linear(out_dim * len(dims), out_dim * len(dims))
        self.out_dim = out_dim

    def weights(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.stack(
            [proj(inputs[view_key(v)]) for proj, v in zip(self.proj, self.views, strict=True)], dim=1
        )
        a = self.gate(p.flatten(1)).view(p.shape)
        return torch.softmax(a, dim=1), p

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        g, p = self.weights(inputs)
        return (g * p).sum(dim=1)


class FusedInput(nn.Module):
    """The network input: the precomputed fused vector, or the learned :class:`GatedFusion`."""

    def __init__(self, fused_dim: int | None, views: list[str], dims: list[int], gate_dim: int) -> None:
        super().__init__()
        self.gated = GatedFusion(views, dims, gate_dim) if fused_dim is None else None
        self.out_dim = gate_dim if fused_dim is None else fused_dim

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs["x"] if self.gated is None else self.gated(inputs)


def mlp_trunk(in_dim: int, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    """``layers`` blocks of ``Dropout -> Linear -> ReLU``; output width ``hidden``."""
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        blocks += [nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*blocks)


class MultiTaskMLP(nn.Module):
    """``f(x) = W_o h(x) + b_o`` with ``h`` an MLP trunk; one output (logit or scaled value) per task."""

    def __init__(
        self, input_block: FusedInput, hidden: int, layers: int, dropout: float, n_tasks: int
    ) -> None:
        super().__init__()
        self.input = input_block
        self.trunk = mlp_trunk(input_block.out_dim, hidden, layers, dropout)
        self.out = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden if layers else input_block.out_dim, n_tasks)
        )

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.out(self.trunk(self.input(inputs)))


class TaskEnsemble(nn.Module):
    """``T`` independent single-task MLPs evaluated in one batched pass.

    Task ``t``: ``h_t = ReLU(W1_t x + b1_t)``, ``f_t = w2_t . h_t + b2_t``. Every parameter has the task
    as its leading axis and the loss is a sum of per-task terms, so gradients (and Adam's per-element
    statistics) of one task never touch another's: this is exactly ``T`` separate models.
    """

    def __init__(self, in_dim: int, hidden: int, n_tasks: int, dropout: float) -> None:
        super().__init__()
        bound1, bound2 = in_dim**-0.5, hidden**-0.5
        self.w1 = nn.Parameter(torch.empty(n_tasks, in_dim, hidden).uniform_(-bound1, bound1))
        self.b1 = nn.Parameter(torch.empty(n_tasks, hidden).uniform_(-bound1, bound1))
        self.w2 = nn.Parameter(torch.empty(n_tasks, hidden).uniform_(-bound2, bound2))
        self.b2 = nn.Parameter(torch.empty(n_tasks).uniform_(-bound2, bound2))
        self.dropout = nn.Dropout(dropout)

    def hidden(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden representations ``[B, T, H]``."""
        x = self.dropout(inputs["x"])
        return F.relu(torch.einsum("bd,tdh->bth", x, self.w1) + self.b1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return (self.dropout(self.hidden(inputs)) * self.w2).sum(-1) + self.b2


def student_t_assignment(z: torch.Tensor, centroids: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Soft assignment ``q_ik ∝ (1 + ||z_i - mu_k||^2 / alpha)^(-(alpha+1)/2)`` (Xie et al., 2016, DEC)."""
    d2 = torch.cdist(z, centroids).pow(2)
    q = (1.0 + d2 / alpha).pow(-(alpha + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def sharpened_target(q: torch.Tensor) -> torch.Tensor:
    """DEC's target ``p_ik = (q_ik^2 / f_k) / sum_k' (q_ik'^2 / f_k')`` with ``f_k = sum_i q_ik``."""
    w = q.pow(2) / q.sum(dim=0, keepdim=True)
    return w / w.sum(dim=1, keepdim=True)


class TopologyExperts(nn.Module):
    """``K`` expert MLPs on the fused input, mixed by a clustering gate over the graph view.

    Gate: ``e_i = A g_i + a`` (projection of the standardised graph view, initialised with its PCA
    basis), ``q_i = StudentT(e_i; mu_1..mu_K)`` with centroids initialised by k-means on ``e``.
    Output: ``f(x_i) = sum_k q_ik f_k(x_i)`` (assignment-weighted sum of the experts' outputs, logits
    for classification tasks).
    """

    def __init__(
        self,
        input_block: FusedInput,
        gate_in: int,
        gate_dim: int,
        n_experts: int,
        hidden: int,
        layers: int,
        dropout: float,
        n_tasks: int,
        alpha: float = 1.0,
    ) -> None:
        super().__init__()
        self.input = input_block
        self.embed = nn.Linear(gate_in, gate_dim)
        self.centroids = nn.Parameter(torch.zeros(n_experts, gate_dim))
        self.alpha = alpha
        self.experts = nn.ModuleList(
            nn.Sequential(
                mlp_trunk(input_block.out_dim, hidden, layers, dropout),
                nn.Dropout(dropout),
                nn.Linear(hidden if layers else input_block.out_dim, n_tasks),
            )
            for _ in range(n_experts)
        )

    def assignment(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return student_t_assignment(self.embed(inputs["gate"]), self.centroids, self.alpha)

    def forward_with_assignment(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.input(inputs)
        q = self.assignment(inputs)
        outs = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, K, T]
        return (q.unsqueeze(-1) * outs).sum(dim=1), q

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward_with_assignment(inputs)[0]
