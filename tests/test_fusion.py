"""Fusion strategies, heads, artifacts and the registry, on real molecules and tiny random encoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fusion.head import load_head
from fusion.loop import masked_task_loss
from fusion.metrics import evaluate
from fusion.model import TrainedModel
from fusion.nets import TaskEnsemble
from fusion.predictors.experts import scaffold_alignment
from fusion.reduction import Reducer
from fusion.registry import HeadRegistry, UnknownHeadError
from fusion.splits import group_ids, random_split, scaffold_groups, scaffold_split
from fusion.training import fit_head

FAST = {"epochs": 12, "patience": 5, "hidden": 32}
TYPES = ["classification", "regression"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks train much faster on one thread than on oversubscribed cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bbbp_set(data_dir: Path, tiny_embedder) -> dict:
    """300 BBBP molecules: tiny-encoder views, the real p_np label, and a sparse regression task
    (heavy-atom count, 60% of labels removed) so each head sees mixed task types and missing labels."""
    from rdkit import Chem

    frame = pd.read_csv(data_dir / "moleculenet" / "bbbp.csv").iloc[:300]
    smiles = frame["smiles"].tolist()
    out = tiny_embedder.embed(smiles, views=("smiles", "graph"))
    assert out.valid.all()
    atoms = np.array([Chem.MolFromSmiles(s).GetNumHeavyAtoms() for s in smiles], dtype=np.float32)
    y = np.stack([frame["p_np"].to_numpy(dtype=np.float32), atoms], axis=1)
    rng = np.random.default_rng(0)
    y[rng.random(len(y)) < 0.6, 1] = np.nan
    train, val, test = scaffold_split(smiles, seed=0)
    return {
        "smiles": smiles,
        "views": out.vectors,
        "y": y,
        "split": (train, val, test),
        "groups": group_ids(smiles),
    }


def test_scaffold_split_is_deterministic_disjoint_and_sized(bbbp_smiles: list[str]) -> None:
    smiles = bbbp_smiles[:600]
    a = scaffold_split(smiles, seed=1)
    b = scaffold_split(smiles, seed=1)
    c = scaffold_split(smiles, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(len(smiles)))
    scaffolds = np.array(scaffold_groups(smiles), dtype=object)
    sets = [set(scaffolds[idx]) for idx in a]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert abs(len(a[0]) - 480) <= 1 and len(a[1]) <= 60
    r = random_split(100, seed=0)
    assert [len(p) for p in r] == [80, 10, 10]


HEAD_FUSIONS = [
    ("mlp", "concat"),
    ("mlp", "concat_reduce"),
    ("mlp", "gated"),
    ("xgb", "concat"),
    ("xgb", "concat_reduce"),
    ("experts", "concat"),
    ("experts", "gated"),
    ("fmt", "concat"),
    ("fmt", "concat_reduce"),
    ("single_task", "concat"),
]


@pytest.mark.parametrize(("head", "fusion"), HEAD_FUSIONS)
def test_head_trains_saves_loads_and_predicts_identically(
    bbbp_set: dict, tmp_path: Path, head: str, fusion: str
) -> None:
    train, val, test = bbbp_set["split"]
    hp = {"n_estimators": 40} if head == "xgb" else dict(FAST)
    if fusion == "concat_reduce":
        hp["n_components"] = 24
    if fusion == "concat_reduce" and head != "xgb":
        hp["reduction"] = "cur"
    model = fit_head(
        bbbp_set["views"],
        bbbp_set["y"],
        TYPES,
        train,
        val,
        head=head,
        fusion=fusion,
        seed=0,
        tasks=["p_np", "heavy_atoms"],
        groups=bbbp_set["groups"],
        **hp,
    )
    pred = model.predict(bbbp_set["views"])
    assert pred.shape == (300, 2) and np.isfinite(pred).all()
    assert ((pred[:, 0] >= 0) & (pred[:, 0] <= 1)).all()
    # regression output is un-standardised: in label units, near the heavy-atom scale
    assert 5 < np.nanmean(pred[:, 1]) < 60
    model.save(
        tmp_path / "h", card={"name": "bbbp-test", "encoder_versions": {"smiles": "s1", "graph": "g1"}}
    )
    files = {p.name for p in (tmp_path / "h").iterdir()}
    assert {"model.json", "card.json", "label_scaling.json", "fusion.safetensors"} <= files
    assert not any(f.endswith((".pkl", ".pickle", ".pt")) for f in files)
    loaded = load_head(tmp_path / "h")
    assert loaded.name == "bbbp-test" and loaded.tasks == ["p_np", "heavy_atoms"]
    assert loaded.task_types == TYPES and loaded.views == ("smiles", "graph")
    assert loaded.encoder_versions == {"smiles": "s1", "graph": "g1"}
    np.testing.assert_allclose(loaded.predict(bbbp_set["views"]), pred, rtol=1e-5, atol=1e-5)
    card = json.loads((tmp_path / "h" / "card.json").read_text())
    assert card["head"] == head and card["fusion"] == fusion and card["units"] == [None, None]


def test_mlp_learns_real_signal_in_both_task_types(bbbp_set: dict) -> None:
    train, val, test = bbbp_set["split"]
    y = bbbp_set["y"]
    model = fit_head(bbbp_set["views"], y, TYPES, train, val, head="mlp", seed=0, epochs=60, patience=15)
    pred = model.predict(bbbp_set["views"])
    metrics = evaluate(y[test], pred[test], TYPES, ["p_np", "heavy_atoms"])
    labelled = y[test, 1][~np.isnan(y[test, 1])]
    assert metrics["per_task"]["heavy_atoms"]["rmse"] < 0.6 * labelled.std()
    assert metrics["per_task"]["p_np"]["roc_auc"] > 0.6
    assert metrics["mean"].keys() == {"roc_auc", "rmse", "mae"}


def test_nan_input_rows_give_nan_predictions(bbbp_set: dict) -> None:
    train, val, _ = bbbp_set["split"]
    model = fit_head(bbbp_set["views"], bbbp_set["y"], TYPES, train, val, head="mlp", seed=0, **FAST)
    views = {k: v[:5].copy() for k, v in bbbp_set["views"].items()}
    views["graph"][2] = np.nan
    pred = model.predict(views)
    assert np.isnan(pred[2]).all() and np.isfinite(np.delete(pred, 2, axis=0)).all()
    np.testing.assert_allclose(
        np.delete(pred, 2, axis=0),
        np.delete(model.predict({k: v[:5] for k, v in bbbp_set["views"].items()}), 2, axis=0),
        rtol=1e-6,
    )


def test_masked_loss_ignores_missing_labels() -> None:
    out = torch.tensor([[0.3, 1.0], [-0.2, 2.0]])
    y = torch.tensor([[1.0, 5.0], [0.0, 123.0]])
    mask = torch.tensor([[True, True], [True, False]])
    is_cls = torch.tensor([True, False])
    y_changed = y.clone()
    y_changed[1, 1] = -999.0
    assert torch.equal(masked_task_loss(out, y, mask, is_cls), masked_task_loss(out, y_changed, mask, is_cls))
    per_task = masked_task_loss(out, y, mask, is_cls, per_task=True)
    assert per_task[1] == pytest.approx(16.0)


def test_task_weights_scale_each_task_share_of_the_loss() -> None:
    out = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.0, 0.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, True], [True, False]])
    is_cls = torch.tensor([True, False])
    plain = masked_task_loss(out, y, mask, is_cls)
    ones = masked_task_loss(out, y, mask, is_cls, weights=torch.ones(2))
    assert ones == pytest.approx(float(plain))
    bce0 = float(torch.nn.functional.binary_cross_entropy_with_logits(torch.zeros(()), torch.ones(())))
    # task 0: three BCE terms of log 2 (weight 1); task 1: squared errors 1 and 9 (weight 3)
    weighted = masked_task_loss(out, y, mask, is_cls, weights=torch.tensor([1.0, 3.0]))
    assert float(weighted) == pytest.approx((3 * bce0 + 3 * (1.0 + 9.0)) / (3 + 3 * 2))
    # zero weight removes a task entirely
    only0 = masked_task_loss(out, y, mask, is_cls, weights=torch.tensor([1.0, 0.0]))
    assert float(only0) == pytest.approx(bce0)


def test_fit_network_rejects_task_weights_of_the_wrong_length() -> None:
    from fusion.loop import LoopConfig, fit_network

    net = torch.nn.Linear(3, 2)
    data = {"x": torch.randn(6, 3), "y": torch.zeros(6, 2), "mask": torch.ones(6, 2, dtype=torch.bool)}
    cfg = LoopConfig(epochs=1, task_weights=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="task_weights must be 2"):
        fit_network(net, data, data, torch.tensor([True, True]), cfg, forward=lambda n, b: n(b["x"]))


def test_task_ensemble_tasks_are_independent() -> None:
    torch.manual_seed(0)
    net = TaskEnsemble(in_dim=6, hidden=4, n_tasks=3, dropout=0.0)
    out = net({"x": torch.randn(5, 6)})
    out[:, 1].sum().backward()
    assert net.w1.grad[1].abs().sum() > 0
    assert net.w1.grad[0].abs().sum() == 0 and net.w1.grad[2].abs().sum() == 0


def test_scaffold_alignment_is_zero_only_for_agreeing_groups() -> None:
    q = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8]])
    assert scaffold_alignment(q, torch.tensor([0, 0, 1])).item() == pytest.approx(0.0)
    assert scaffold_alignment(q, torch.tensor([0, 1, 1])).item() > 0.1


def test_reduction_pca_and_cur_fit_training_structure() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10)).astype(np.float32) * 0.01
    x[:, [2, 5, 7]] += rng.normal(size=(200, 3)).astype(np.float32) * 5
    cur = Reducer.fit(x, 3, "cur")
    assert cur.columns.tolist() == [2, 5, 7]
    pca = Reducer.fit(x, 3, "pca")
    z = pca.transform(x)
    assert z.shape == (200, 3)
    np.testing.assert_allclose(pca.components.T @ pca.components, np.eye(3), atol=1e-4)
    assert z.var(axis=0).sum() > 0.99 * (x - x.mean(0)).var(axis=0).sum()


def test_evaluate_known_values() -> None:
    y = np.array([[0, 1.0], [1, 2.0], [1, np.nan], [0, 4.0]])
    p = np.array([[0.1, 1.0], [0.8, 2.0], [0.7, 9.0], [0.3, 2.0]])
    m = evaluate(y, p, TYPES, ["a", "b"])
    assert m["per_task"]["a"]["roc_auc"] == 1.0
    assert m["per_task"]["b"]["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert m["per_task"]["b"]["mae"] == pytest.approx(2 / 3) and m["per_task"]["b"]["n"] == 3
    single = evaluate(np.array([[1.0], [1.0]]), np.array([[0.2], [0.9]]), ["classification"])
    assert single["per_task"]["task_0"]["roc_auc"] is None and single["mean"]["roc_auc"] is None


def test_invalid_inputs_are_rejected_with_clear_messages(bbbp_set: dict) -> None:
    train, val, _ = bbbp_set["split"]
    views, y = bbbp_set["views"], bbbp_set["y"]
    with pytest.raises(ValueError, match="gated"):
        fit_head(views, y, TYPES, train, val, head="xgb", fusion="gated")
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        fit_head(views, y, TYPES, train, val, head="mlp", hiddden=3)
    with pytest.raises(ValueError, match="other than 0/1"):
        fit_head(views, y, ["classification", "classification"], train, val)
    y_empty = y.copy()
    y_empty[train, 1] = np.nan
    with pytest.raises(ValueError, match="no labelled training rows"):
        fit_head(views, y_empty, TYPES, train, val, tasks=["p_np", "atoms"])
    with pytest.raises(ValueError, match="graph"):
        fit_head({"smiles": views["smiles"]}, y, TYPES, train, val, head="experts")


def test_single_view_heads(bbbp_set: dict) -> None:
    train, val, _ = bbbp_set["split"]
    model = fit_head({"graph": bbbp_set["views"]["graph"]}, bbbp_set["y"], TYPES, train, val, **FAST)
    assert model.views == ("graph",)
    assert model.predict(bbbp_set["views"]).shape == (300, 2)


def test_registry_lists_loads_caches_and_names_unknown_heads(bbbp_set: dict, tmp_path: Path) -> None:
    train, val, _ = bbbp_set["split"]
    model = fit_head(
        bbbp_set["views"], bbbp_set["y"], TYPES, train, val, seed=0, tasks=["p_np", "atoms"], **FAST
    )
    model.save(tmp_path / "bbbp", card={"name": "bbbp"})
    (tmp_path / "not-a-head").mkdir()
    registry = HeadRegistry(tmp_path)
    assert registry.names() == ["bbbp"]
    assert registry.card("bbbp")["tasks"] == ["p_np", "atoms"]
    head = registry.load("bbbp")
    assert registry.load("bbbp") is head
    with pytest.raises(UnknownHeadError, match="nope") as err:
        registry.load("nope")
    assert isinstance(err.value, KeyError) and err.value.available == ["bbbp"]
    with pytest.raises(UnknownHeadError):
        registry.card("../bbbp")
    assert TrainedModel.load(tmp_path / "bbbp").tasks == ["p_np", "atoms"]


def test_packaged_default_heads_load_and_predict() -> None:
    registry = HeadRegistry()
    names = registry.names()
    if not names:
        pytest.skip("no default heads packaged yet")
    for name in names:
        head = registry.load(name)
        card = registry.card(name)
        assert head.tasks == card["tasks"] and set(head.views) == {"smiles", "graph"}
        assert card["encoder_versions"] and card["training_data"]["sha256"]
        x = {v: np.zeros((2, head.model.preprocessor.dims[v]), dtype=np.float32) for v in head.views}
        x["graph"][1] = np.nan
        pred = head.predict(x)
        assert pred.shape == (2, len(head.tasks)) and np.isnan(pred[1]).all() and np.isfinite(pred[0]).all()


def test_dataset_specs_load_labels_units_and_deterministic_subsamples(data_dir: Path) -> None:
    from fusion.datasets import load_dataset

    esol = load_dataset("esol", data_dir)
    assert esol.tasks == ["measured log solubility in mols per litre"] and esol.units == ["log10(mol/L)"]
    assert esol.task_types == ["regression"] and len(esol.smiles) == 1128 and not np.isnan(esol.y).any()
    clintox = load_dataset("clintox", data_dir)
    assert clintox.tasks == ["FDA_APPROVED", "CT_TOX"] and clintox.task_types == ["classification"] * 2
    a = load_dataset("clintox", data_dir, max_rows=40)
    b = load_dataset("clintox", data_dir, max_rows=40)
    assert a.name == "clintox_sub40" and a.smiles == b.smiles and len(a.smiles) == 40
    assert a.n_usable == len(clintox.smiles)
