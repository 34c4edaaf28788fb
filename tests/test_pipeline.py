"""The overlapped embedding pipeline: same rows, reasons and vectors as ``Embedder.embed`` on real
molecules; worker-side collation (padding, graph batches) and the tokenizer the workers use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.chemistry import ParsePolicy
from models.embedder import VIEWS, Embedder
from models.featurizer import collate_graphs, featurize_chunk
from models.pipeline import EmbeddingPipeline, prepare_chunk
from models.tokenizer import RegexTokenizer

INVALID = ["", "C1CC", None, "not-a-smiles", "C" * 1001, 3.5]


@pytest.fixture(scope="module")
def real_smiles(data_dir: Path) -> list[str]:
    """A few hundred drug-like molecules with charges, stereo and salts, plus invalid inputs."""
    tox = pd.read_csv(data_dir / "moleculenet" / "tox21.csv", usecols=["smiles"], nrows=150)["smiles"]
    hiv = pd.read_csv(data_dir / "moleculenet" / "hiv.csv", usecols=["smiles"], nrows=150)["smiles"]
    valid = tox.tolist() + hiv.tolist()
    return valid[:100] + INVALID[:3] + valid[100:250] + INVALID[3:] + valid[250:] + ["CC(=O)[O-].[Na+]"]


def pipeline(embedder: Embedder, **kwargs) -> EmbeddingPipeline:
    options = {"batch_size": 32, "workers": 2, "chunk_size": 61, "prefetch": 3} | kwargs
    return EmbeddingPipeline(embedder.smiles, embedder.graph, torch.device("cpu"), **options)


def test_pipeline_matches_embedder_on_real_molecules(tiny_embedder: Embedder, real_smiles: list) -> None:
    chunks = list(pipeline(tiny_embedder).run(iter(real_smiles)))
    assert [c.start for c in chunks] == list(range(0, len(real_smiles), 61))
    expected = tiny_embedder.embed(real_smiles)
    assert sum((c.inputs for c in chunks), []) == expected.inputs
    assert sum((c.canonical for c in chunks), []) == expected.canonical
    assert sum((c.errors for c in chunks), []) == expected.errors
    assert (~expected.valid).sum() >= len(INVALID)
    for view in VIEWS:
        got = np.concatenate([c.vectors[view] for c in chunks])
        assert got.shape == expected.vectors[view].shape and got.dtype == np.float32
        assert np.isnan(got[~expected.valid]).all() and np.isfinite(got[expected.valid]).all()
        ok = expected.valid
        np.testing.assert_allclose(got[ok], expected.vectors[view][ok], rtol=0, atol=1e-5)


@pytest.mark.parametrize("views", [("smiles",), ("graph",), ("graph", "smiles")])
def test_pipeline_view_subsets(tiny_embedder: Embedder, real_smiles: list, views: tuple[str, ...]) -> None:
    smiles = real_smiles[:120]
    chunks = list(pipeline(tiny_embedder, workers=1).run(smiles, views=views))
    expected = tiny_embedder.embed(smiles, views=views)
    for view in views:
        assert set(chunks[0].vectors) == set(views)
        got = np.concatenate([c.vectors[view] for c in chunks])
        assert got.shape == (len(smiles), tiny_embedder.dims[view])
        np.testing.assert_allclose(got, expected.vectors[view], rtol=0, atol=1e-5)


def test_encode_prepared_chunk_in_process(tiny_embedder: Embedder, real_smiles: list) -> None:
    pipe = pipeline(tiny_embedder)
    part = real_smiles[95:140]
    chunk = prepare_chunk(7, part, ParsePolicy(), True, True, tiny_embedder.smiles.max_length, 16, 0,
                          pipe.worker_tokenizer)
    out = pipe.encode(chunk, VIEWS, part)
    assert out.start == 7 and out.vectors["fused"].shape == (len(part), tiny_embedder.dims["fused"])
    expected = tiny_embedder.embed(part)
    np.testing.assert_allclose(np.nan_to_num(out.vectors["fused"], nan=-1),
                               np.nan_to_num(expected.vectors["fused"], nan=-1), rtol=0, atol=1e-5)


def test_prepared_batches_are_sorted_padded_and_cover_valid_rows(tiny_embedder: Embedder,
                                                                 real_smiles: list) -> None:
    part = real_smiles[90:200]
    hf = tiny_embedder.smiles.tokenizer
    fast = RegexTokenizer.from_fast_tokenizer(hf, 512)
    assert fast is not None
    chunk = prepare_chunk(0, part, ParsePolicy(), True, True, 512, 16, hf.pad_token_id, fast)
    valid = [i for i, e in enumerate(chunk.errors) if e is None]
    assert sorted(np.concatenate([b.rows for b in chunk.token_batches]).tolist()) == valid
    assert sorted(np.concatenate([b.rows for b in chunk.graph_batches]).tolist()) == valid
    widths = [b.ids.shape[1] for b in chunk.token_batches]
    assert widths == sorted(widths) and all(len(b.rows) <= 16 for b in chunk.token_batches)
    for batch in chunk.token_batches:
        want = hf([chunk.canonical[r] for r in batch.rows], padding=True)
        assert batch.ids.dtype == np.int32 and batch.ids.tolist() == want["input_ids"]
        assert batch.lengths.tolist() == [sum(m) for m in want["attention_mask"]]
    graphs = {i: f.graph for i, f in enumerate(featurize_chunk(part))}
    for batch in chunk.graph_batches:
        got, want = batch.graphs.to_batch(), collate_graphs([graphs[r] for r in batch.rows])
        assert batch.graphs.x.dtype == np.uint8 and batch.graphs.edge_index.dtype == np.int32
        for name in ("x", "edge_index", "edge_attr", "batch", "ptr"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name
    # the Hugging Face tokenizer (the workers' fallback) prepares the very same batches
    slow = prepare_chunk(0, part, ParsePolicy(), True, True, 512, 16, hf.pad_token_id, hf)
    for a, b in zip(chunk.token_batches, slow.token_batches, strict=True):
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.rows, b.rows)


def test_smiles_only_chunk_skips_graphs(real_smiles: list) -> None:
    part = real_smiles[80:130]
    chunk = prepare_chunk(0, part, ParsePolicy(), False, False)
    assert chunk.graph_batches == [] and chunk.token_batches == []
    assert chunk.size == 50 and chunk.errors == [f.error for f in featurize_chunk(part)]
    assert chunk.canonical == [f.canonical for f in featurize_chunk(part)]
