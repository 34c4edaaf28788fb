"""``molfusion train`` / ``predict`` / ``heads`` on bad tables, bad options and damaged heads: exit 2 (or 1
for a damaged registry) with a line naming the problem, before any embedding where it can be known."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_api_helpers import api_heads_fixture  # noqa: F401
from typer.testing import CliRunner

from app.cli import cli


@pytest.fixture()
def table(data_dir: Path, tmp_path: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / "moleculenet" / "bbbp.csv").iloc[:120][["smiles", "p_np"]]


def _train(csv: Path, out: Path, *extra: str):
    args = ["train", str(csv), "--targets", "p_np", "--seeds", "1", "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _never_embed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("embedded before the input was checked")

    monkeypatch.setattr("fusion.training.embed_smiles", refuse)


def test_bad_tables_are_refused_before_embedding(
    tiny_env, table: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _never_embed(monkeypatch)
    csv = table.to_csv(index=False)
    lines = csv.splitlines()
    cases = {
        # (file text, extra options) -> words the message must hold
        "inf label": ("\n".join([*lines[:5], "CCO,inf", *lines[5:]]), (),
                      ["'p_np' row 6", "'inf'", "finite"]),
        "overflowing label": ("\n".join([*lines[:3], "CCO,1e400", *lines[3:]]), ("--task", "regression"),
                              ["row 4", "finite"]),
        "repeated header": (csv.replace("smiles,p_np", "smiles,p_np,p_np").replace("\n", ",0\n").replace(
            "smiles,p_np,p_np,0", "smiles,p_np,p_np"), (), ["['p_np'] occur more than once"]),
        "header only": ("smiles,p_np\n", (), ["no data rows"]),
        "one class": (table.assign(p_np=1).to_csv(index=False), (), ["'p_np' holds only 1", "need 0 and 1"]),
        "bad epochs": (csv, ("--param", "epochs=0"), ["'epochs'", ">= 1"]),
        "bad hidden": (csv, ("--param", "hidden=-5"), ["'hidden'", ">= 1"]),
        "bad trees": (csv, ("--head", "xgb", "--param", "n_estimators=0"), ["'n_estimators'", ">= 1"]),
        "bad components": (csv, ("--fusion", "concat_reduce", "--param", "n_components=0"),
                           ["'n_components' of fusion 'concat_reduce'", ">= 1"]),
        "infinite lr": (csv, ("--param", "lr=Infinity"), ["'lr'", "finite number"]),
        "overflowing weight decay": (csv, ("--param", "weight_decay=1e400"), ["'weight_decay'", "finite"]),
        "bad reduction": (csv, ("--head", "fmt", "--param", "reduction=foo"),
                          ["'reduction'", "'pca' or 'cur'"]),
        "fusion option elsewhere": (csv, ("--param", "n_components=8"),
                                    ["unknown hyper-parameter(s) ['n_components']"]),
    }
    for case, (text, extra, words) in cases.items():
        res = _train(_write(tmp_path, "t.csv", text), tmp_path / "out", *extra)
        assert res.exit_code == 2, (case, res.output)
        for word in words:
            assert word in res.output, (case, word, res.output)
        assert "Traceback" not in res.output, case
    assert not (tmp_path / "out").exists()  # a refused run leaves nothing behind
    res = _train(tmp_path, tmp_path / "o")  # a folder as the input
    assert res.exit_code == 2 and "is a directory, not a CSV file" in res.output
    twice = ["--targets", "p_np,p_np", "--out", str(tmp_path / "o")]
    args = ["train", str(_write(tmp_path, "t.csv", csv)), *twice]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2 and "['p_np'] named more than once" in res.output


def test_out_problems_are_refused_before_embedding(
    tiny_env, table: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _never_embed(monkeypatch)
    csv = _write(tmp_path, "t.csv", table.to_csv(index=False))
    a_file = _write(tmp_path, "afile.txt", "not a head")
    res = _train(csv, a_file)
    assert res.exit_code == 2 and "--out" in res.output and "is a file" in res.output
    res = _train(csv, a_file / "head")
    assert res.exit_code == 2 and "--out" in res.output and "cannot create its folder" in res.output
    assert a_file.read_text() == "not a head"
    bad = _write(tmp_path, "bad.csv", "smiles,p_np\nCCO,high\n")
    res = _train(bad, tmp_path / "new" / "sub" / "head")
    assert res.exit_code == 2 and not (tmp_path / "new").exists()  # no folders made for a refused run


def test_nan_cells_are_missing_labels_and_empty_units_are_kept(
    tiny_env, data_dir: Path, tmp_path: Path
) -> None:
    frame = pd.read_csv(data_dir / "moleculenet" / "bbbp.csv").iloc[:120][["smiles", "p_np"]]
    frame["logp"] = [f"{0.1 * i:.1f}" for i in range(len(frame))]
    frame.loc[3, "logp"] = "NaN"  # a missing label, as an empty cell is
    frame["logd"] = frame["logp"]
    csv = _write(tmp_path, "t.csv", frame.to_csv(index=False))
    out = tmp_path / "heads" / "mixed"
    res = CliRunner().invoke(
        cli,
        ["train", str(csv), "--targets", "logp,p_np,logd", "--units", "log,,log", "--seeds", "1",
         "--param", "epochs=2", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    card = json.loads((out / "card.json").read_text())
    assert card["units"] == ["log", None, "log"] and card["task_types"][1] == "classification"


def test_empty_header_cells_are_no_repeated_names(tiny_env, table: pd.DataFrame, tmp_path: Path) -> None:
    """Excel writes trailing commas: ``smiles,p_np,,`` trains (a98f1ac refused it as a repeated name)."""
    text = "\n".join(line + ",," for line in table.to_csv(index=False).splitlines())
    res = _train(_write(tmp_path, "excel.csv", text), tmp_path / "excel", "--param", "epochs=2")
    assert res.exit_code == 0, res.output


def test_fmt_takes_its_own_reduction(tiny_env, table: pd.DataFrame, tmp_path: Path) -> None:
    """``reduction`` of an fmt head on ``concat`` reaches the head (it was taken as a fusion option and
    dropped, while the card recorded it)."""
    csv = _write(tmp_path, "t.csv", table.to_csv(index=False))
    out = tmp_path / "fmt"
    res = _train(csv, out, "--head", "fmt", "--param", "reduction=cur", "--param", "epochs=2")
    assert res.exit_code == 0, res.output
    model = json.loads((out / "model.json").read_text())
    assert model["hyperparameters"]["reduction"] == "cur" and model["predictor"]["reduction"] == "cur"


def test_damaged_heads_are_named_not_tracebacks(
    tiny_env, table: pd.DataFrame, tmp_path: Path
) -> None:
    heads = tmp_path / "heads"  # MOLFUSION_HEADS_DIR of tiny_env
    csv = _write(tmp_path, "t.csv", table.to_csv(index=False))
    assert _train(csv, heads / "good", "--param", "epochs=2").exit_code == 0
    for name, damage in {
        "badjson": lambda d: (d / "card.json").write_text("{oops"),
        "cardlist": lambda d: (d / "card.json").write_text("[1, 2]"),
        "noweights": lambda d: (d / "weights.safetensors").unlink(),
        "badmodel": lambda d: (d / "model.json").write_text("{}"),
    }.items():
        shutil.copytree(heads / "good", heads / name)
        damage(heads / name)
    res = CliRunner().invoke(cli, ["heads"])
    assert res.exit_code == 1, res.output  # listed, with the damaged ones named
    assert "good: mlp/concat" in res.output and "badjson: unreadable card" in res.output
    assert "cardlist: unreadable card" in res.output and "Traceback" not in res.output
    assert "noweights: damaged head" in res.output and "badmodel: damaged head" in res.output
    query = _write(tmp_path, "q.csv", "smiles\nCCO\n")
    for name in ("badjson", "noweights", "badmodel"):
        args = ["predict", str(query), "--head", str(heads / name), "-o", str(tmp_path / "p.csv")]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2 and "cannot load head" in res.output, (name, res.output)


def test_service_skips_a_head_whose_card_fields_have_the_wrong_type(
    tiny_checkpoints, api_heads_dir: Path, tmp_path: Path
) -> None:
    """A card with ``"metrics": "n/a"`` made every GET /v1/properties a 500; now that head is skipped."""
    from fastapi.testclient import TestClient
    from test_api_helpers import make_settings, wait_ready

    from app.api.main import create_app

    heads = tmp_path / "heads"
    shutil.copytree(api_heads_dir / "bbbp", heads / "bbbp")
    shutil.copytree(api_heads_dir / "bbbp", heads / "odd")
    card = json.loads((heads / "odd" / "card.json").read_text())
    (heads / "odd" / "card.json").write_text(json.dumps({**card, "metrics": "n/a"}))
    with TestClient(create_app(make_settings(tiny_checkpoints, heads))) as client:
        wait_ready(client)
        listed = client.get("/v1/properties")
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert [p["name"] for p in body["properties"]] == ["bbbp"]
        assert "card does not describe the head" in body["skipped"]["odd"]
        assert client.post("/v1/predict", json={"smiles": ["CCO"]}).status_code == 200
