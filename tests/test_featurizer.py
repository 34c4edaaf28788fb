"""Graph featurizer: the fast path equals a straightforward reference on real molecules, feature ranges,
parallel featurization and collation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem

from models.chemistry import ParsePolicy, parse_smiles
from models.featurizer import (
    ATOM_FEATURE_DIMS,
    ATOM_FEATURES,
    BOND_FEATURE_DIMS,
    BOND_FEATURES,
    MolGraph,
    collate_graphs,
    collate_packed,
    featurize_chunk,
    featurize_one,
    featurize_packed,
    featurize_smiles,
    mol_to_graph,
    mols_to_packed,
)

# (file, SMILES column, how many molecules): drug-like sets with charges, stereo, salts, aromatic
# heteroatoms and metals, plus small organics (QM9) and MOSES.
SOURCES = (
    ("moleculenet/bbbp.csv", "smiles", 400),
    ("moleculenet/tox21.csv", "smiles", 400),
    ("moleculenet/clintox.csv", "smiles", 300),
    ("moleculenet/hiv.csv", "smiles", 300),
    ("tdc/aqsoldb_curated.csv", "SMILES", 300),
    ("moleculenet/qm9.csv.gz", "smiles", 200),
    ("pretrain/moses_test.csv.gz", "SMILES", 200),
)
EDGE_CASES = (
    "C",  # no bonds
    "[Na+].[Cl-]",  # ions
    "CN(=O)=O",  # nitro: RDKit's clean-up makes it charged although the input has no bracket
    "[CH3]",  # radical
    "[O]",  # diradical
    "C->[Fe]",  # dative bond
    "F/C=C/F",  # bond stereo
    "F/C=C\\F",
    "C[C@H](N)C(=O)O",  # chirality
    "[2H]C([2H])([2H])O",  # isotopes
    "C1=CC=CC=C1",  # Kekulé input
    "c1cc[nH]c1",  # aromatic N-H
    "O=[N+]([O-])c1ccc(cc1)[S-]",  # charges on aromatic substituents
    "[U+6]",  # atomic number clipping, charge out of range -> "other"
    "[Fe-6]",
    "*C",  # dummy atom
    "C#N",
    "C$C",  # quadruple bond -> "other" bond type
)


def reference_graph(mol: Chem.Mol) -> MolGraph:
    """Every value read from every atom and bond, clipped one at a time (the specification)."""

    def clip(value: int, dim: int) -> int:
        return value if 0 <= value < dim else dim - 1

    bond_type = {Chem.BondType.SINGLE: 0, Chem.BondType.DOUBLE: 1, Chem.BondType.TRIPLE: 2,
                 Chem.BondType.AROMATIC: 3}
    rows = []
    for atom in mol.GetAtoms():
        rows.append([
            clip(atom.GetAtomicNum(), 120),
            clip(int(atom.GetChiralTag()), 5),
            clip(atom.GetDegree(), 11),
            clip(atom.GetFormalCharge() + 5, 11),
            clip(atom.GetTotalNumHs(), 9),
            clip(atom.GetNumRadicalElectrons(), 5),
            clip(int(atom.GetHybridization()), 8),
            int(atom.GetIsAromatic()),
            int(atom.IsInRing()),
        ])
    x = np.array(rows, dtype=np.int64).reshape(-1, 9)
    src, dst, attrs = [], [], []
    for bond in mol.GetBonds():
        src.append(bond.GetBeginAtomIdx())
        dst.append(bond.GetEndAtomIdx())
        attrs.append([bond_type.get(bond.GetBondType(), 4), clip(int(bond.GetStereo()), 7),
                      int(bond.GetIsConjugated())])
    edge_index = np.array([src + dst, dst + src], dtype=np.int64).reshape(2, -1)
    edge_attr = np.array(attrs + attrs, dtype=np.int64).reshape(-1, 3)
    return MolGraph(x, edge_index, edge_attr)


def assert_same_graph(got: MolGraph, want: MolGraph, label: str) -> None:
    for name in ("x", "edge_index", "edge_attr"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == np.int64 and a.shape == b.shape, f"{name} shape/dtype differs for {label}"
        assert np.array_equal(a, b), f"{name} differs for {label}"


@pytest.fixture(scope="module")
def real_smiles(data_dir: Path) -> list[str]:
    out: list[str] = []
    for name, column, n in SOURCES:
        out += pd.read_csv(data_dir / name, usecols=[column], nrows=n)[column].dropna().tolist()
    return out


def test_fast_path_equals_reference_on_real_molecules(real_smiles: list[str]) -> None:
    policy = ParsePolicy(max_atoms=10**6, max_smiles_length=10**6, salt_policy="keep")
    seen = {"charged": 0, "chiral": 0, "stereo_bond": 0, "salt": 0, "aromatic_heteroatom": 0}
    checked = 0
    for smiles in list(real_smiles) + list(EDGE_CASES):
        parsed = parse_smiles(smiles, policy)
        if parsed.mol is None:
            continue
        want = reference_graph(parsed.mol)
        # with its texts, a molecule with tetrahedral centres is featurized as parsed from its canonical form
        ordered = Chem.MolFromSmiles(parsed.canonical) if "@" in parsed.canonical else parsed.mol
        with_texts = mol_to_graph(parsed.mol, parsed.canonical, parsed.input)
        assert_same_graph(with_texts, reference_graph(ordered), smiles)
        assert_same_graph(mol_to_graph(parsed.mol), want, smiles)  # every value read
        checked += 1
        seen["charged"] += bool((want.x[:, 3] != 5).any())
        seen["chiral"] += bool(want.x[:, 1].any())
        seen["stereo_bond"] += bool(want.edge_attr[:, 1].any())
        seen["salt"] += "." in smiles
        seen["aromatic_heteroatom"] += bool(((want.x[:, 7] == 1) & (want.x[:, 0] != 6)).any())
    assert checked >= 2000
    assert all(count >= 10 for count in seen.values()), seen  # the hard cases are really covered


def test_featurize_one_matches_reference_after_salt_stripping() -> None:
    item = featurize_one("CC(=O)[O-].[Na+]")
    assert item.error is None and item.canonical == "CC(=O)[O-]"
    assert_same_graph(item.graph, reference_graph(Chem.MolFromSmiles("CC(=O)[O-]")), "acetate")


def test_feature_columns_stay_in_range(real_smiles: list[str]) -> None:
    graphs = [f.graph for f in featurize_smiles(real_smiles + list(EDGE_CASES), workers=1) if f.graph]
    x = np.concatenate([g.x for g in graphs])
    attr = np.concatenate([g.edge_attr for g in graphs])
    assert x.shape[1] == len(ATOM_FEATURES) and attr.shape[1] == len(BOND_FEATURES)
    assert (x >= 0).all() and (x < np.array(ATOM_FEATURE_DIMS)).all()
    assert (attr >= 0).all() and (attr < np.array(BOND_FEATURE_DIMS)).all()
    uranium = featurize_one("[U+6]").graph
    assert uranium.x[0, 0] == 92 and uranium.x[0, 3] == ATOM_FEATURE_DIMS[3] - 1  # +6 is "other"


def test_graph_layout_for_ethanol() -> None:
    graph = featurize_one("OCC").graph
    assert graph.x[:, 0].tolist() == [8, 6, 6]
    assert graph.x[:, 2].tolist() == [1, 2, 1]  # degree
    assert graph.x[:, 4].tolist() == [1, 2, 3]  # hydrogens
    assert graph.edge_index.tolist() == [[0, 1, 1, 2], [1, 2, 0, 1]]
    assert graph.edge_attr.tolist() == [[0, 0, 0]] * 4


def test_parallel_featurization_is_row_aligned_and_identical(real_smiles: list[str]) -> None:
    inputs = real_smiles[:300] + ["not-a-smiles", "", None] + real_smiles[300:600]
    serial = featurize_smiles(inputs, workers=1)
    parallel = featurize_smiles(inputs, workers=2, chunk_size=64, threshold=0)
    assert len(parallel) == len(inputs)
    for a, b in zip(serial, parallel, strict=True):
        assert (a.input, a.canonical, a.error) == (b.input, b.canonical, b.error)
        if a.graph is None:
            assert b.graph is None
        else:
            assert_same_graph(b.graph, a.graph, a.input)
    assert parallel[300].error.startswith("unparsable") and parallel[302].error.startswith("not a string")


def test_collate_offsets_edges_and_numbers_graphs() -> None:
    graphs = [featurize_one(s).graph for s in ("OCC", "C", "c1ccccc1")]
    batch = collate_graphs(graphs)
    assert batch.num_graphs == 3
    assert batch.x.shape == (10, len(ATOM_FEATURES))
    assert batch.batch.tolist() == [0, 0, 0, 1] + [2] * 6
    assert batch.edge_index.shape == (2, 4 + 0 + 12)
    assert batch.edge_index[:, :4].tolist() == [[0, 1, 1, 2], [1, 2, 0, 1]]
    assert int(batch.edge_index[:, 4:].min()) == 4  # benzene's atoms start after ethanol + methane
    empty = collate_graphs([])
    assert empty.num_graphs == 0 and empty.x.shape == (0, len(ATOM_FEATURES))


def test_chunk_wide_packing_equals_reference(real_smiles: list[str]) -> None:
    """Many molecules packed in one call (charged, stereo, dative and plain ones mixed, so every
    variant of the per-chunk vectorisation meets the others) give the reference graphs."""
    policy = ParsePolicy(max_atoms=10**6, max_smiles_length=10**6, salt_policy="keep")
    parsed = [parse_smiles(s, policy) for s in list(EDGE_CASES) + real_smiles]
    parsed = [p for p in parsed if p.mol is not None]
    for texts in ((None, None), ([p.canonical for p in parsed], [p.input for p in parsed])):
        packed = mols_to_packed([p.mol for p in parsed], *texts)
        graphs = packed.unpack()
        assert len(graphs) == len(parsed) >= 2000
        for p, graph in zip(parsed, graphs, strict=True):
            reorder = texts[0] is not None and "@" in p.canonical  # canonical order with the texts
            ordered = Chem.MolFromSmiles(p.canonical) if reorder else p.mol
            assert_same_graph(graph, reference_graph(ordered), p.input)
    assert mols_to_packed([]).unpack() == []


def test_featurize_packed_matches_featurize_chunk(real_smiles: list[str]) -> None:
    inputs = real_smiles[:50] + ["", "C1CC", None] + real_smiles[50:100]
    canonical, errors, packed = featurize_packed(inputs)
    items = featurize_chunk(inputs)
    assert canonical == [f.canonical for f in items] and errors == [f.error for f in items]
    graphs = packed.unpack()
    assert len(graphs) == sum(f.graph is not None for f in items)
    for graph, item in zip(graphs, [f for f in items if f.graph is not None], strict=True):
        assert_same_graph(graph, item.graph, item.input)
    only_parsed = featurize_packed(inputs, graphs=False)
    assert only_parsed[:2] == (canonical, errors) and only_parsed[2].unpack() == []


def test_collate_packed_equals_collate_graphs(real_smiles: list[str]) -> None:
    _, _, packed = featurize_packed(real_smiles[:200] + list(EDGE_CASES))
    graphs = packed.unpack()
    idx = np.argsort(packed.num_atoms, kind="stable")[::3]
    got = collate_packed(packed, idx).to_batch()
    want = collate_graphs([graphs[i] for i in idx])
    assert got.num_graphs == want.num_graphs == len(idx)
    for name in ("x", "edge_index", "edge_attr", "batch", "ptr"):
        assert np.array_equal(getattr(got, name).numpy(), getattr(want, name).numpy()), name


def test_every_writing_of_a_stereo_molecule_gives_one_graph_and_one_embedding() -> None:
    """RDKit's CW/CCW tag follows the input's atom order; featurized in canonical order, every writing
    of a molecule gives the same graph, and the embedder the same vector whichever writing it saw first."""
    from models.embedder import Embedder

    writings: list[str] = ["OC[C@H](O)[C@@H](O)[C@H](O)CO", "OC[C@@H](O)[C@H](O)[C@@H](O)CO"]  # mannitol
    for smiles in ("C[C@H](N)C(=O)O", "C[C@@H]1CC[C@H](O)CC1"):  # L-alanine, a cis/trans-free ring pair
        writings += Chem.MolToRandomSmilesVect(Chem.MolFromSmiles(smiles), 4, randomSeed=7)
    items = featurize_chunk(writings)
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(item.canonical, []).append(item.graph)
    assert len(groups) == 3 and all(len(set(w)) > 1 for w in [writings[:2], writings[2:6], writings[6:]])
    for graphs in groups.values():
        for g in graphs[1:]:
            assert_same_graph(g, graphs[0], "another writing")
    embedder = Embedder()
    embedder.cache = None
    forward = embedder.embed(writings, views=("graph",)).vectors["graph"]
    backward = embedder.embed(writings[::-1], views=("graph",)).vectors["graph"][::-1]
    assert np.allclose(forward, backward, atol=1e-5)
    for rows in (slice(0, 2), slice(2, 6), slice(6, 10)):
        assert np.allclose(forward[rows], forward[rows][:1], atol=1e-5)
