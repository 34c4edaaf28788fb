"""Graph featurizer: RDKit molecule -> categorical atom/bond feature indices in torch-geometric form.

Every feature is a small integer index (OGB/MHG-GNN style) so the graph encoder embeds each feature
column with its own table and sums them. Column ``j`` of ``x`` takes values in ``[0, ATOM_FEATURE_DIMS[j])``;
the encoders reserve one extra index per column for the ``[MASK]`` value used in pretraining.

Atom columns: atomic number, chirality tag, degree, formal charge, total H count, radical electrons,
hybridisation, aromatic, in ring. Bond columns: bond type, stereo, conjugated.

Each SMILES is parsed once (:func:`models.chemistry.parse_smiles`) for both the canonical form and
the graph. Large inputs are split across worker processes (:func:`featurize_smiles`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem
from torch_geometric.data import Batch, Data

from models.chemistry import ParsedMolecule, ParsePolicy, parse_smiles

ATOM_FEATURES = (
    "atomic_num",
    "chirality",
    "degree",
    "formal_charge",
    "num_hs",
    "radical_electrons",
    "hybridization",
    "aromatic",
    "in_ring",
)
ATOM_FEATURE_DIMS = (120, 5, 11, 11, 9, 5, 8, 2, 2)
BOND_FEATURES = ("bond_type", "stereo", "conjugated")
BOND_FEATURE_DIMS = (5, 7, 2)

_BOND_TYPE_INDEX = {
    Chem.BondType.SINGLE: 0,
    Chem.BondType.DOUBLE: 1,
    Chem.BondType.TRIPLE: 2,
    Chem.BondType.AROMATIC: 3,
}
PARALLEL_THRESHOLD = 4096  # inputs at least this long are featurized in worker processes


@dataclass(slots=True)
class MolGraph:
    """Compact integer arrays for one molecule (cheap to pickle between processes)."""

    x: np.ndarray  # int64 [num_atoms, len(ATOM_FEATURES)]
    edge_index: np.ndarray  # int64 [2, 2 * num_bonds], both directions
    edge_attr: np.ndarray  # int64 [2 * num_bonds, len(BOND_FEATURES)]

    def to_data(self) -> Data:
        return Data(
            x=torch.from_numpy(self.x),
            edge_index=torch.from_numpy(self.edge_index),
            edge_attr=torch.from_numpy(self.edge_attr),
            num_nodes=self.x.shape[0],
        )


def _clip(value: int, dim: int) -> int:
    return value if 0 <= value < dim else dim - 1


def mol_to_graph(mol: Chem.Mol) -> MolGraph:
    """Featurize an RDKit molecule (already sanitized)."""
    n = mol.GetNumAtoms()
    rows: list[tuple[int, ...]] = []
    for atom in mol.GetAtoms():
        z = atom.GetAtomicNum()
        rows.append(
            (
                z if z < 119 else 119,
                _clip(int(atom.GetChiralTag()), 5),
                _clip(atom.GetDegree(), 11),
                _clip(atom.GetFormalCharge() + 5, 11),
                _clip(atom.GetTotalNumHs(), 9),
                _clip(atom.GetNumRadicalElectrons(), 5),
                _clip(int(atom.GetHybridization()), 8),
                int(atom.GetIsAromatic()),
                int(atom.IsInRing()),
            )
        )
    x = np.array(rows, dtype=np.int64).reshape(n, len(ATOM_FEATURES))
    m = mol.GetNumBonds()
    if m == 0:
        return MolGraph(x, np.zeros((2, 0), np.int64), np.zeros((0, len(BOND_FEATURES)), np.int64))
    src = np.empty(m, np.int64)
    dst = np.empty(m, np.int64)
    attr = np.empty((m, 3), np.int64)
    for k, bond in enumerate(mol.GetBonds()):
        src[k] = bond.GetBeginAtomIdx()
        dst[k] = bond.GetEndAtomIdx()
        attr[k, 0] = _BOND_TYPE_INDEX.get(bond.GetBondType(), 4)
        attr[k, 1] = _clip(int(bond.GetStereo()), 7)
        attr[k, 2] = int(bond.GetIsConjugated())
    edge_index = np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])])
    edge_attr = np.concatenate([attr, attr])
    return MolGraph(x, edge_index, edge_attr)


@dataclass(slots=True)
class FeaturizedMolecule:
    """Parse outcome plus graph; ``graph`` is None exactly when ``error`` is set."""

    input: str
    canonical: str | None
    error: str | None
    graph: MolGraph | None


def featurize_one(smiles: object, policy: ParsePolicy = ParsePolicy()) -> FeaturizedMolecule:
    parsed: ParsedMolecule = parse_smiles(smiles, policy)
    if parsed.mol is None:
        return FeaturizedMolecule(parsed.input, None, parsed.error, None)
    return FeaturizedMolecule(parsed.input, parsed.canonical, None, mol_to_graph(parsed.mol))


def _featurize_chunk(args: tuple[list[object], ParsePolicy]) -> list[FeaturizedMolecule]:
    chunk, policy = args
    return [featurize_one(s, policy) for s in chunk]


def _chunks(items: Sequence[object], size: int) -> Iterator[list[object]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def featurize_smiles(
    smiles: Sequence[object],
    policy: ParsePolicy = ParsePolicy(),
    workers: int = 0,
    chunk_size: int = 2048,
) -> list[FeaturizedMolecule]:
    """Featurize many SMILES, row-aligned with the input.

    ``workers=0`` uses all cores for inputs of at least ``PARALLEL_THRESHOLD`` molecules and the
    calling process otherwise; ``workers=1`` never starts processes.
    """
    n_workers = workers or (os.cpu_count() or 1)
    if n_workers <= 1 or len(smiles) < PARALLEL_THRESHOLD:
        return [featurize_one(s, policy) for s in smiles]
    out: list[FeaturizedMolecule] = []
    with ProcessPoolExecutor(max_workers=n_workers) as pool:
        for part in pool.map(_featurize_chunk, ((c, policy) for c in _chunks(smiles, chunk_size))):
            out.extend(part)
    return out


def collate_graphs(graphs: Sequence[MolGraph]) -> Batch:
    """Concatenate graphs into one torch-geometric ``Batch`` without per-graph ``Data`` overhead."""
    sizes = np.fromiter((g.x.shape[0] for g in graphs), dtype=np.int64, count=len(graphs))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    x = np.concatenate([g.x for g in graphs]) if graphs else np.zeros((0, len(ATOM_FEATURES)), np.int64)
    edge_index = np.concatenate(
        [g.edge_index + off for g, off in zip(graphs, offsets, strict=True)], axis=1
    ) if graphs else np.zeros((2, 0), np.int64)
    edge_attr = np.concatenate([g.edge_attr for g in graphs]) if graphs else np.zeros(
        (0, len(BOND_FEATURES)), np.int64
    )
    batch_vec = np.repeat(np.arange(len(graphs), dtype=np.int64), sizes)
    batch = Batch(
        x=torch.from_numpy(x),
        edge_index=torch.from_numpy(edge_index),
        edge_attr=torch.from_numpy(edge_attr),
        batch=torch.from_numpy(batch_vec),
    )
    batch.num_graphs = len(graphs)
    return batch
