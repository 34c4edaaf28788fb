"""Fine-tuning a fitted head on a subset of rows (``fusion.training.fine_tune_head``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.training import fine_tune_head, fit_head


def _views_and_labels(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rows 0-99: the task is sign(x·w); rows 100-299: an auxiliary task with the opposite rule, so
    joint training pulls the shared trunk away from what the first task needs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    w = rng.normal(size=12)
    y = np.full((300, 2), np.nan, dtype=np.float32)
    y[:100, 0] = x[:100] @ w > 0
    y[100:, 1] = x[100:] @ w < 0
    return {"smiles": x[:, :6], "graph": x[:, 6:]}, y


def _val_loss(model, views, y, rows) -> float:
    p = np.clip(model.predict({k: v[rows] for k, v in views.items()})[:, 0], 1e-6, 1 - 1e-6)
    t = y[rows, 0]
    return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())


def test_fine_tune_continues_on_the_given_rows_and_never_ends_worse_on_validation() -> None:
    views, y = _views_and_labels()
    train, val = np.arange(0, 70), np.arange(70, 100)
    aux = np.arange(100, 300)
    model = fit_head(
        views, y, ["classification"] * 2, np.concatenate([train, aux]), val, epochs=3, patience=3
    )
    before = _val_loss(model, views, y, val)
    weights = {k: v.clone() for k, v in model.predictor.net.state_dict().items()}
    info = fine_tune_head(model, views, y, train, val, seed=0, lr=3e-3)
    after = _val_loss(model, views, y, val)
    assert info["best_epoch"] >= 1  # the target's own rows did improve on the joint weights here
    assert after < before
    changed = any(
        not torch.equal(weights[k], v) for k, v in model.predictor.net.state_dict().items()
    )
    assert changed


def test_fine_tune_keeps_the_starting_weights_when_no_epoch_beats_them() -> None:
    views, y = _views_and_labels(1)
    train, val = np.arange(0, 70), np.arange(70, 100)
    model = fit_head(views, y, ["classification"] * 2, np.r_[0:70, 100:300], val, epochs=2)
    weights = {k: v.clone() for k, v in model.predictor.net.state_dict().items()}
    info = fine_tune_head(model, views, y, train, val, seed=0, lr=0.0)  # lr 0: nothing can improve
    assert info["best_epoch"] == 0
    for k, v in model.predictor.net.state_dict().items():
        assert torch.equal(weights[k], v), k


def test_fine_tune_rejects_heads_it_cannot_continue() -> None:
    views, y = _views_and_labels(2)
    train, val = np.arange(0, 70), np.arange(70, 100)
    model = fit_head(views, y[:, :1], ["classification"], train, val, head="single_task", epochs=1)
    with pytest.raises(ValueError, match="fine-tun"):
        fine_tune_head(model, views, y[:, :1], train, val)
    with pytest.raises(ValueError, match="label columns"):
        fine_tune_head(model, views, y, train, val)
