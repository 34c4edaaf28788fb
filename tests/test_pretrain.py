"""Pretraining pipelines on tiny CPU runs: masking statistics, learning, exact resume, corpus filtering."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem
from safetensors.torch import load_file
from typer.testing import CliRunner

from models.pretrain.corpus import filter_corpus, keys_for, read_corpus, reference_tables, write_corpus
from models.pretrain.graph_ssl import GraphCorpus, mask_graph
from models.pretrain.motifs import graphs_and_motifs, motif_labels, motif_names
from models.pretrain.pipelines import pretrain_graph, pretrain_smiles
from models.pretrain.smiles_mlm import IGNORE_INDEX, mask_tokens, tokenize_corpus
from models.pretrain.trainer import STATE_DIR, TrainConfig, learning_rate
from models.tokenizer import SPECIAL_ORDER, build_tokenizer

TINY_SMILES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
TINY_GRAPH = {"hidden_size": 32, "num_layers": 2}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and two CI cores are not oversubscribed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def moses_head(data_dir: Path) -> list[str]:
    return read_corpus(data_dir / "pretrain" / "moses_train.csv.gz", limit=600)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory, moses_head: list[str]) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.csv.gz"
    write_corpus(moses_head, path)
    return path


def test_mlm_masking_follows_80_10_10(bbbp_smiles: list[str]) -> None:
    tokenizer = build_tokenizer(bbbp_smiles)
    corpus = tokenize_corpus(bbbp_smiles, tokenizer, max_length=512)
    ids, mask = corpus.batch(torch.arange(len(corpus)))
    gen = torch.Generator().manual_seed(0)
    corrupted, labels = mask_tokens(ids, mask, len(tokenizer), gen)
    specials = torch.isin(ids, torch.tensor([SPECIAL_ORDER.index(t) for t in ("<pad>", "<bos>", "<eos>")]))
    maskable = mask.bool() & ~specials
    selected = labels != IGNORE_INDEX
    assert not (selected & ~maskable).any(), "special tokens or padding were selected"
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(corrupted[~selected], ids[~selected]), "unselected tokens must be untouched"
    assert selected.any(dim=1).all(), "every sequence needs at least one prediction target"
    rate = selected.sum().item() / maskable.sum().item()
    assert rate == pytest.approx(0.15, abs=0.01)
    n = selected.sum().item()
    to_mask = (corrupted[selected] == SPECIAL_ORDER.index("<mask>")).sum().item() / n
    kept = (corrupted[selected] == ids[selected]).sum().item() / n
    random = 1.0 - to_mask - kept
    assert to_mask == pytest.approx(0.8, abs=0.015)
    # A random replacement equals the original with probability ~1/(vocab - 5), so "kept" is a bit above 10%.
    assert kept == pytest.approx(0.1 + 0.1 / (len(tokenizer) - len(SPECIAL_ORDER)), abs=0.012)
    assert random == pytest.approx(0.1, abs=0.012)
    replaced = corrupted[selected & (corrupted != ids) & (corrupted != SPECIAL_ORDER.index("<mask>"))]
    assert (replaced >= len(SPECIAL_ORDER)).all(), "random replacements must be ordinary tokens"


def test_graph_batch_matches_collate_and_masks_bonds_of_masked_atoms(bbbp_smiles: list[str]) -> None:
    from models.featurizer import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS, collate_graphs, featurize_smiles

    graphs = [f.graph for f in featurize_smiles(bbbp_smiles[:50], workers=1) if f.graph is not None]
    corpus = GraphCorpus.from_graphs(graphs)
    order = torch.tensor([7, 3, 41, 0])
    x, edge_index, edge_attr, batch = corpus.batch(order)
    ref = collate_graphs([graphs[i] for i in order.tolist()])
    assert torch.equal(x, ref.x) and torch.equal(edge_index, ref.edge_index)
    assert torch.equal(edge_attr, ref.edge_attr) and torch.equal(batch, ref.batch)
    xm, em, atom_mask, bond_mask = mask_graph(x, edge_index, edge_attr, torch.Generator().manual_seed(1), 0.3)
    assert (xm[atom_mask] == torch.tensor(ATOM_FEATURE_DIMS)).all()
    assert torch.equal(xm[~atom_mask], x[~atom_mask])
    touching = atom_mask[edge_index[0]] | atom_mask[edge_index[1]]
    assert torch.equal(bond_mask, touching)
    assert (em[bond_mask] == torch.tensor(BOND_FEATURE_DIMS)).all()
    assert torch.equal(em[~bond_mask], edge_attr[~bond_mask])


def test_learning_rate_warms_up_then_decays() -> None:
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0, 100) == 0.0  # before the first step
    assert learning_rate(cfg, 1, 100) == pytest.approx(1e-4)  # the first step (the trainer counts from 1)
    assert learning_rate(cfg, 5, 100) == pytest.approx(5e-4)
    assert learning_rate(cfg, 10, 100) == pytest.approx(1e-3)
    assert learning_rate(cfg, 100, 100) == pytest.approx(1e-4)
    assert learning_rate(cfg, 55, 100) < learning_rate(cfg, 30, 100)


def _log_losses(out: Path) -> list[float]:
    return pd.read_json(out / "log.jsonl", lines=True)["loss"].tolist()


def test_a_few_steps_reduce_both_losses(corpus_file: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(steps=40, batch_size=32, lr=2e-3, warmup_steps=5, log_every=10, checkpoint_every=1000)
    pretrain_smiles(corpus_file, tmp_path / "s", cfg, TINY_SMILES, device="cpu")
    losses = _log_losses(tmp_path / "s")
    assert losses[-1] < 0.8 * losses[0], losses
    cfg = TrainConfig(steps=30, batch_size=32, lr=2e-3, warmup_steps=5, log_every=10, checkpoint_every=1000)
    pretrain_graph(corpus_file, tmp_path / "g", cfg, TINY_GRAPH, device="cpu", workers=1)
    losses = _log_losses(tmp_path / "g")
    assert losses[-1] < 0.8 * losses[0], losses
    motif_losses = pd.read_json(tmp_path / "g" / "log.jsonl", lines=True)["motif_loss"].tolist()
    assert motif_losses[-1] < 0.8 * motif_losses[0], motif_losses


def test_motif_labels_mark_the_groups_a_chemist_sees() -> None:
    names = motif_names()
    assert len(names) == 85 and len(set(names)) == 85
    smiles = ["CC(=O)O", "O=[N+]([O-])c1ccccc1", "not a smiles", "CCN", "c1ccccc1Cl"]
    labels = motif_labels(smiles)
    assert labels.shape == (5, 85) and labels.dtype == np.uint8
    col = {n: j for j, n in enumerate(names)}
    assert labels[0, col["fr_COO"]] == 1 and labels[0, col["fr_nitro"]] == 0
    assert labels[1, col["fr_nitro"]] == 1 and labels[1, col["fr_benzene"]] == 1
    assert labels[2].sum() == 0  # unparsable rows keep their place, with no motif
    assert labels[3, col["fr_NH2"]] == 1 and labels[3, col["fr_benzene"]] == 0
    assert labels[4, col["fr_halogen"]] == 1
    # several processes give the same rows in the same order
    assert np.array_equal(motif_labels(smiles * 3, workers=2, chunk_size=4), motif_labels(smiles * 3))


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / STATE_DIR / "model.safetensors"))


@pytest.mark.parametrize("kind", ["smiles", "graph"])
def test_resume_is_exact(kind: str, corpus_file: Path, tmp_path: Path) -> None:
    def run(out: Path, stop_after: int | None) -> None:
        cfg = TrainConfig(steps=8, batch_size=64, lr=1e-3, warmup_steps=3, log_every=2, checkpoint_every=1000)
        if kind == "smiles":
            pretrain_smiles(corpus_file, out, cfg, TINY_SMILES, device="cpu", stop_after=stop_after)
        else:
            pretrain_graph(corpus_file, out, cfg, TINY_GRAPH, device="cpu", stop_after=stop_after, workers=1)

    torch.manual_seed(123)
    run(tmp_path / "straight", None)
    torch.manual_seed(456)  # a different process state: resume must not depend on it
    run(tmp_path / "split", 4)
    half = _weights(tmp_path / "split")
    run(tmp_path / "split", None)
    straight, split = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert straight.keys() == split.keys()
    assert any(not torch.equal(half[k], split[k]) for k in split), "the second half did not train"
    for name in straight:
        assert torch.equal(straight[name], split[name]), name
    assert _log_losses(tmp_path / "straight") == _log_losses(tmp_path / "split")


def test_filter_removes_benchmark_molecules(bbbp_smiles: list[str], moses_head: list[str]) -> None:
    reference = bbbp_smiles[:200]
    keys = keys_for(reference, workers=1)
    exact = {k.canonical for k in keys if k.canonical}
    flat = {k.flat for k in keys if k.flat}
    # Benchmark molecules hidden in the corpus as non-canonical, atom-shuffled SMILES.
    hidden = []
    for smi in reference[:30]:
        mol = Chem.MolFromSmiles(smi)
        if mol is not None and len(Chem.GetMolFrags(mol)) == 1:
            hidden.append(Chem.MolToSmiles(mol, doRandom=True, canonical=False))
    stereo = next(s for s in reference if "@" in s and "." not in s)
    flat_variant = Chem.MolToSmiles(Chem.MolFromSmiles(stereo), isomericSmiles=False)
    corpus = moses_head[:300] + hidden + [flat_variant, moses_head[0], "not-a-smiles"]
    kept, report = filter_corpus(corpus, exact, flat, workers=1)
    # MOSES itself holds a few BBBP drugs (oxazepam, praziquantel, ...), so more than the hidden ones go.
    moses_in_reference = sum(k.canonical in exact for k in keys_for(moses_head[:300], workers=1))
    assert moses_in_reference > 0
    assert report.removed_exact == len(hidden) + moses_in_reference
    assert report.removed_stereo_free >= 1
    assert report.duplicates == 1 and report.invalid == 1
    assert report.kept == len(kept) == report.corpus_rows - report.invalid - report.duplicates \
        - report.removed_exact - report.removed_stereo_free
    kept_flat = {k.flat for k in keys_for(kept, workers=1)}
    assert not kept_flat & flat
    assert len(kept) == 300 - moses_in_reference  # the appended copy of moses_head[0] is the duplicate


def test_reference_tables_cover_every_benchmark_but_not_the_corpus(data_dir: Path) -> None:
    tables = reference_tables(data_dir)
    names = {p.name for p, _ in tables}
    assert {"bbbp.csv", "hiv.csv", "muv.csv.gz", "tox21.csv", "herg_karim.csv"} <= names
    assert not any(p.parent.name == "pretrain" for p, _ in tables)
    for path, column in tables:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as handle:
            assert column in handle.readline()


def test_cli_trains_an_encoder_the_embedder_loads(corpus_file: Path, tmp_path: Path) -> None:
    from app.cli import cli
    from models.embedder import Embedder

    runner = CliRunner()
    out_s, out_g = tmp_path / "s", tmp_path / "g"
    args = ["--corpus", str(corpus_file), "--steps", "3", "--warmup", "1", "--batch-size", "16",
            "--device", "cpu"]
    res = runner.invoke(cli, ["pretrain", "smiles", *args, "--out", str(out_s), "--hidden-size", "32",
                              "--layers", "1", "--heads", "4", "--ffn", "64"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["pretrain", "graph", *args, "--out", str(out_g), "--hidden-size", "16",
                              "--layers", "2", "--workers", "1"])
    assert res.exit_code == 0, res.output
    emb = Embedder(out_s / "encoder", out_g / "encoder", device="cpu")
    out = emb.embed(["CCO", "c1ccccc1O"], views=("fused",))
    assert out.vectors["fused"].shape == (2, 32 + 3 * 16)
    assert emb.versions["smiles"].startswith("molformer-moses-")


def test_cli_rejects_bad_input(tmp_path: Path) -> None:
    from app.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["pretrain", "smiles", "--corpus", str(tmp_path / "missing.csv"), "--out",
                              str(tmp_path / "o"), "--steps", "3"])
    assert res.exit_code == 2 and "--corpus" in res.output
    bad = tmp_path / "bad.csv"
    bad.write_text("smi\nCCO\n")
    res = runner.invoke(cli, ["pretrain", "graph", "--corpus", str(bad), "--out", str(tmp_path / "o"),
                              "--steps", "3", "--device", "cpu"])
    assert res.exit_code == 2 and "SMILES" in res.output
    res = runner.invoke(cli, ["pretrain", "graph", "--corpus", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--steps" in res.output


def test_shipped_checkpoints_are_the_default_and_fit_the_budget() -> None:
    import json

    from models.embedder import DEFAULT_GRAPH_ENCODER, DEFAULT_SMILES_ENCODER, Embedder

    files = [f for d in (DEFAULT_SMILES_ENCODER, DEFAULT_GRAPH_ENCODER) for f in d.iterdir()]
    assert sum(f.stat().st_size for f in files) <= 16 * 2**20
    assert (DEFAULT_SMILES_ENCODER / "tokenizer.json").exists()
    for folder in (DEFAULT_SMILES_ENCODER, DEFAULT_GRAPH_ENCODER):
        weights = load_file(str(folder / "model.safetensors"))
        assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
        assert not any(k.startswith(("lm_", "atom_heads", "bond_heads")) for k in weights), "heads shipped"
        meta = json.loads((folder / "molfusion.json").read_text())
        assert meta["steps"] == meta["planned_steps"] > 0 and meta["corpus_molecules"] > 1_000_000
    emb = Embedder(device="cpu")
    assert emb.versions["smiles"].startswith("molformer-moses-")
    assert emb.versions["graph"].startswith("mhg-gin-moses-")
    out = emb.embed(["CC(=O)Oc1ccccc1C(=O)O", "OC(=O)c1ccccc1O"], views=("smiles", "graph"))
    for view in ("smiles", "graph"):
        vec = out.vectors[view]
        assert np.isfinite(vec).all()
        assert not np.allclose(vec[0], vec[1]), f"{view} view does not tell aspirin from salicylic acid"


def test_encoder_export_is_atomic_and_follows_the_checkpoint(
    corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped after its checkpoint and before its encoder was written: the rerun of the finished
    run writes the encoder from the checkpoint (it said 'done' and kept a stale or broken encoder)."""
    import json

    from models.pretrain import trainer

    cfg = TrainConfig(steps=4, batch_size=64, lr=1e-3, warmup_steps=2, log_every=2, checkpoint_every=2)
    calls = []
    real = trainer._export_encoder

    def dies_at_the_last_export(task, export_dir, meta):
        calls.append(meta["steps"])
        if meta["steps"] == 4:
            raise KeyboardInterrupt  # killed between the checkpoint and the encoder
        real(task, export_dir, meta)

    monkeypatch.setattr(trainer, "_export_encoder", dies_at_the_last_export)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pretrain_graph(corpus_file, out, cfg, TINY_GRAPH, device="cpu", workers=1)
    assert json.loads((out / "encoder" / "molfusion.json").read_text())["steps"] == 2  # the older, whole one
    assert not (out / "encoder.tmp").exists() or not (out / "encoder.tmp" / "molfusion.json").exists()
    monkeypatch.setattr(trainer, "_export_encoder", real)
    pos = pretrain_graph(corpus_file, out, cfg, TINY_GRAPH, device="cpu", workers=1)
    assert pos.step == 4 and json.loads((out / "encoder" / "molfusion.json").read_text())["steps"] == 4


def test_resume_refuses_other_settings_and_a_failed_attempt_leaves_no_vocabulary(
    corpus_file: Path, tmp_path: Path
) -> None:
    from app.cli import cli

    runner = CliRunner()
    out = tmp_path / "run"
    junk = tmp_path / "junk.csv"
    junk.write_text("SMILES\nfoo\nbar(\n")
    res = runner.invoke(cli, ["pretrain", "smiles", "--corpus", str(junk), "--out", str(out), "--steps", "2",
                              "--device", "cpu"])
    assert res.exit_code == 2 and "valid SMILES" in res.output
    base = ["pretrain", "smiles", "--corpus", str(corpus_file), "--out", str(out), "--steps", "4",
            "--batch-size", "64", "--warmup", "2", "--hidden-size", "32", "--layers", "1", "--heads", "4",
            "--ffn", "64", "--device", "cpu"]
    res = runner.invoke(cli, [*base, "--stop-after", "1"])
    assert res.exit_code == 0, res.output
    vocab = (out / "tokenizer" / "tokenizer.json").read_text()
    assert '"foo"' not in vocab  # built from this corpus, not from the failed attempt's
    other = tmp_path / "elsewhere" / corpus_file.name  # same file name, other molecules
    other.parent.mkdir()
    write_corpus(read_corpus(corpus_file)[::-1], other)
    elsewhere = [other if a == str(corpus_file) else a for a in base]
    for args, word in (
        ([*base, "--batch-size", "32"], "batch_size"),
        ([*base, "--hidden-size", "64"], "hidden_size"),
        ([*base, "--limit", "100"], "limit"),
        ([str(a) for a in elsewhere], "corpus_sha256"),
    ):
        before = (out / "data.json").read_text()
        res = runner.invoke(cli, args)
        assert res.exit_code == 2 and "other settings" in res.output and word in res.output, res.output
        assert (out / "data.json").read_text() == before  # refused before writing anything
    res = runner.invoke(cli, [*base])
    assert res.exit_code == 0 and "step 4/4" in res.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--steps", "-5", "--budget-minutes", "0.01"], "steps must be >= 0"),
        (["--steps", "2", "--device", "banana"], "--device"),
        (["--steps", "2", "--stop-after", "0"], "--stop-after"),
        (["--steps", "2", "--max-minutes", "0"], "--max-minutes"),
        (["--steps", "2", "--lr", "0"], "lr must be > 0"),
        (["--budget-minutes", "1", "--warmup", "2"], "needs at least 10 steps"),
    ],
)
def test_cli_refuses_bad_run_options(tmp_path: Path, corpus_file: Path, args: list[str], words: str) -> None:
    from app.cli import cli

    res = CliRunner().invoke(cli, ["pretrain", "graph", "--corpus", str(corpus_file), "--out",
                                   str(tmp_path / "o"), *args])
    assert res.exit_code == 2 and words in res.output and "Traceback" not in res.output, res.output


def test_cli_names_unreadable_corpora_and_outputs(tmp_path: Path) -> None:
    from app.cli import cli

    runner = CliRunner()
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    cases = {
        "empty": (b"", "is empty"),
        "header only": (b"SMILES\n", "no SMILES"),
        "plain as gz": (b"SMILES\nCCO\n", "not a readable CSV"),
    }
    for case, (data, words) in cases.items():
        corpus = tmp_path / ("c.csv.gz" if case == "plain as gz" else "c.csv")
        corpus.write_bytes(data)
        res = runner.invoke(cli, ["pretrain", "smiles", "--corpus", str(corpus), "--out", str(tmp_path / "o"),
                                  "--steps", "2", "--device", "cpu"])
        assert res.exit_code == 2 and words in res.output, (case, res.output)
        assert "Traceback" not in res.output, case
    res = runner.invoke(cli, ["pretrain", "smiles", "--corpus", str(tmp_path), "--out", str(tmp_path / "o"),
                              "--steps", "2"])
    assert res.exit_code == 2 and "is a directory" in res.output
    args = ["pretrain", "graph", "--corpus", str(a_file), "--out", str(a_file), "--steps", "2"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 2 and "is a file, not a run folder" in res.output


def test_plot_names_an_empty_or_foreign_log(tmp_path: Path) -> None:
    from app.cli import cli

    log = tmp_path / "log.jsonl"
    for text, words in (("", "no logged step"), ("not json\n", "not a pretraining log")):
        log.write_text(text)
        args = ["pretrain", "plot", "--log", str(log), "--out", str(tmp_path / "p.png")]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2 and words in res.output, res.output


def test_resume_refuses_switching_the_motif_objective(corpus_file: Path, tmp_path: Path) -> None:
    from app.cli import cli

    out = tmp_path / "g"
    base = ["pretrain", "graph", "--corpus", str(corpus_file), "--out", str(out), "--steps", "4",
            "--batch-size", "64", "--warmup", "2", "--hidden-size", "8", "--layers", "1", "--workers", "1",
            "--device", "cpu"]
    assert CliRunner().invoke(cli, [*base, "--stop-after", "1"]).exit_code == 0
    before = (out / "data.json").read_text()
    res = CliRunner().invoke(cli, [*base, "--no-motifs"])
    assert res.exit_code == 2 and "motifs: True in the run, False now" in res.output, res.output
    assert (out / "data.json").read_text() == before


def _two_column_corpus(path: Path, smiles: list[str]) -> Path:
    """A plain CSV with the molecules under ``smiles`` and, reversed, under ``other`` (no ``SMILES``)."""
    frame = pd.DataFrame({"id": range(len(smiles)), "smiles": smiles, "other": smiles[::-1]})
    frame.to_csv(path, index=False)
    return path


def test_smiles_column_picks_the_corpus_column(moses_head: list[str], tmp_path: Path) -> None:
    import json

    corpus = _two_column_corpus(tmp_path / "two.csv", moses_head[:200])
    cfg = TrainConfig(steps=2, batch_size=32, lr=1e-3, warmup_steps=1, log_every=1, checkpoint_every=100)
    pos = pretrain_graph(corpus, tmp_path / "g", cfg, TINY_GRAPH, device="cpu", workers=1,
                         smiles_column="smiles")
    assert pos.step == 2
    assert json.loads((tmp_path / "g" / "data.json").read_text())["molecules"] == 200
    encoder_meta = json.loads((tmp_path / "g" / "encoder" / "molfusion.json").read_text())
    assert encoder_meta["smiles_column"] == "smiles"
    pos = pretrain_smiles(corpus, tmp_path / "s", cfg, TINY_SMILES, device="cpu", smiles_column="other")
    assert pos.step == 2
    with pytest.raises(ValueError, match="other settings.*smiles_column: 'other' in the run, 'smiles' now"):
        pretrain_smiles(corpus, tmp_path / "s", cfg, TINY_SMILES, device="cpu", smiles_column="smiles")


def test_a_missing_smiles_column_names_the_column_and_the_file(moses_head: list[str], tmp_path: Path) -> None:
    corpus = _two_column_corpus(tmp_path / "two.csv", moses_head[:50])
    cfg = TrainConfig(steps=2, batch_size=16, warmup_steps=1)
    for kwargs in ({"smiles_column": "canonical_smiles"}, {}):  # {}: the default column, SMILES
        column = kwargs.get("smiles_column", "SMILES")
        with pytest.raises(ValueError, match=f"{corpus}: no column '{column}'"):
            pretrain_graph(corpus, tmp_path / "g", cfg, TINY_GRAPH, device="cpu", workers=1, **kwargs)
        with pytest.raises(ValueError, match=f"{corpus}: no column '{column}'"):
            pretrain_smiles(corpus, tmp_path / "s", cfg, TINY_SMILES, device="cpu", **kwargs)
    assert not (tmp_path / "g" / "data.json").exists() and not (tmp_path / "s" / "tokenizer").exists()


def test_cli_smiles_column(moses_head: list[str], tmp_path: Path) -> None:
    from app.cli import cli

    runner = CliRunner()
    if "--smiles-column" not in runner.invoke(cli, ["pretrain", "graph", "--help"]).output:
        pytest.skip("app/commands/pretrain.py does not pass --smiles-column to the pipelines yet")
    corpus = _two_column_corpus(tmp_path / "two.csv", moses_head[:100])
    args = ["--corpus", str(corpus), "--steps", "2", "--warmup", "1", "--batch-size", "16", "--device", "cpu"]
    res = runner.invoke(cli, ["pretrain", "graph", *args, "--out", str(tmp_path / "g"), "--hidden-size", "8",
                              "--layers", "1", "--workers", "1", "--smiles-column", "smiles"])
    assert res.exit_code == 0 and "step 2/2" in res.output, res.output
    res = runner.invoke(cli, ["pretrain", "smiles", *args, "--out", str(tmp_path / "s"),
                              "--smiles-column", "canonical_smiles"])
    assert res.exit_code == 2 and "canonical_smiles" in res.output and str(corpus) in res.output, res.output
    assert "Traceback" not in res.output


def test_graph_pipeline_parses_each_smiles_once(
    corpus_file: Path, moses_head: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not any("@" in s or "." in s for s in moses_head)  # no re-parse for stereo or salts here
    parsed: list[str] = []
    real = Chem.MolFromSmiles

    def counting(text: str, *args, **kwargs):
        parsed.append(text)
        return real(text, *args, **kwargs)

    monkeypatch.setattr(Chem, "MolFromSmiles", counting)
    cfg = TrainConfig(steps=1, batch_size=64, warmup_steps=1, checkpoint_every=100)
    pretrain_graph(corpus_file, tmp_path / "g", cfg, TINY_GRAPH, device="cpu", workers=1)
    assert len(parsed) == len(moses_head)  # once for the graph and the motif labels together


def test_graphs_and_motifs_match_the_featurizer_and_motif_labels(bbbp_smiles: list[str]) -> None:
    from models.featurizer import featurize_smiles

    sample = [*bbbp_smiles[:300], "CC(=O)[O-].[Na+]", "C[C@H](N)C(=O)O", "not a smiles", "c1ccccc1Cl.Cl"]
    assert sum("." in s for s in sample) > 5 and sum("@" in s for s in sample) > 5
    featurized = [f for f in featurize_smiles(sample, workers=1) if f.graph is not None]
    expected = motif_labels([f.canonical for f in featurized], workers=1)
    for workers, chunk_size in ((1, 4096), (2, 64)):
        graphs, labels = graphs_and_motifs(sample, workers=workers, chunk_size=chunk_size)
        assert labels is not None and np.array_equal(labels, expected)
        assert len(graphs) == len(featurized)
        for got, ref in zip(graphs, featurized, strict=True):
            assert ref.graph is not None
            for name in ("x", "edge_index", "edge_attr"):
                assert np.array_equal(getattr(got, name), getattr(ref.graph, name)), name
    graphs, labels = graphs_and_motifs(sample, workers=1, motifs=False)
    assert labels is None and len(graphs) == len(featurized)


@pytest.mark.parametrize("gz", [False, True])
def test_corpus_header_with_a_byte_order_mark_and_spaces_is_read(tmp_path: Path, gz: bool) -> None:
    """Excel's "CSV UTF-8" starts with a byte-order mark, and hand-made headers carry spaces: the column is
    still found, and cells are read without their surrounding spaces."""
    import gzip as gzip_module

    text = "\ufeff SMILES ,name\nCCO , ethanol\n\n  c1ccccc1O,phenol\n , blank\n"
    path = tmp_path / ("corpus.csv.gz" if gz else "corpus.csv")
    if gz:
        with gzip_module.open(path, "wt", encoding="utf-8", newline="") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    assert read_corpus(path) == ["CCO", "c1ccccc1O"]
    assert read_corpus(path, column=" SMILES") == ["CCO", "c1ccccc1O"]
    with pytest.raises(ValueError, match=r"no column 'smiles' \(columns: \['SMILES', 'name'\]\)"):
        read_corpus(path, column="smiles")
