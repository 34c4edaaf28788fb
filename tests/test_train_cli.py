"""``molfusion train`` / ``predict`` / ``heads`` end to end on real molecules with the tiny encoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from app.cli import cli
from models.featurizer import FEATURIZER_REVISION

ESOL_TARGET = "measured log solubility in mols per litre"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def bbbp_csv(data_dir: Path, tmp_path: Path) -> Path:
    frame = pd.read_csv(data_dir / "moleculenet" / "bbbp.csv").iloc[:160]
    frame.loc[5, "smiles"] = "C1CC(("  # unparsable: dropped from training, counted in the card
    path = tmp_path / "bbbp_small.csv"
    frame.to_csv(path, index=False)
    return path


def _run(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_train_then_predict_classification(tiny_env, bbbp_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "heads" / "bbbp"
    res = _run(
        [
            "train",
            str(bbbp_csv),
            "--targets",
            "p_np",
            "--seeds",
            "2",
            "--out",
            str(out),
            "--param",
            "epochs=8",
            "--param",
            "hidden=16",
        ]
    )
    assert res.exit_code == 0, res.output
    card = json.loads((out / "card.json").read_text())
    assert card["task_types"] == ["classification"]  # inferred: the column holds only 0/1
    assert card["tasks"] == ["p_np"] and card["name"] == "bbbp" and card["head"] == "mlp"
    assert card["fusion"] == "concat" and card["split"]["method"] == "scaffold"
    assert card["seeds"] == [0, 1] and card["selected_seed"] in (0, 1)
    assert card["training_data"]["sha256"] and card["training_data"]["n_invalid_smiles"] == 1
    assert card["training_data"]["n_used"] == 159
    assert set(card["encoder_versions"]) == {"smiles", "graph"}
    assert card["vector_versions"] == {  # the graph vectors' featurizer revision is on the card too
        "smiles": card["encoder_versions"]["smiles"],
        "graph": f"{card['encoder_versions']['graph']}.f{FEATURIZER_REVISION}",
    }
    for split in ("train", "val", "test"):
        per_seed = card["metrics"][split]["per_seed"]
        values = [p["mean"]["roc_auc"] for p in per_seed]
        assert card["metrics"][split]["mean"]["roc_auc"] == pytest.approx(np.mean(values))
        assert card["metrics"][split]["std"]["roc_auc"] == pytest.approx(np.std(values))
    val = {p["seed"]: p["mean"]["roc_auc"] for p in card["metrics"]["val"]["per_seed"]}
    assert card["selected_seed"] == max(val, key=val.get)
    assert card["hyperparameters"]["epochs"] == 8

    query = tmp_path / "query.csv"
    pd.DataFrame({"smiles": ["CCO", "C1CC((", "c1ccccc1O", "", "CC(=O)Oc1ccccc1C(=O)O"]}).to_csv(
        query, index=False
    )
    pred_path = tmp_path / "pred.csv"
    res = _run(["predict", str(query), "--head", str(out), "-o", str(pred_path), "--chunk-size", "2"])
    assert res.exit_code == 0, res.output
    pred = pd.read_csv(pred_path, keep_default_na=False)
    assert len(pred) == 5 and pred["smiles"].tolist()[0] == "CCO"
    assert list(pred.columns) == ["smiles", "canonical_smiles", "p_np", "error"]
    assert pred.loc[1, "p_np"] == "" and "unparsable" in pred.loc[1, "error"]
    assert pred.loc[3, "p_np"] == "" and pred.loc[3, "error"]
    ok = pred.loc[[0, 2, 4], "p_np"].astype(float)
    assert ((ok > 0) & (ok < 1)).all() and (pred.loc[[0, 2, 4], "error"] == "").all()

    # by name from the registry (MOLFUSION_HEADS_DIR = tmp_path / "heads")
    res = _run(["predict", str(query), "--head", "bbbp", "-o", str(tmp_path / "pred2.csv")])
    assert res.exit_code == 0, res.output
    # same head by name; chunking differs (padding of a batch), so equal up to float noise
    np.testing.assert_allclose(
        pd.read_csv(tmp_path / "pred2.csv")["p_np"], pd.read_csv(pred_path)["p_np"], atol=1e-4
    )
    res = _run(["heads"])
    assert res.exit_code == 0 and "bbbp: mlp/concat" in res.output


def test_heads_names_a_missing_heads_folder(tiny_env, tmp_path: Path) -> None:
    res = _run(["heads"])  # MOLFUSION_HEADS_DIR = tmp_path / "heads", never created here
    assert res.exit_code == 0 and "the folder does not exist: MOLFUSION_HEADS_DIR" in res.output
    (tmp_path / "heads").mkdir()
    res = _run(["heads"])
    assert res.output.startswith("no heads in") and "does not exist" not in res.output


def test_train_regression_with_xgb(tiny_env, data_dir: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(data_dir / "moleculenet" / "esol_delaney-processed.csv").iloc[:150]
    path = tmp_path / "esol.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "esol_head"
    res = _run(
        [
            "train",
            str(path),
            "--targets",
            ESOL_TARGET,
            "--head",
            "xgb",
            "--seeds",
            "1",
            "--units",
            "log10(mol/L)",
            "--out",
            str(out),
            "--param",
            "n_estimators=30",
        ]
    )
    assert res.exit_code == 0, res.output
    card = json.loads((out / "card.json").read_text())
    assert card["task_types"] == ["regression"] and card["units"] == ["log10(mol/L)"]
    assert card["metrics"]["test"]["mean"]["rmse"] > 0 and "mae" in card["metrics"]["test"]["mean"]
    assert (out / "xgb_task_0.ubj").exists()
    scaling = json.loads((out / "label_scaling.json").read_text())
    assert scaling["tasks"][ESOL_TARGET]["std"] > 0.5


def test_bad_input_exits_2_and_names_the_problem(tiny_env, bbbp_csv: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["train", str(bbbp_csv), "--targets", "nope", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "nope" in res.output
    res = CliRunner().invoke(
        cli,
        [
            "train",
            str(bbbp_csv),
            "--targets",
            "p_np",
            "--task",
            "classification",
            "--head",
            "xgb",
            "--fusion",
            "gated",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert res.exit_code == 2 and "gated" in res.output
    res = CliRunner().invoke(
        cli, ["predict", str(bbbp_csv), "--head", "no-such-head", "-o", str(tmp_path / "p.csv")]
    )
    assert res.exit_code == 2 and "no-such-head" in res.output
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"smiles": ["CCO"] * 20, "y": ["1.5"] * 19 + ["high"]}).to_csv(bad, index=False)
    res = CliRunner().invoke(cli, ["train", str(bad), "--targets", "y", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "'y'" in res.output and "row 21" in res.output


def test_commands_keep_their_inputs_and_check_sizes_and_params(tiny_env, bbbp_csv: Path, tmp_path) -> None:
    """Outputs never overwrite the input or a folder that is not a head; sizes and parameter types are
    checked before any work."""
    data = tmp_path / "proj" / "data.csv"
    data.parent.mkdir()
    data.write_bytes(bbbp_csv.read_bytes())
    (data.parent / "notes.txt").write_text("keep me")
    before = data.read_bytes()
    for args in (
        ["embed", str(data), "-o", str(data)],
        ["predict", str(data), "--head", "bbbp", "-o", str(data)],
        ["embed", str(data), "-o", str(tmp_path / "e.parquet"), "--chunk-size", "0"],
        ["embed", str(data), "-o", str(tmp_path / "e.parquet"), "--batch-size", "0"],
        ["train", str(data), "--targets", "p_np", "--out", str(data.parent)],  # not a head: refused
        ["train", str(data), "--targets", "p_np", "--out", str(tmp_path / "h"), "--param", "epochs=abc"],
    ):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2 and "Traceback" not in res.output, (args, res.output)
    assert data.read_bytes() == before and (data.parent / "notes.txt").exists()
    assert "epochs" in res.output and "int" in res.output


def test_blank_lines_are_rows_so_outputs_stay_aligned(tmp_path: Path) -> None:
    from models.tabular import count_rows, iter_chunks

    one_column = tmp_path / "one.csv"
    one_column.write_text("smiles\nCCO\n\nc1ccccc1O\nCCN\n")
    rows = pd.concat(iter_chunks(one_column, 2))["smiles"].tolist()
    assert rows == ["CCO", "", "c1ccccc1O", "CCN"] and count_rows(one_column) == len(rows)
