"""Minibatch training with a masked multi-task loss and early stopping on the validation loss.

Masked loss over observed labels only (``m_it = 1`` when molecule ``i`` has a label for task ``t``):

    L = sum_it m_it l_it / sum_it m_it,   l_it = BCEWithLogits(f_it, y_it)   (classification)
                                          l_it = (f_it - y_it)^2              (regression, standardised y)

so rows with missing labels still train the tasks they have. With task weights ``w_t``
(``LoopConfig.task_weights``) every label of task ``t`` counts ``w_t`` times:
``L = sum_it w_t m_it l_it / sum_it w_t m_it`` (e.g. to give an auxiliary data set a fixed share of the
loss whatever its label count). Optimiser: AdamW. After each epoch the
validation loss is computed; the weights of the best epoch are restored at the end (early stopping
with ``patience`` epochs). With ``per_task=True`` (independent single-task models sharing one tensor,
:class:`fusion.nets.TaskEnsemble`) the validation loss and the best-epoch snapshot are kept per task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


@dataclass
class LoopConfig:
    epochs: int = 100
    patience: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    task_weights: tuple[float, ...] | None = None  # per task column; None = every label counts the same


def masked_task_loss(
    out: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    is_cls: torch.Tensor,
    per_task: bool = False,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The masked loss above; ``per_task`` gives one mean per task column ``[T]`` (weights do not apply
    there: each task is its own mean); ``weights`` ``[T]`` are the task weights ``w_t``."""
    y0 = torch.where(mask, y, torch.zeros_like(y))
    bce = F.binary_cross_entropy_with_logits(out, y0, reduction="none")
    elem = torch.where(is_cls, bce, (out - y0).pow(2)) * mask
    if per_task:
        return elem.sum(0) / mask.sum(0).clamp(min=1)
    if weights is not None:
        return (elem * weights).sum() / (mask * weights).sum().clamp(min=1e-12)
    return elem.sum() / mask.sum().clamp(min=1)


def to_tensors(arrays: dict[str, np.ndarray]) -> Batch:
    return {k: torch.as_tensor(v) for k, v in arrays.items()}


def labels_to_tensors(y: np.ndarray) -> Batch:
    mask = ~np.isnan(y)
    return {
        "y": torch.as_tensor(np.nan_to_num(y, nan=0.0), dtype=torch.float32),
        "mask": torch.as_tensor(mask),
    }


@torch.no_grad()
def predict_batched(
    net: nn.Module, data: Batch, forward: Callable[[nn.Module, Batch], torch.Tensor], batch_size: int = 4096
) -> torch.Tensor:
    if net.training:  # eval() walks every submodule: skip it on the serving hot path
        net.eval()
    n = len(next(iter(data.values())))
    outs = [
        forward(net, {k: v[s : s + batch_size] for k, v in data.items()}) for s in range(0, n, batch_size)
    ]
    return torch.cat(outs) if outs else torch.zeros(0)


def fit_network(
    net: nn.Module,
    train: Batch,
    val: Batch,
    is_cls: torch.Tensor,
    cfg: LoopConfig,
    forward: Callable[[nn.Module, Batch], torch.Tensor] = lambda net, b: net(b),
    extra_loss: Callable[[nn.Module, Batch], torch.Tensor] | None = None,
    on_epoch_start: Callable[[nn.Module, int], None] | None = None,
    per_task: bool = False,
    keep_start: bool = False,
) -> dict:
    """Train ``net`` in place; returns ``{"epochs": run, "best_epoch": e, "best_val_loss": v}``.

    ``train``/``val`` hold the network inputs plus ``"y"`` and ``"mask"`` (and any extra per-row tensor,
    e.g. ``"row"`` indices that ``extra_loss`` uses). ``extra_loss(net, batch)`` is added to the task loss.
    ``keep_start`` (continuing from trained weights): the starting weights count as epoch 0, so if no
    epoch improves their validation loss they are what is restored (``best_epoch`` 0).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    weights = None
    if cfg.task_weights is not None:
        weights = torch.as_tensor(cfg.task_weights, dtype=torch.float32)
        if weights.shape != (int(is_cls.numel()),) or bool((weights < 0).any()) or not bool(weights.any()):
            raise ValueError(
                f"task_weights must be {int(is_cls.numel())} non-negative numbers, not all zero; "
                f"got {len(cfg.task_weights)}"
            )
    # fused: one kernel for all parameters instead of a loop of small ops per tensor (on the CPU the
    # optimiser step was ~40 % of a head's training time; 5.7 -> 1.3 ms per step for a 2056-512-512 MLP)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    n = len(train["y"])
    has_val = len(val["y"]) > 0 and bool(val["mask"].any())
    n_slots = int(is_cls.numel()) if per_task else 1
    best = torch.full((n_slots,), float("inf"))
    best_epoch = torch.zeros(n_slots, dtype=torch.long)
    snapshot = {k: v.detach().clone() for k, v in net.state_dict().items()}
    since_best, epoch = 0, 0
    if keep_start and has_val and not per_task:
        out_val = predict_batched(net, dict(val), forward)
        best[0] = masked_task_loss(out_val, val["y"], val["mask"], is_cls, False, weights)
    for epoch in range(1, cfg.epochs + 1):
        if on_epoch_start is not None:
            on_epoch_start(net, epoch)
        net.train()
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if len(idx) < 2 and n >= 2:  # a trailing 1-row batch is a noisy step: skip it
                continue
            batch = {k: v[idx] for k, v in train.items()}
            out = forward(net, batch)
            loss = masked_task_loss(out, batch["y"], batch["mask"], is_cls, per_task, weights)
            loss = loss.sum() if per_task else loss
            if extra_loss is not None:
                loss = loss + extra_loss(net, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if not has_val:
            continue
        out_val = predict_batched(net, {k: v for k, v in val.items()}, forward)
        val_loss = masked_task_loss(out_val, val["y"], val["mask"], is_cls, per_task, weights).reshape(-1)
        improved = val_loss < best - 1e-6
        if per_task:
            # tasks without validation labels keep their latest weights
            improved = improved & val["mask"].any(0)
        if bool(improved.any()):
            since_best = 0
            best = torch.where(improved, val_loss, best)
            best_epoch = torch.where(improved, torch.full_like(best_epoch, epoch), best_epoch)
            state = net.state_dict()
            for k, v in state.items():
                if per_task and v.dim() > 0 and v.shape[0] == n_slots:
                    snapshot[k][improved] = v.detach()[improved]
                elif not per_task:
                    snapshot[k] = v.detach().clone()
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
    if has_val:
        if per_task:
            no_val = ~val["mask"].any(0)
            for k, v in net.state_dict().items():
                if v.dim() > 0 and v.shape[0] == n_slots:
                    snapshot[k][no_val] = v.detach()[no_val]
        net.load_state_dict(snapshot)
    net.eval()
    info = {
        "epochs": epoch,
        "best_epoch": best_epoch.tolist() if per_task else int(best_epoch[0]),
        "best_val_loss": best.tolist() if per_task else float(best[0]),
    }
    log.debug("network trained", extra=info)
    return info
