"""bench/grouping_eval.py: model seeds averaged per split, and result merging/reporting rules."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import grouping_eval  # noqa: E402

from grouping.evidence import fit_and_score  # noqa: E402
from grouping.features import SetFeatures  # noqa: E402

HPARAMS = {"epochs": 3, "patience": 2}


def _ring_smiles(i: int) -> str:
    """Distinct molecules, two per Bemis-Murcko scaffold (a ring of a + 2 atoms bonded to one of b + 2)."""
    a, b = i // 2 % 8 + 1, i // 16 + 1
    return f"C1{'C' * a}C1C1{'C' * b}C1" + "O" * (i % 2)


def _set(name: str, n: int, seed: int, smiles: list[str] | None = None) -> SetFeatures:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(np.float32)[:, None]
    fp = (rng.random((n, 1024)) < 0.05).astype(np.uint8)
    names = smiles or [f"{name}{i}" for i in range(n)]
    return SetFeatures(name, names, y, ["classification"], ["y"], x, fp, n, 8)


def test_model_seeds_average_the_metrics_of_each_seed() -> None:
    target, aux = _set("t", 120, 0), _set("a", 200, 1)
    train, val, test = np.arange(80), np.arange(80, 100), np.arange(100, 120)
    one = grouping_eval.fit_model_seeds(target, [aux], train, val, test, 5, 1, **HPARAMS)
    assert one == fit_and_score(target, [aux], train, val, test, seed=5, **HPARAMS)
    two = grouping_eval.fit_model_seeds(target, [aux], train, val, test, 5, 2, **HPARAMS)
    second_seed = 5 + grouping_eval.MODEL_SEED_STRIDE
    other = fit_and_score(target, [aux], train, val, test, seed=second_seed, **HPARAMS)
    for part in ("val", "test"):
        assert two[part]["roc_auc"] == pytest.approx((one[part]["roc_auc"] + other[part]["roc_auc"]) / 2)
    assert two["train_rows"] == one["train_rows"]


def test_mean_scored_skips_unscored_seeds() -> None:
    assert grouping_eval._mean_scored([0.5, None, 0.7]) == pytest.approx(0.6)
    assert grouping_eval._mean_scored([None, None]) is None


def _result(target: str, seeds: list[int], model_seeds: int = 1) -> dict:
    cols = ["none", "all", "structure", "structure_checked", "molgroup_prior1", "molgroup_prior1_checked"]
    per_seed = [
        {
            "seed": s,
            "route_seconds": 1.0,
            "groups": {c: ["x"] for c in cols},
            "val": {c: 0.7 + 0.01 * i for i, c in enumerate(cols)},
            "test": {c: 0.6 + 0.01 * i for i, c in enumerate(cols)},
        }
        for s in seeds
    ]
    return {
        "target": target,
        "metric": "roc_auc",
        "summary": grouping_eval.summarise_seeds(per_seed, cols, "roc_auc"),
        "seeds": per_seed,
        "near_duplicates_selected": [],
        "configs": cols,
        "model_seeds": model_seeds,
    }


def test_merge_refuses_results_of_different_model_seeds() -> None:
    merged = grouping_eval.merge_results([_result("bace", [0, 1], 3), _result("bace", [2], 3)])
    assert [s["seed"] for s in merged[0]["seeds"]] == [0, 1, 2]
    with pytest.raises(ValueError, match="model-seeds"):
        grouping_eval.merge_results([_result("bace", [0, 1], 3), _result("bace", [2], 1)])


def test_report_names_the_first_routed_configuration_without_molgroup() -> None:
    results = [_result("bace", [0, 1])]
    assert grouping_eval.first_routed(results) == "molgroup_prior1"
    table = grouping_eval.markdown(results, ["none", "molgroup_prior1"])
    assert "molgroup_prior1 group (per seed)" in table.splitlines()[0]
    assert "| x; x |" in table


def test_inner_split_partitions_the_training_rows_by_scaffold() -> None:
    smiles = ["c1ccccc1" + "C" * (i % 7) for i in range(60)] + ["C1CCCCC1" + "O" * (i % 5) for i in range(40)]
    train = np.arange(0, 100, 2)
    inner_train, inner_val = grouping_eval.inner_split(smiles, train, seed=0)
    assert sorted(np.concatenate([inner_train, inner_val]).tolist()) == train.tolist()
    assert not set(inner_train) & set(inner_val)
    assert len(inner_val) > 0


def test_inner_gains_train_on_the_training_rows_only() -> None:
    target, aux = _set("t", 120, 0, [_ring_smiles(i) for i in range(120)]), _set("a", 200, 1)
    train, val, test = np.arange(80), np.arange(80, 100), np.arange(100, 120)
    inner = grouping_eval.inner_split(target.smiles, train, seed=0)
    held_out = np.concatenate([val, test])
    seen: list[tuple[int, ...]] = []

    def fit(group, tr, va, rest):
        seen.append(tuple(sorted(set(tr) | set(va))))
        assert set(rest) == set(val) | set(test)
        return fit_and_score(target, group, tr, va, rest, seed=0, **HPARAMS)

    alone = fit([], *inner, held_out)["val"]["roc_auc"]
    groups = {"structure": [aux], "routed": [aux], "empty": []}
    gains = grouping_eval.inner_gains(target, groups, inner, held_out, alone, fit)
    assert len(seen) == 2  # target alone, then the shared group once
    assert all(rows == tuple(train) for rows in seen)
    assert gains["empty"] is None and gains["structure"] == gains["routed"] is not None
