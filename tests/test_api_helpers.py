"""Helpers (no tests here) for the API tests: small real heads trained on tiny-encoder embeddings of
real MoleculeNet molecules, settings for an app on the tiny encoders, and waiting for readiness."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.settings import Settings

# name, file, label column, task name, task type, units
HEAD_SPECS = (
    ("bbbp", "bbbp.csv", "p_np", "p_np", "classification", None),
    (
        "esol",
        "esol_delaney-processed.csv",
        "measured log solubility in mols per litre",
        "log_solubility",
        "regression",
        "log10(mol/L)",
    ),
)


def train_heads(embedder, data_dir: Path, root: Path, n: int = 240) -> dict[str, dict]:
    """Fit one small MLP head per spec (first ``n`` rows, 80/20 train/val) and save it under ``root``;
    plus a head ``stale`` whose card names other encoder versions (the service must skip it)."""
    from fusion.metrics import evaluate
    from fusion.training import fit_head

    cards = {}
    for name, file, column, task, kind, units in HEAD_SPECS:
        frame = pd.read_csv(data_dir / "moleculenet" / file).head(n)
        batch = embedder.embed(frame["smiles"].tolist(), views=("smiles", "graph"))
        ok = batch.valid
        views = {v: batch.vectors[v][ok] for v in ("smiles", "graph")}
        y = frame[column].to_numpy(dtype=np.float64)[ok].reshape(-1, 1)
        idx = np.arange(len(y))
        cut = int(0.8 * len(y))
        model = fit_head(
            views,
            y,
            [kind],
            idx[:cut],
            idx[cut:],
            head="mlp",
            seed=0,
            tasks=[task],
            hidden=32,
            layers=1,
            epochs=3,
            patience=2,
        )
        val_pred = model.predict({v: a[cut:] for v, a in views.items()})
        metrics = {"val": evaluate(y[cut:], val_pred, [kind], [task])}
        cards[name] = {
            "name": name,
            "units": [units],
            "encoder_versions": dict(embedder.versions),
            "metrics": metrics,
        }
        model.save(root / name, cards[name])
        if name == "esol":
            old = {"smiles": "old-1", "graph": "old-2"}
            model.save(root / "stale", {**cards[name], "name": "stale", "encoder_versions": old})
    return cards


_TRAINED: dict[str, Path] = {}


@pytest.fixture(scope="session", name="api_heads_dir")
def api_heads_fixture(tmp_path_factory, tiny_embedder, data_dir) -> Path:
    """Heads ``bbbp``, ``esol`` (served) and ``stale`` (skipped); trained once per session even though
    several modules import this fixture."""
    if "root" not in _TRAINED:
        root = tmp_path_factory.mktemp("heads")
        train_heads(tiny_embedder, data_dir, root)
        _TRAINED["root"] = root
    return _TRAINED["root"]


def make_settings(checkpoints: dict[str, Path], heads_dir: Path, **overrides) -> Settings:
    values = {
        "smiles_encoder_dir": checkpoints["smiles"],
        "graph_encoder_dir": checkpoints["graph"],
        "heads_dir": heads_dir,
        "device": "cpu",
        "redis_url": None,
        "api_key": None,
        "batch_size": 64,
    }
    values.update(overrides)
    return Settings(**values)


def wait_ready(client, timeout_s: float = 60.0, headers: dict | None = None) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/v1/health/ready", headers=headers or {})
        if response.status_code == 200:
            return response.json()
        if response.json().get("status") == "failed" or time.monotonic() > deadline:
            raise AssertionError(f"service never became ready: {response.json()}")
        time.sleep(0.05)
