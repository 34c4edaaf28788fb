"""Batch embedding with the tiny encoders: canonical invariance, row alignment with named reasons for
invalid inputs, the salt policy, the vector cache, and ``molfusion embed`` end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from models.chemistry import ParsePolicy, canonicalize
from models.embedder import VIEWS, Embedder
from models.embedding_cache import LRUVectorCache


def sibling(embedder: Embedder, **kwargs) -> Embedder:
    """Another embedder on the same loaded encoders (no reload), e.g. with another policy or a cache."""
    return Embedder(embedder.smiles, embedder.graph, device="cpu", batch_size=embedder.batch_size, **kwargs)


def test_equivalent_smiles_give_equal_vectors_in_every_view(tiny_embedder: Embedder) -> None:
    variants = ["OCC", "C(O)C", "[CH3][CH2]O"]
    separately = [tiny_embedder.embed([v]) for v in variants]  # each graph built from its own atom order
    together = tiny_embedder.embed(variants)
    assert len({out.canonical[0] for out in separately}) == 1
    for view in VIEWS:
        first = separately[0].vectors[view][0]
        assert first.shape == (tiny_embedder.dims[view],) and np.isfinite(first).all()
        for out in separately[1:]:
            np.testing.assert_allclose(out.vectors[view][0], first, rtol=0, atol=1e-5)
        np.testing.assert_allclose(together.vectors[view], np.stack([first] * 3), rtol=0, atol=1e-5)
    fused = together.vectors["fused"][0]
    np.testing.assert_array_equal(fused, np.concatenate([together.vectors["smiles"][0],
                                                         together.vectors["graph"][0]]))


def test_different_molecules_give_different_vectors(tiny_embedder: Embedder, bbbp_smiles: list[str]) -> None:
    out = tiny_embedder.embed(bbbp_smiles[:20], views=("smiles", "graph"))
    for view in ("smiles", "graph"):
        vectors = out.vectors[view][out.valid]
        assert len(np.unique(vectors.round(5), axis=0)) == len(vectors)


def test_invalid_rows_stay_aligned_with_reasons(tiny_embedder: Embedder) -> None:
    inputs = ["CCO", "", "C1CC", "C" * 1001, "C" * 250, None, 3.5, "c1ccccc1O", "CCO"]
    reasons = [None, "empty", "unparsable", "too long", "too many atoms", "not a string", "not a string",
               None, None]
    out = tiny_embedder.embed(inputs)
    assert len(out.inputs) == len(out.canonical) == len(out.errors) == len(inputs)
    assert out.inputs[5] == "None" and out.inputs[6] == "3.5"
    for i, reason in enumerate(reasons):
        if reason is None:
            assert out.errors[i] is None and out.canonical[i] is not None
        else:
            assert reason in out.errors[i] and out.canonical[i] is None
    assert out.valid.tolist() == [r is None for r in reasons]
    alone = tiny_embedder.embed(["CCO", "c1ccccc1O"])
    for view in VIEWS:
        vectors = out.vectors[view]
        assert vectors.shape == (len(inputs), tiny_embedder.dims[view]) and vectors.dtype == np.float32
        assert np.isnan(vectors[~out.valid]).all() and np.isfinite(vectors[out.valid]).all()
        np.testing.assert_allclose(vectors[[0, 7]], alone.vectors[view], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(vectors[0], vectors[8])
    assert tiny_embedder.embed([]).vectors["fused"].shape == (0, tiny_embedder.dims["fused"])


def test_salt_policies(tiny_embedder: Embedder) -> None:
    salt = "CC(=O)[O-].[Na+]"
    largest = sibling(tiny_embedder, policy=ParsePolicy(salt_policy="largest")).embed([salt, "CC(=O)[O-]"])
    assert largest.canonical == ["CC(=O)[O-]", "CC(=O)[O-]"]
    np.testing.assert_allclose(largest.vectors["fused"][0], largest.vectors["fused"][1], rtol=0, atol=1e-5)
    rejected = sibling(tiny_embedder, policy=ParsePolicy(salt_policy="reject")).embed([salt])
    assert "salt policy" in rejected.errors[0] and np.isnan(rejected.vectors["graph"][0]).all()
    kept = sibling(tiny_embedder, policy=ParsePolicy(salt_policy="keep")).embed([salt])
    assert "." in kept.canonical[0] and np.isfinite(kept.vectors["graph"][0]).all()


def test_cache_is_used_and_second_call_computes_nothing(tiny_embedder: Embedder, bbbp_smiles: list[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = LRUVectorCache(max_items=1000, dtype="float32")
    embedder = sibling(tiny_embedder, cache=cache)
    smiles = bbbp_smiles[:30]
    first = embedder.embed(smiles)
    n_unique = len({c for c in first.canonical if c is not None})
    assert len(cache) == 2 * n_unique  # one vector per molecule and encoder view

    computed: list[int] = []

    def counting(view):
        original = view.encode

        def encode(items, device, batch_size):
            computed.append(len(items))
            return original(items, device, batch_size)

        return encode

    monkeypatch.setattr(embedder.smiles, "encode", counting(embedder.smiles))
    monkeypatch.setattr(embedder.graph, "encode", counting(embedder.graph))
    second = embedder.embed(smiles)
    assert computed == [] and cache.hits >= 2 * n_unique
    for view in VIEWS:
        np.testing.assert_array_equal(second.vectors[view], first.vectors[view])
    embedder.embed(smiles + ["CCCCCCCCO"])  # only the new molecule is encoded, once per view
    assert computed == [1, 1]


@pytest.fixture()
def table(tmp_path: Path, bbbp_smiles: list[str]) -> tuple[Path, list[str]]:
    """A CSV whose SMILES column has an unusual name (found by content), with invalid rows mixed in."""
    smiles = bbbp_smiles[:25] + ["", "not_a_smiles", "C1CC", "CC(=O)[O-].[Na+]", "c1ccccc1"]
    frame = pd.DataFrame({"label": [f"m{i}" for i in range(len(smiles))], "compound": smiles,
                          "value": np.arange(len(smiles)) / 10})
    path = tmp_path / "input.csv"
    frame.to_csv(path, index=False)
    return path, smiles


def test_cli_embed_end_to_end(tiny_env, tiny_embedder: Embedder, table, tmp_path: Path) -> None:
    from app.cli import cli

    path, smiles = table
    out_path = tmp_path / "out" / "vectors.parquet"
    result = CliRunner().invoke(cli, ["embed", str(path), "-o", str(out_path), "--chunk-size", "7",
                                      "--views", "smiles,graph,fused"])
    assert result.exit_code == 0, result.output
    assert f"{len(smiles)} rows" in result.output
    rows = pq.read_table(out_path).to_pylist()
    assert [row["index"] for row in rows] == list(range(len(smiles)))
    assert [row["input"] for row in rows] == smiles
    expected = tiny_embedder.embed(smiles)
    for i, row in enumerate(rows):
        valid = expected.errors[i] is None
        assert row["status"] == ("ok" if valid else "invalid")
        assert row["canonical_smiles"] == (canonicalize(smiles[i]) if valid else None)
        assert (row["error"] is None) == valid
        for view in VIEWS:
            vector = row[f"{view}_embedding"]
            if valid:
                np.testing.assert_allclose(np.asarray(vector), expected.vectors[view][i], rtol=0, atol=1e-5)
            else:
                assert vector is None
    assert "empty" in rows[25]["error"] and "unparsable" in rows[26]["error"]


def test_cli_embed_names_a_missing_column(tiny_env, table, tmp_path: Path) -> None:
    from app.cli import cli

    path, _ = table
    result = CliRunner().invoke(cli, ["embed", str(path), "-o", str(tmp_path / "o.parquet"),
                                      "--smiles-column", "smiles_nope"])
    assert result.exit_code == 2
    assert "smiles_nope" in result.output
    assert not (tmp_path / "o.parquet").exists()


def test_overlapped_pipeline_matches_embed_row_for_row(
    tiny_embedder: Embedder, bbbp_smiles: list[str]
) -> None:
    import torch

    from models.pipeline import EmbeddingPipeline

    smiles = bbbp_smiles[:40] + ["", "C1CC", None, "CC(=O)[O-].[Na+]"] + bbbp_smiles[40:60]
    pipe = EmbeddingPipeline(tiny_embedder.smiles, tiny_embedder.graph, torch.device("cpu"), batch_size=16,
                             workers=2, chunk_size=7, prefetch=3)
    chunks = list(pipe.run(iter(smiles)))
    assert [c.start for c in chunks] == list(range(0, len(smiles), 7))
    expected = tiny_embedder.embed(smiles)
    assert sum((c.canonical for c in chunks), []) == expected.canonical
    assert sum((c.errors for c in chunks), []) == expected.errors
    for view in VIEWS:
        got = np.concatenate([c.vectors[view] for c in chunks])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected.vectors[view]))
        valid = expected.valid
        np.testing.assert_allclose(got[valid], expected.vectors[view][valid], rtol=0, atol=1e-5)


def test_parallel_featurization_pool_is_started_once_and_kept(tiny_checkpoints: dict[str, Path],
                                                              bbbp_smiles: list[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Large calls featurize in worker processes; the pool is forked by the first such call and reused by
    the next ones (not once per call), gives the serial path's rows, and close() stops it."""
    import models.embedder as embedder_module

    monkeypatch.setattr(embedder_module, "PARALLEL_THRESHOLD", 64)
    parallel = Embedder(tiny_checkpoints["smiles"], tiny_checkpoints["graph"], device="cpu",
                        featurize_workers=2)
    serial = Embedder(tiny_checkpoints["smiles"], tiny_checkpoints["graph"], device="cpu",
                      featurize_workers=1)
    batch = bbbp_smiles[:150] + ["not-a-smiles"] + bbbp_smiles[150:300]
    try:
        first = parallel.embed(batch)
        pool = parallel._pool
        assert pool is not None
        workers = {p.pid for p in pool._processes.values()}
        second = parallel.embed(batch[::-1])
        assert parallel._pool is pool and {p.pid for p in pool._processes.values()} == workers
        expected = serial.embed(batch)
        assert first.canonical == expected.canonical and first.errors == expected.errors
        np.testing.assert_allclose(np.nan_to_num(first.vectors["fused"]),
                                   np.nan_to_num(expected.vectors["fused"]), atol=1e-5)
        assert second.canonical == expected.canonical[::-1]
    finally:
        parallel.close()
    assert parallel._pool is None
    assert serial._pool is None  # featurize_workers=1 never starts processes
