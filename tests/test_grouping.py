"""Catalog, target validation, grouping methods and the recommend command (tiny encoders, real data)."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grouping.catalog import (
    CatalogError,
    check_catalog,
    load_catalog,
    load_dataset,
    parse_entry,
    register_dataset,
)
from grouping.evidence import fit_and_score, relative_improvement, stack
from grouping.features import SetFeatures, load_catalog_features
from grouping.methods import METHODS, score_candidates
from grouping.recommend import RecommendOptions, recommend
from grouping.routing import CandidateScore, MolGroupConfig, combine_runs, route
from grouping.similarity import nearest_neighbour_tanimoto, similarity_prior
from grouping.target import TargetError, parse_target, read_csv_bytes

SMALL_SETS = ("bace", "esol", "tox21")
FAST_ROUTING = MolGroupConfig(
    steps_per_epoch=4, epochs_per_round=2, rounds=2, batch_size=32, score_sample=64
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The routing nets are tiny: one intra-op thread is fastest and avoids oversubscribing CI's 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- catalog


def test_shipped_catalog_lists_every_labelled_set_and_files_exist(data_dir: Path) -> None:
    entries = load_catalog(extra=None)
    names = [e.name for e in entries]
    assert len(names) == len(set(names)) == 19
    manifest = pd.read_csv(data_dir / "MANIFEST.tsv", sep="\t")
    labelled = manifest[manifest["n_labels"] > 0]["file"].tolist()
    assert sorted(e.file for e in entries) == sorted(labelled)
    rows = check_catalog(entries, data_dir)
    assert [r["status"] for r in rows] == ["ok"] * 19
    tasks = {r["dataset"]: r["tasks"] for r in rows}
    assert tasks["toxcast"] == 617 and tasks["sider"] == 27 and tasks["muv"] == 17 and tasks["qm9"] == 12


def test_catalog_check_reads_a_file_again_only_when_it_changed(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import grouping.catalog as catalog

    base = pd.read_csv(data_dir / "moleculenet" / "bbbp.csv").head(80)[["smiles", "p_np"]]
    file = tmp_path / "mine.csv"
    base.to_csv(file, index=False)
    entry = parse_entry(
        {"name": "mine", "file": str(file), "smiles_column": "smiles", "label_columns": ["p_np"],
         "task_type": "classification"},
        source="user",
    )
    reads = []
    real = catalog.load_dataset
    monkeypatch.setattr(catalog, "load_dataset", lambda *a, **k: reads.append(1) or real(*a, **k))
    first = check_catalog([entry], data_dir)
    assert check_catalog([entry], data_dir) == first and len(reads) == 1  # unchanged: not read again
    assert first[0]["labelled_rows"] == 80
    pd.concat([base, base.head(5)]).to_csv(file, index=False)  # grows: read again
    assert check_catalog([entry], data_dir)[0]["labelled_rows"] == 85 and len(reads) == 2
    file.write_text("smiles,p_np\n" + "CCO,2\n" * 60)  # same entry, a broken file
    stat = file.stat()
    assert check_catalog([entry], data_dir)[0]["status"] == "error" and len(reads) == 3
    pd.concat([base, base.head(5)]).to_csv(file, index=False)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old modification time
    assert check_catalog([entry], data_dir)[0]["status"] == "ok" and len(reads) == 4


def test_row_filter_and_subsample_are_applied(data_dir: Path) -> None:
    ppbr = next(e for e in load_catalog() if e.name == "ppbr")
    full = load_dataset(ppbr, data_dir)
    assert full.total_rows == len(full.smiles) == 1614  # Homo sapiens rows only (MANIFEST)
    sub = load_dataset(ppbr, data_dir, max_rows=100, seed=3)
    again = load_dataset(ppbr, data_dir, max_rows=100, seed=3)
    assert len(sub.smiles) == 100 and sub.smiles == again.smiles and sub.total_rows == 1614
    tox21 = load_dataset(next(e for e in load_catalog() if e.name == "tox21"), data_dir)
    assert tox21.labels.shape[1] == 12 and np.isnan(tox21.labels).any()  # missing labels stay NaN


def test_head_data_sets_are_the_catalog_entries_with_their_units() -> None:
    """fusion.datasets describes no set of its own: every head set is the shipped catalog's entry."""
    from fusion.datasets import HEAD_SETS, SPECS

    shipped = {e.name: e for e in load_catalog(extra=None)}
    assert set(SPECS) == set(HEAD_SETS) and all(SPECS[n] == shipped[n] for n in SPECS)
    assert SPECS["esol"].unit_of("measured log solubility in mols per litre") == "log10(mol/L)"
    assert SPECS["qm9"].unit_of("homo") == "Ha" and SPECS["qm9"].unit_of("cv") == "cal/(mol K)"
    assert SPECS["bbbp"].unit_of("p_np") is None
    with pytest.raises(CatalogError, match="units must be"):
        parse_entry({"name": "x", "file": "a", "smiles_column": "s", "task_type": "regression", "units": 3})


def test_catalog_entry_errors_name_the_field(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(CatalogError, match="lacks field 'smiles_column'"):
        parse_entry({"name": "x", "file": "a.csv", "task_type": "regression"})
    with pytest.raises(CatalogError, match="task_type 'binary'"):
        parse_entry({"name": "x", "file": "a.csv", "smiles_column": "s", "task_type": "binary"})
    with pytest.raises(CatalogError, match="lower-case"):
        parse_entry({"name": "Bad Name", "file": "a.csv", "smiles_column": "s", "task_type": "regression"})
    extra = tmp_path / "extra.json"
    entry = parse_entry(
        {
            "name": "mine",
            "file": str(data_dir / "moleculenet" / "bbbp.csv"),
            "smiles_column": "smiles",
            "label_columns": ["p_np"],
            "task_type": "classification",
        },
        source="user",
    )
    register_dataset(extra, entry, data_dir)
    assert [e.name for e in load_catalog(extra) if e.source == "user"] == ["mine"]
    with pytest.raises(CatalogError, match="already in the catalog"):
        register_dataset(extra, entry, data_dir)
    clash = parse_entry(
        {"name": "bbbp", "file": "x.csv", "smiles_column": "s", "task_type": "regression"}, "user"
    )
    with pytest.raises(CatalogError, match="already in the catalog"):
        register_dataset(extra, clash, data_dir)
    wrong = parse_entry(
        {
            "name": "wrong",
            "file": str(data_dir / "moleculenet" / "bbbp.csv"),
            "smiles_column": "smiles",
            "label_columns": ["nope"],
            "task_type": "regression",
        },
        "user",
    )
    with pytest.raises(CatalogError, match=r"columns \['nope'\] not in bbbp.csv"):
        register_dataset(extra, wrong, data_dir)



def test_registration_refuses_sets_a_recommendation_could_not_use(tmp_path: Path, data_dir: Path) -> None:
    """Labels must be numbers (0/1 for classification), enough rows must hold a valid SMILES, and a row
    filter must keep rows; a set that passed once but whose file changed later is skipped, not fatal."""
    extra = tmp_path / "user.json"
    base = pd.read_csv(data_dir / "moleculenet" / "bbbp.csv").head(80)[["smiles", "p_np"]]

    def entry(name: str, frame: pd.DataFrame, **kw) -> object:
        path = tmp_path / f"{name}.csv"
        frame.to_csv(path, index=False)
        raw = {"name": name, "file": str(path), "smiles_column": "smiles", "label_columns": ["p_np"]}
        return parse_entry({**raw, "task_type": "classification", **kw}, "user")

    cases = {
        "text labels": (entry("text", base.assign(p_np="active")), "no row with a SMILES and a numeric"),
        "bad smiles": (entry("bad", base.assign(smiles="C1CC")), "only 0 of 80"),
        "few rows": (entry("few", base.head(20)), "only 20 of 20"),
        "not binary": (entry("nb", base.assign(p_np=2.5)), "must be 0/1; found 2.5"),
        "empty filter": (
            entry("flt", base.assign(kind="a"), row_filter={"column": "kind", "equals": "b"}),
            "no row with a SMILES",
        ),
    }
    for case, (bad, message) in cases.items():
        with pytest.raises(CatalogError, match=message):
            register_dataset(extra, bad, data_dir)
        assert not extra.exists(), case  # nothing was registered
    with pytest.raises(CatalogError, match="cannot be a label"):
        register_dataset(extra, entry("s", base, label_columns=["smiles"], task_type="regression"), data_dir)
    good = entry("good", base)
    register_dataset(extra, good, data_dir)
    (tmp_path / "good.csv").write_text("smiles,renamed\nCCO,1\n")  # the file changes after registration
    skipped: dict[str, str] = {}
    feats = load_catalog_features(load_catalog(extra)[-1:], data_dir, None, None, None, skipped=skipped)
    assert feats == {} and "columns ['p_np'] not in good.csv" in skipped["good"]
    rows = {r["dataset"]: r for r in check_catalog(load_catalog(extra)[-1:], data_dir)}
    assert rows["good"]["status"] == "error"  # the listing reads the file, as a recommendation would
    extra.write_text("[1, 2]")
    with pytest.raises(CatalogError, match="must be a JSON object"):
        load_catalog(extra)


def test_concurrent_registrations_keep_every_entry_and_each_name_once(tmp_path: Path, data_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from grouping.catalog import NameTakenError

    extra = tmp_path / "user.json"
    base = pd.read_csv(data_dir / "moleculenet" / "bbbp.csv").head(80)[["smiles", "p_np"]]
    base.to_csv(tmp_path / "set.csv", index=False)

    def register(name: str) -> str:
        raw = {"name": name, "file": str(tmp_path / "set.csv"), "smiles_column": "smiles",
               "label_columns": ["p_np"], "task_type": "classification"}
        try:
            register_dataset(extra, parse_entry(raw, "user"), data_dir)
            return "ok"
        except NameTakenError:
            return "taken"

    names = [f"set{i}" for i in range(6)] + ["same"] * 4
    with ThreadPoolExecutor(8) as pool:
        outcomes = dict(zip(range(len(names)), pool.map(register, names), strict=True))
    assert sorted(outcomes[i] for i in range(6, 10)) == ["ok", "taken", "taken", "taken"]
    registered = [e.name for e in load_catalog(extra) if e.source == "user"]
    assert sorted(registered) == sorted([f"set{i}" for i in range(6)] + ["same"])


def test_datasets_cli_lists_checks_and_registers(tiny_env, data_dir: Path) -> None:
    from app.cli import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["datasets", "--json"])
    assert out.exit_code == 0, out.output
    listed = json.loads(out.output)["datasets"]
    assert len(listed) == 19 and all(d["status"] == "ok" for d in listed)
    bbbp = str(data_dir / "moleculenet" / "bbbp.csv")
    ok = runner.invoke(
        cli,
        [
            "datasets",
            "register",
            "my-bbbp",
            bbbp,
            "--smiles-column",
            "smiles",
            "--labels",
            "p_np",
            "--task-type",
            "classification",
        ],
    )
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(
        cli,
        [
            "datasets",
            "register",
            "other",
            bbbp,
            "--smiles-column",
            "smiles",
            "--labels",
            "missing_col",
            "--task-type",
            "classification",
        ],
    )
    assert bad.exit_code == 2 and "missing_col" in bad.output
    again = runner.invoke(cli, ["datasets", "--json"])
    assert [d["dataset"] for d in json.loads(again.output)["datasets"]][-1] == "my-bbbp"
    broken = tiny_env.heads_dir / "gone.csv"
    pd.read_csv(bbbp).head(60)[["smiles", "p_np"]].rename(columns={"p_np": "y"}).to_csv(broken, index=False)
    assert (
        runner.invoke(
            cli,
            [
                "datasets",
                "register",
                "gone",
                str(broken),
                "--smiles-column",
                "smiles",
                "--labels",
                "y",
                "--task-type",
                "classification",
            ],
        ).exit_code
        == 0
    )
    broken.unlink()
    missing = runner.invoke(cli, ["datasets"])
    assert missing.exit_code == 1 and "ERROR  gone" in missing.output


# ---------------------------------------------------------------- target validation


def _csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()


@pytest.fixture(scope="module")
def bbbp_frame(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / "moleculenet" / "bbbp.csv", dtype=str, keep_default_na=False)


def _parse(data: bytes, **kw) -> object:
    return parse_target(read_csv_bytes(data, 10**7, 10**5), "t", min_rows=50, **kw)


def test_target_validation_errors(bbbp_frame: pd.DataFrame) -> None:
    head = bbbp_frame.head(80)
    cases = [
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", {}, 400, "file"),
        (b"", {}, 400, "file"),
        (_csv(head.rename(columns={"smiles": "text"}).assign(text="hello")), {}, 422, "smiles_column"),
        (_csv(head[["smiles"]]), {}, 422, "file"),
        (_csv(head.assign(p_np="yes")), {"targets": ["p_np"]}, 422, "targets"),
        (_csv(head.assign(name="a")[["smiles", "name"]]), {}, 422, "targets"),
        (_csv(head.assign(p_np="0.5")), {"task_type": "classification"}, 422, "task_type"),
        (_csv(head.head(30)), {}, 422, "file"),
        (_csv(head.assign(smiles="not-a-smiles")), {}, 422, "smiles_column"),
        (_csv(head), {"smiles_column": "nope"}, 422, "smiles_column"),
        (_csv(head), {"targets": ["nope"]}, 422, "targets"),
    ]
    for data, kw, code, field in cases:
        with pytest.raises(TargetError) as err:
            _parse(data, **kw)
        assert (err.value.status, err.value.field) == (code, field), (kw, str(err.value))
    with pytest.raises(TargetError) as big:
        read_csv_bytes(_csv(head), max_bytes=2000, max_rows=10**5)
    assert big.value.status == 413
    with pytest.raises(TargetError) as rows:
        read_csv_bytes(_csv(head), max_bytes=10**7, max_rows=79)
    assert rows.value.status == 413 and "80 rows" in str(rows.value)


def test_target_rejects_infinite_labels_single_class_and_repeated_columns(bbbp_frame: pd.DataFrame) -> None:
    head = bbbp_frame.head(80).copy()
    for bad in ("inf", "-Infinity", "1e400", "1e39", "1e20"):  # 1e20's square overflows float32
        df = head.copy()
        df["y"] = "1.5"
        df.loc[6, "y"] = bad
        with pytest.raises(TargetError) as err:
            _parse(_csv(df), targets=["y"])
        assert (err.value.status, err.value.field) == (422, "targets")
        assert "row 8" in str(err.value) and "finite" in str(err.value), bad
    ones = head.assign(p_np="1")
    for kw in ({}, {"task_type": "classification"}):
        with pytest.raises(TargetError) as err:
            _parse(_csv(ones), **kw)
        assert err.value.field == "targets" and "one class" in str(err.value)
    # the only 0 sits on a row whose SMILES is invalid: one class among the valid rows
    almost = ones.copy()
    almost.loc[0, "p_np"] = "0"
    almost.loc[0, "smiles"] = "C1CC"
    with pytest.raises(TargetError, match="one class"):
        _parse(_csv(almost))
    # a label column whose labels all sit on invalid rows
    empty = head.assign(extra="")
    empty.loc[0, "extra"] = "2.5"
    empty.loc[0, "smiles"] = "C1CC"
    with pytest.raises(TargetError, match="no label in the valid rows"):
        _parse(_csv(empty), targets=["p_np", "extra"])
    with pytest.raises(TargetError, match="more than once") as err:
        _parse(_csv(head), targets=["p_np", "p_np"])
    assert err.value.field == "targets"
    rare = head.assign(p_np="0")
    rare.loc[[1, 2], "p_np"] = "1"  # two positives are enough to accept the column
    assert _parse(_csv(rare)).task_types == ["classification"]



def test_target_file_forms_header_only_repeated_names_gzip_and_written_index(bbbp_frame) -> None:
    import gzip

    head = bbbp_frame.head(80)[["smiles", "p_np"]]
    with pytest.raises(TargetError, match="no data rows") as err:
        _parse(b"smiles,p_np\n")
    assert err.value.field == "file"
    with pytest.raises(TargetError, match=r"\['y'\] occur more than once") as err:
        _parse(b"smiles,y,y\n" + b"CCO,1,2\n" * 60)
    assert err.value.field == "file"
    zipped = _parse(gzip.compress(_csv(head)))
    assert len(zipped.smiles) == 80 and zipped.label_columns == ["p_np"]
    with pytest.raises(TargetError) as err:
        read_csv_bytes(gzip.compress(_csv(head)), max_bytes=2000, max_rows=10**5)  # limit on the CSV
    assert err.value.status == 413
    indexed = head.to_csv().encode()  # pandas' default writes the index as a first, unnamed column
    assert _parse(indexed).label_columns == ["p_np"]
    twice = pd.read_csv(io.BytesIO(indexed)).to_csv().encode()  # ",Unnamed: 0,..." -> "Unnamed: 0.1"
    assert _parse(twice).label_columns == ["p_np"]
    trailing = "\n".join(line + ",," for line in _csv(head).decode().splitlines()).encode()
    assert _parse(trailing).label_columns == ["p_np"]  # two empty header cells are no repeated name


def test_embedding_in_chunks_reports_progress_and_can_be_aborted(bbbp_frame, tiny_embedder) -> None:
    from grouping.features import featurize
    from grouping.recommend import target_features

    target = _parse(_csv(bbbp_frame.head(120)))
    args = (target.name, target.smiles, target.labels, target.task_types, target.label_columns, tiny_embedder)
    seen: list[float] = []
    chunked = featurize(*args, progress=seen.append, chunk=50)
    assert seen == [50 / 120, 100 / 120, 1.0]
    whole = featurize(*args)
    assert chunked.smiles == whole.smiles and np.allclose(chunked.fused, whole.fused, atol=1e-5)

    class Cancelled(Exception):
        pass

    def cancel(fraction: float) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):  # a cancelled job stops after the chunk at hand
        target_features(target, tiny_embedder, cancel)


def test_target_skips_and_counts_invalid_rows(bbbp_frame: pd.DataFrame) -> None:
    df = bbbp_frame.head(70).copy()
    df.loc[3, "smiles"] = "C1CC"  # unclosed ring
    df.loc[5, "p_np"] = ""  # no label
    target = _parse(_csv(df))
    assert target.invalid_rows == 2 and len(target.smiles) == 68
    assert target.task_types == ["classification"] and target.label_columns == ["p_np"]
    assert {e["row"] for e in target.invalid_examples} == {5, 7}



def test_target_rows_are_named_by_their_line_in_the_file(bbbp_frame: pd.DataFrame) -> None:
    """Blank lines and rows of empty cells are no data, yet every message names the row's line in the file
    (pandas skipped blank lines and numbered the rest from 0: the line was off by the blank lines above)."""
    lines = _csv(bbbp_frame.head(70)[["smiles", "p_np"]]).decode().splitlines()
    lines[3] = "C1CC,1"  # line 4: unclosed ring
    with_blanks = [*lines[:2], "", ",", "  ", *lines[2:]]  # three contentless lines after line 2
    target = _parse("\n".join(with_blanks).encode())
    assert target.rows == 70 and target.invalid_rows == 1 and len(target.smiles) == 69
    assert [e["row"] for e in target.invalid_examples] == [4 + 3]
    with_blanks[20] = with_blanks[20].rsplit(",", 1)[0] + ",yes"
    with pytest.raises(TargetError, match="row 21 holds 'yes'"):
        _parse("\n".join(with_blanks).encode(), targets=["p_np"])
    with pytest.raises(TargetError, match="no data rows"):
        _parse(b"smiles,p_np\n\n,\n")
    with_blanks[20] = with_blanks[20].rsplit(",", 1)[0] + ",0.5"
    with pytest.raises(TargetError, match="only 0/1 for classification: row 21 holds 0.5"):
        _parse("\n".join(with_blanks).encode(), targets=["p_np"], task_type="classification")

# ---------------------------------------------------------------- methods


def _synthetic(
    name: str,
    rng: np.random.Generator,
    n: int,
    w: np.ndarray,
    rule: str,
    density: float,
    shift: float = 0.0,
) -> SetFeatures:
    x = rng.normal(size=(n, len(w))).astype(np.float32) + shift
    y = (x @ w > shift * w.sum()) if rule == "same" else rng.random(n) < 0.5
    fp = (rng.random((n, 1024)) < density).astype(np.uint8)
    return SetFeatures(
        name,
        [f"{name}{i}" for i in range(n)],
        y[:, None].astype(np.float32),
        ["classification"],
        ["y"],
        x,
        fp,
        n,
        len(w) // 2,
    )


def _three_candidates() -> tuple[SetFeatures, dict[str, SetFeatures]]:
    """A target labelled by a linear rule; candidates with the same rule, with random labels on the same
    molecule distribution, and with random labels on shifted molecules and denser fingerprints."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=16)
    target = _synthetic("target", rng, 150, w, "same", 0.05)
    return target, {
        "helpful": _synthetic("helpful", rng, 600, w, "same", 0.05),
        "random": _synthetic("random", rng, 600, w, "random", 0.05),
        "far": _synthetic("far", rng, 600, w, "random", 0.2, shift=1.0),
    }


def test_routing_prefers_the_helpful_auxiliary_set() -> None:
    """Same labelling rule > random labels on the same molecules > random labels on other molecules."""
    target, candidates = _three_candidates()
    cfg = MolGroupConfig(steps_per_epoch=20, rounds=2, epochs_per_round=3, max_group=1)
    scores = {s.dataset: s for s in route(target, candidates, cfg)}
    assert scores["helpful"].score > scores["random"].score > scores["far"].score
    assert scores["helpful"].task_affinity > scores["random"].task_affinity
    assert scores["far"].structure_affinity < 0 < scores["helpful"].structure_affinity
    assert scores["helpful"].selected and not scores["random"].selected and not scores["far"].selected
    assert scores["far"].pruned_in_round == 1  # lowest score after round 1 is pruned


def test_repeated_routing_averages_the_runs_and_picks_from_the_mean_gates() -> None:
    """repeats = 3 is the three single runs (seeds 0, 1, 2) combined: mean affinities and gate, votes =
    share of runs that selected the set, the group chosen from the mean gates; the helpful set wins."""
    target, candidates = _three_candidates()
    cfg = MolGroupConfig(steps_per_epoch=10, rounds=2, epochs_per_round=2, max_group=1)
    singles = [{s.dataset: s for s in route(target, candidates, replace(cfg, seed=k))} for k in range(3)]
    combined = {s.dataset: s for s in route(target, candidates, replace(cfg, repeats=3))}
    for name, s in combined.items():
        assert s.score == pytest.approx(np.mean([r[name].score for r in singles]))
        assert s.task_affinity == pytest.approx(np.mean([r[name].task_affinity for r in singles]))
        assert s.votes == pytest.approx(np.mean([r[name].selected for r in singles]))
    assert [n for n, s in combined.items() if s.selected] == ["helpful"]
    assert combined["far"].pruned_in_round == 1


def test_structure_prior_adds_standardised_fingerprint_similarity_to_the_gate() -> None:
    """κ = 0: the set with the target's labelling rule wins. κ = 2: a set of random labels whose
    fingerprints contain the target's own (nearest-neighbour Tanimoto 1) wins instead."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=16)
    target = _synthetic("target", rng, 150, w, "same", 0.05)
    twin = _synthetic("twin", rng, 600, w, "random", 0.05)
    twin.fingerprints[: len(target)] = target.fingerprints
    candidates = {"helpful": _synthetic("helpful", rng, 600, w, "same", 0.05), "twin": twin}
    sims = [nearest_neighbour_tanimoto(target.fingerprints, c.fingerprints) for c in candidates.values()]
    z = similarity_prior(sims)
    np.testing.assert_allclose(z, [-1.0, 1.0], atol=1e-6)  # two candidates: z-scores ±1
    assert not similarity_prior(sims[1:]).any()
    cfg = MolGroupConfig(steps_per_epoch=15, rounds=2, epochs_per_round=2, max_group=1)
    plain = {s.dataset: s for s in route(target, candidates, cfg)}
    assert plain["helpful"].selected and plain["helpful"].score > plain["twin"].score
    pulled = {s.dataset: s for s in route(target, candidates, replace(cfg, structure_prior=2.0))}
    assert pulled["twin"].selected and pulled["twin"].score > 0.9 > 0.1 > pulled["helpful"].score


def _score(name: str, gate: float, selected: bool, pruned: int | None = None) -> CandidateScore:
    return CandidateScore(name, 0.1, 0.2, gate, selected, pruned, float(selected))


def test_combine_runs_selection_rule_votes_and_pruning_round() -> None:
    runs = [
        [_score("a", 0.9, True), _score("b", 0.6, True), _score("c", 0.2, False, 1)]
        + [_score("d", 0.55, False)],
        [_score("a", 0.7, True), _score("b", 0.3, False, 2), _score("c", 0.3, False, 1)]
        + [_score("d", 0.5, True)],
    ]
    out = {s.dataset: s for s in combine_runs(runs, MolGroupConfig(max_group=2))}
    assert out["a"].score == pytest.approx(0.8) and out["a"].votes == 1.0
    assert out["d"].score == pytest.approx(0.525) and out["d"].votes == 0.5
    # mean gates a 0.8, d 0.525, b 0.45, c 0.25: the two best at or above 0.5
    assert {n for n, s in out.items() if s.selected} == {"a", "d"}
    assert out["c"].pruned_in_round == 1  # pruned in round 1 by both runs
    assert out["b"].pruned_in_round is None  # a tie between kept and pruned counts as kept
    # a mean gate below the threshold is never selected, even with room in the group
    low = combine_runs([[_score("a", 0.6, True)], [_score("a", 0.3, False)]], MolGroupConfig(max_group=3))
    assert not low[0].selected and low[0].votes == 0.5
    with pytest.raises(ValueError, match="different candidates"):
        combine_runs([[_score("a", 0.6, True)], [_score("b", 0.6, True)]], MolGroupConfig())
    with pytest.raises(ValueError, match="repeats"):
        tiny = _synthetic("t", np.random.default_rng(0), 10, np.ones(4), "same", 0.1)
        route(tiny, {}, MolGroupConfig(repeats=0))


def test_tanimoto_similarity_and_stacking() -> None:
    rng = np.random.default_rng(1)
    fp = (rng.random((40, 1024)) < 0.1).astype(np.uint8)
    assert nearest_neighbour_tanimoto(fp, fp) == pytest.approx(1.0)
    assert nearest_neighbour_tanimoto(fp, 1 - fp) < 0.2
    w = rng.normal(size=8)
    target = _synthetic("t", rng, 10, w, "same", 0.1)
    aux = _synthetic("a", rng, 6, w, "same", 0.1)
    aux.labels = np.concatenate([aux.labels, np.full((6, 1), np.nan, dtype=np.float32)], axis=1)
    aux.label_columns, aux.task_types = ["y", "empty"], ["classification", "classification"]
    table = stack(target, [aux], exclude={"a0", "a1"})
    assert table.y.shape == (14, 2) and table.tasks == ["y", "a:y"]  # all-missing aux task dropped
    assert np.isnan(table.y[:10, 1]).all() and np.isnan(table.y[10:, 0]).all()
    assert table.aux_rows_removed == 2 and table.views["smiles"].shape == (14, 4)
    assert relative_improvement(0.8, 0.5, "roc_auc") == pytest.approx(0.6)
    assert relative_improvement(0.5, 1.0, "rmse") == pytest.approx(0.5)


def test_aux_weight_gives_the_target_and_each_auxiliary_set_a_fixed_loss_share() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=8)
    target = _synthetic("t", rng, 60, w, "same", 0.1)
    small = _synthetic("small", rng, 20, w, "same", 0.1)
    big = _synthetic("big", rng, 200, w, "random", 0.1)
    big.labels = np.concatenate([big.labels, big.labels[::-1]], axis=1)  # two tasks
    big.label_columns, big.task_types = ["y", "z"], ["classification", "classification"]
    table = stack(target, [small, big], exclude=set())
    assert table.set_of_task == [0, 1, 2, 2]
    train = np.arange(40)  # 40 target training rows (the other 20 are validation/test)
    weights = np.array(table.task_weights(train, aux_weight=0.5))
    rows = np.concatenate([train, np.arange(table.n_target, len(table.y))])
    counts = (~np.isnan(table.y[rows])).sum(axis=0)
    share = weights * counts
    # target 1 : each of the two auxiliary sets 0.5 / 2, whatever their sizes and task counts
    assert share[1] / share[0] == pytest.approx(0.25)
    assert (share[2] + share[3]) / share[0] == pytest.approx(0.25)
    assert weights.max() == pytest.approx(1.0)
    # the weights reach the head: a tiny aux share trains like the target alone would
    val, test = np.arange(40, 50), np.arange(50, 60)
    out = fit_and_score(target, [small, big], train, val, test, seed=0, aux_weight=1e-6, epochs=5)
    assert out["train_rows"] == 40 + 20 + 200 and set(out["val"]) >= {"roc_auc"}
    with pytest.raises(ValueError, match="task_weights"):
        fit_and_score(target, [small], train, val, test, seed=0, task_weights=[1.0], epochs=1)


@pytest.fixture(scope="module")
def small_catalog(data_dir: Path, tiny_embedder, tmp_path_factory: pytest.TempPathFactory):
    entries = [e for e in load_catalog() if e.name in SMALL_SETS]
    cache = tmp_path_factory.mktemp("grouping-cache")
    feats = load_catalog_features(entries, data_dir, tiny_embedder, cache, max_rows=120)
    return entries, cache, feats


def test_catalog_features_are_cached(small_catalog, data_dir: Path, tiny_embedder) -> None:
    entries, cache, feats = small_catalog
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 3 and all(f.endswith(".npz") for f in files)
    again = load_catalog_features(entries, data_dir, tiny_embedder, cache, max_rows=120)
    for name in SMALL_SETS:
        assert again[name].smiles == feats[name].smiles
        np.testing.assert_allclose(again[name].fused, feats[name].fused)
        np.testing.assert_array_equal(again[name].fingerprints, feats[name].fingerprints)
        assert feats[name].fused.shape == (
            len(feats[name]),
            sum(tiny_embedder.dims[v] for v in ("smiles", "graph")),
        )


class _CountingEmbedder:
    """The tiny embedder, counting its ``embed`` calls."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def embed(self, *args, **kwargs):
        self.calls += 1
        return self.inner.embed(*args, **kwargs)


def test_stored_vectors_follow_the_featurizer_revision(
    data_dir: Path, tiny_embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catalog features and dataset .npy files made by an older featurizer are not reused: both stores are
    keyed by ``Embedder.vector_versions``, whose graph part names the featurizer revision."""
    from fusion.datasets import cached_views
    from fusion.datasets import load_dataset as load_benchmark_set

    entry = next(e for e in load_catalog() if e.name == "esol")
    dataset = load_benchmark_set("esol", data_dir, max_rows=40)
    counting = _CountingEmbedder(tiny_embedder)

    def store_both() -> None:
        load_catalog_features([entry], data_dir, counting, tmp_path / "catalog", max_rows=40)
        cached_views(dataset, counting, tmp_path / "views", progress=False)

    store_both()
    assert counting.calls == 2
    store_both()  # both read from their stores
    assert counting.calls == 2
    revision = int(tiny_embedder.vector_versions["graph"].rsplit(".f", 1)[1])
    monkeypatch.setattr("models.embedder.FEATURIZER_REVISION", revision + 1)
    assert tiny_embedder.vector_versions["graph"].endswith(f".f{revision + 1}")
    assert tiny_embedder.vector_versions["smiles"] == tiny_embedder.versions["smiles"]
    store_both()  # a new featurizer: both embed again
    assert counting.calls == 4
    assert len(list((tmp_path / "catalog").glob("*.npz"))) == 2
    assert len(list((tmp_path / "views" / dataset.name).glob("graph-*.npy"))) == 2


def test_score_candidates_each_method(small_catalog, bbbp_frame: pd.DataFrame, tiny_embedder) -> None:
    from grouping.recommend import target_features

    _, _, feats = small_catalog
    target = target_features(_parse(_csv(bbbp_frame.head(120))), tiny_embedder)
    selected = {}
    for method in METHODS:
        rows = score_candidates(method, target, feats, top_k=2, config=FAST_ROUTING)
        assert sorted(r["dataset"] for r in rows) == sorted(SMALL_SETS)
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
        selected[method] = {r["dataset"] for r in rows if r["selected"]}
        if method == "structure":
            assert selected[method] == {r["dataset"] for r in rows[:2]}
    assert selected["all"] == set(SMALL_SETS) and selected["none"] == set()
    assert len(selected["molgroup"]) <= FAST_ROUTING.max_group


def test_recommend_result_schema(
    small_catalog, data_dir: Path, bbbp_frame: pd.DataFrame, tiny_embedder
) -> None:
    entries, cache, _ = small_catalog
    df = bbbp_frame.head(150).copy()
    df.loc[0, "smiles"] = "not-a-smiles"
    target = _parse(_csv(df))
    progress: list[float] = []
    options = RecommendOptions(
        method="molgroup",
        max_aux_rows=120,
        evidence_seeds=2,
        routing=FAST_ROUTING,
        head_params={"epochs": 3, "hidden": 32},
    )
    result = recommend(
        target, entries, data_dir, tiny_embedder, cache, options, lambda f, _m: progress.append(f)
    )
    assert progress == sorted(progress) and progress[-1] == 1.0
    json.dumps(result)  # JSON-ready
    assert result["method"] == "molgroup" and result["invalid_rows"] == 1
    for row in result["candidates"]:
        assert {"dataset", "task_affinity", "structure_affinity", "score", "selected"} <= set(row)
        assert 0.0 <= row["score"] <= 1.0 and -1.0 <= row["task_affinity"] <= 1.0
    assert result["recommended_group"] == [r["dataset"] for r in result["candidates"] if r["selected"]]
    ev = result["evidence"]
    assert ev["metric"] == "roc_auc" and ev["seeds"] == 2 and len(ev["target_alone"]["values"]) == 2
    assert 0.0 <= ev["target_alone"]["mean"] <= 1.0
    withheld = result["withheld_group"]
    # the evidence is for the routed group; it is recommended only if it beat target alone on validation
    routed = [r["dataset"] for r in result["candidates"] if r["routed"]]
    assert ev["group"] == (withheld["group"] if withheld else result["recommended_group"]) == routed
    if withheld:
        assert result["recommended_group"] == [] and ev["relative_improvement"] <= 0
    else:
        assert not routed or ev["relative_improvement"] > 0
    assert ev["aux_weight"] == 1.0 and result["settings"]["aux_weight"] == 1.0
    assert ev["transfer"] == "finetune" and result["settings"]["transfer"] == "finetune"
    assert result["settings"]["routing"]["rounds"] == FAST_ROUTING.rounds and result["wall_time_s"] > 0


def test_recommend_skips_a_catalog_set_whose_file_is_missing(
    small_catalog, data_dir: Path, bbbp_frame: pd.DataFrame, tiny_embedder, tmp_path: Path
) -> None:
    """One unusable catalog file leaves that set out (and says why); it does not fail the request."""
    import shutil

    from grouping.catalog import CatalogError

    entries, cache, _ = small_catalog
    partial = tmp_path / "catalog"
    missing = entries[0]
    for entry in entries[1:]:
        dest = entry.path(partial)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(entry.path(data_dir), dest)
    target = _parse(_csv(bbbp_frame.head(120)))
    options = RecommendOptions(method="structure", max_aux_rows=120, evidence_seeds=0, top_k=1)
    result = recommend(target, entries, partial, tiny_embedder, cache, options)
    assert list(result["skipped_candidates"]) == [missing.name]
    assert "file not found" in result["skipped_candidates"][missing.name]
    assert sorted(r["dataset"] for r in result["candidates"]) == sorted(e.name for e in entries[1:])
    with pytest.raises(CatalogError, match="no usable auxiliary data set"):
        recommend(target, entries, tmp_path / "empty", tiny_embedder, cache, options)


def test_recommend_cli_writes_json_and_chart(
    tiny_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bbbp_frame: pd.DataFrame
) -> None:
    from app.cli import cli
    from app.settings import get_settings

    monkeypatch.setenv("MOLFUSION_GROUPING_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MOLFUSION_RECOMMEND_MAX_AUX_ROWS", "60")
    get_settings.cache_clear()
    from app.jobs import reset_shared_embedder

    reset_shared_embedder()
    target = tmp_path / "target.csv"
    bbbp_frame.head(90).to_csv(target, index=False)
    exclude = ",".join(e.name for e in load_catalog() if e.name not in ("esol", "pampa"))
    out = CliRunner().invoke(
        cli,
        [
            "recommend",
            str(target),
            "-o",
            str(tmp_path / "r" / "result.json"),
            "--method",
            "structure",
            "--evidence-seeds",
            "0",
            "--exclude",
            exclude,
        ],
    )
    reset_shared_embedder()
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert {r["dataset"] for r in result["candidates"]} == {"esol", "pampa"}
    assert result["evidence"] is None and (tmp_path / "r" / "result.png").stat().st_size > 1000
    assert result["settings"]["exclude"] == exclude.split(",")
    from app import jobs

    reset_shared_embedder()
    bad = CliRunner().invoke(
        cli, ["recommend", str(target), "-o", str(tmp_path / "x.json"), "--targets", "nope"]
    )
    assert bad.exit_code == 2 and "--targets" in bad.output and "nope" in bad.output
    assert jobs._embedder is None  # refused before the encoders were loaded
    # a refused run leaves no folder behind: -o's folder is checked up front, created only to write
    nested = CliRunner().invoke(
        cli, ["recommend", str(target), "-o", str(tmp_path / "new" / "deep" / "x.json"), "--targets", "nope"]
    )
    assert nested.exit_code == 2 and not (tmp_path / "new").exists()
    (tmp_path / "afile").write_text("x")
    before = target.read_bytes()
    # each refused before any work, naming the option, with the input left alone: the input itself, a
    # PNG (the chart's name), an existing folder, a folder that cannot be made (a file is in the way)
    (tmp_path / "r" / "c.png").mkdir()
    for path in (target, tmp_path / "r" / "chart.png", tmp_path / "r", tmp_path / "afile" / "r.json",
                 Path("."), tmp_path / "r" / "c.json"):  # the last one's chart path is a folder
        out = CliRunner().invoke(cli, ["recommend", str(target), "-o", str(path), "--method", "none"])
        assert out.exit_code == 2 and "--output" in out.output and "Traceback" not in out.output, out.output
    assert target.read_bytes() == before
    folder = CliRunner().invoke(cli, ["recommend", str(tmp_path), "-o", str(tmp_path / "y.json")])
    assert folder.exit_code == 2 and "directory" in folder.output
    unknown = CliRunner().invoke(
        cli, ["recommend", str(target), "-o", str(tmp_path / "z.json"), "--exclude", "esol,not-a-set"]
    )
    assert unknown.exit_code == 2 and "--exclude" in unknown.output and "not-a-set" in unknown.output


def test_validation_check_withholds_a_group_that_does_not_help() -> None:
    from grouping.recommend import apply_validation_check

    def rows() -> list[dict]:
        return [{"dataset": "a", "selected": True}, {"dataset": "b", "selected": False}]

    kept_rows = rows()
    group, withheld = apply_validation_check(kept_rows, ["a"], {"relative_improvement": 0.031})
    assert group == ["a"] and withheld is None
    assert [r["selected"] for r in kept_rows] == [True, False] and kept_rows[0]["routed"]

    cut_rows = rows()
    group, withheld = apply_validation_check(cut_rows, ["a"], {"relative_improvement": -0.02})
    assert group == [] and withheld["group"] == ["a"] and "-2.00%" in withheld["reason"]
    assert not any(r["selected"] for r in cut_rows) and cut_rows[0]["routed"]

    # without evidence (evidence_seeds=0) the routed group stands
    group, withheld = apply_validation_check(rows(), ["a"], None)
    assert group == ["a"] and withheld is None

    # evidence whose validation metric is undefined (one class in the validation rows) cannot vouch
    unknown_rows = rows()
    group, withheld = apply_validation_check(unknown_rows, ["a"], {"relative_improvement": None})
    assert group == [] and withheld["group"] == ["a"] and "undefined" in withheld["reason"]
    group, withheld = apply_validation_check(rows(), ["a"], {"relative_improvement": float("nan")})
    assert group == [] and "undefined" in withheld["reason"]
    assert not any(r["selected"] for r in unknown_rows)


def test_finetune_transfer_continues_on_the_target_after_group_training() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=8)
    target = _synthetic("t", rng, 60, w, "same", 0.1)
    conflicting = _synthetic("c", rng, 200, -w, "same", 0.1)  # the opposite rule
    train, val, test = np.arange(40), np.arange(40, 50), np.arange(50, 60)
    joint = fit_and_score(target, [conflicting], train, val, test, seed=0, epochs=5, aux_weight=1.0)
    tuned = fit_and_score(
        target, [conflicting], train, val, test, seed=0, epochs=5, aux_weight=1.0, transfer="finetune"
    )
    assert joint["finetune_best_epoch"] is None and isinstance(tuned["finetune_best_epoch"], int)
    alone = fit_and_score(target, [], train, val, test, seed=0, epochs=5, transfer="finetune")
    assert alone["finetune_best_epoch"] is None  # nothing to fine-tune after without a group
    with pytest.raises(ValueError, match="transfer"):
        fit_and_score(target, [conflicting], train, val, test, seed=0, epochs=1, transfer="sequential")


def test_stack_transfer_feeds_auxiliary_heads_predictions_to_a_target_only_head() -> None:
    from grouping.evidence import auxiliary_predictions

    rng = np.random.default_rng(4)
    w = rng.normal(size=8)
    target = _synthetic("t", rng, 60, w, "same", 0.1)
    helper = _synthetic("h", rng, 120, w, "same", 0.1)
    empty = _synthetic("e", rng, 30, w, "same", 0.1)
    empty.labels[:] = np.nan  # no labels at all: contributes no feature
    train, val, test = np.arange(40), np.arange(40, 50), np.arange(50, 60)
    preds, used = auxiliary_predictions(
        target, [helper, empty], {"h0", "h1"}, 0, "mlp", "concat", {"epochs": 5}
    )
    assert preds.shape == (60, 1) and used == 118  # the label-less set is skipped
    assert np.all((preds >= 0) & (preds <= 1))  # probabilities of the helper's classification task
    # the helper's head learned the target's rule: its predictions rank the target's labels well
    from fusion.metrics import evaluate

    assert evaluate(target.labels, preds, ["classification"], ["y"])["mean"]["roc_auc"] > 0.8
    out = fit_and_score(target, [helper, empty], train, val, test, seed=0, epochs=5, transfer="stack")
    assert out["stacked_features"] == 1 and out["train_rows"] == 40 + 120  # nothing excluded here
    assert set(out["val"]) >= {"roc_auc"} and "test" in out
