"""Graph featurizer: RDKit molecule -> categorical atom/bond feature indices in torch-geometric form.

Every feature is a small integer index (OGB/MHG-GNN style) so the graph encoder embeds each feature
column with its own table and sums them. Column ``j`` of ``x`` takes values in ``[0, ATOM_FEATURE_DIMS[j])``;
a raw value outside that range maps to the last index ``dim - 1`` (the "other" bucket). The encoders
reserve one extra index per column for the ``[MASK]`` value used in pretraining.

Atom columns: atomic number, chirality tag, degree, formal charge (+5), total H count, radical
electrons, hybridisation, aromatic, in ring. Bond columns: bond type (single, double, triple, aromatic,
other), stereo, conjugated. ``edge_index`` holds every bond twice, first in RDKit bond order
``begin -> end`` and then reversed.

Speed. Each SMILES is parsed once (:func:`models.chemistry.parse_smiles`) for both the canonical form
and the graph. Almost all of the graph's cost is the RDKit Python wrapper created per atom and per
bond (about 1.5 us each) and the getter calls on it, so :func:`mol_to_graph` makes exactly one pass
over the atoms and one over the bonds, reads only the values that can vary, and does the rest with
numpy on whole columns:

* formal charge and radical electrons can only be non-zero on atoms that the canonical SMILES writes
  in brackets, chirality tags only come from ``@`` in the input, bond stereo only from ``/`` or ``\\``
  and dative bonds only from ``->``/``<-``; when the SMILES texts are given and lack those characters
  the columns are constants and are not read;
* bond types come from one ``GetAdjacencyMatrix(useBO=True)`` call (bond order 1, 2, 3, 1.5);
* clipping to the column ranges is one vectorised ``minimum``/``where``.

The result is array-for-array identical to reading every value from every atom and bond
(``tests/test_featurizer.py`` checks this on real molecules). Large inputs are split across worker
processes (:func:`featurize_smiles`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from rdkit import Chem

from models.chemistry import ParsedMolecule, ParsePolicy, parse_smiles

if TYPE_CHECKING:  # torch and torch-geometric are imported lazily: worker processes only need RDKit
    from torch_geometric.data import Batch, Data

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
PARALLEL_THRESHOLD = 4096  # inputs at least this long are featurized in worker processes

_ATOM_MAX = np.array(ATOM_FEATURE_DIMS, dtype=np.int64) - 1
_FORMAL_CHARGE_OFFSET = 5
_STEREO_MAX = BOND_FEATURE_DIMS[1] - 1
# Bond type from RDKit's bond-type enum value: SINGLE=1, DOUBLE=2, TRIPLE=3, AROMATIC=12, else "other".
_BOND_TYPE_BY_ENUM = np.full(64, 4, dtype=np.int64)
_BOND_TYPE_BY_ENUM[[1, 2, 3, 12]] = [0, 1, 2, 3]
# Bond type from twice the adjacency-matrix bond order: 1 -> single, 2 -> double, 3 -> triple, 1.5 ->
# aromatic; anything else (0, 2.5, 4, ...) -> "other". Only used when no dative bond can be present
# (a dative bond also has order 1).
_BOND_TYPE_BY_TWICE_ORDER = np.full(16, 4, dtype=np.int64)
_BOND_TYPE_BY_TWICE_ORDER[[2, 4, 6, 3]] = [0, 1, 2, 3]


@dataclass(slots=True)
class MolGraph:
    """Compact integer arrays for one molecule (cheap to pickle between processes)."""

    x: np.ndarray  # int64 [num_atoms, len(ATOM_FEATURES)]
    edge_index: np.ndarray  # int64 [2, 2 * num_bonds], both directions
    edge_attr: np.ndarray  # int64 [2 * num_bonds, len(BOND_FEATURES)]

    def to_data(self) -> Data:
        import torch
        from torch_geometric.data import Data

        return Data(
            x=torch.from_numpy(self.x),
            edge_index=torch.from_numpy(self.edge_index),
            edge_attr=torch.from_numpy(self.edge_attr),
            num_nodes=self.x.shape[0],
        )


@dataclass(frozen=True, slots=True)
class _Reads:
    """Which per-atom/per-bond values must be read from RDKit (the rest are known constants)."""

    charge_radicals: bool = True
    chirality: bool = True
    bond_stereo: bool = True
    dative: bool = True

    @classmethod
    def from_texts(cls, canonical: str | None, source: str | None) -> _Reads:
        """Decide from the SMILES texts; without both texts every value is read."""
        if canonical is None or source is None:
            return cls()
        both = source + canonical
        return cls(
            charge_radicals="[" in canonical or "[" in source,
            chirality="@" in both,
            bond_stereo="/" in both or "\\" in both,
            dative=">" in both or "<" in both,
        )


def _atom_rows(mol: Chem.Mol, reads: _Reads) -> list[tuple]:
    """Raw atom values in ``ATOM_FEATURES`` order, degree left 0 (it is counted from the bonds); one
    wrapper and only the needed getters per atom."""
    if reads.charge_radicals or reads.chirality:
        return [
            (a.GetAtomicNum(), a.GetChiralTag(), 0, a.GetFormalCharge() + _FORMAL_CHARGE_OFFSET,
             a.GetTotalNumHs(), a.GetNumRadicalElectrons(), a.GetHybridization(), a.GetIsAromatic(),
             a.IsInRing())
            for a in mol.GetAtoms()
        ]
    return [
        (a.GetAtomicNum(), 0, 0, _FORMAL_CHARGE_OFFSET, a.GetTotalNumHs(), 0,
         a.GetHybridization(), a.GetIsAromatic(), a.IsInRing())
        for a in mol.GetAtoms()
    ]


def _bond_rows(mol: Chem.Mol, reads: _Reads) -> np.ndarray:
    """int64 ``[num_bonds, 5]``: begin, end, bond type index, stereo (raw), conjugated."""
    if reads.dative:
        rows = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.GetBondType(),
                 b.GetStereo() if reads.bond_stereo else 0, b.GetIsConjugated()) for b in mol.GetBonds()]
        bonds = np.array(rows, dtype=np.int64).reshape(-1, 5)
        bonds[:, 2] = _BOND_TYPE_BY_ENUM[np.minimum(bonds[:, 2], len(_BOND_TYPE_BY_ENUM) - 1)]
        return bonds
    if reads.bond_stereo:
        rows = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), 0, b.GetStereo(), b.GetIsConjugated())
                for b in mol.GetBonds()]
    else:
        rows = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), 0, 0, b.GetIsConjugated()) for b in mol.GetBonds()]
    bonds = np.array(rows, dtype=np.int64).reshape(-1, 5)
    twice_order = (2.0 * Chem.GetAdjacencyMatrix(mol, useBO=True)[bonds[:, 0], bonds[:, 1]]).astype(np.int64)
    bonds[:, 2] = _BOND_TYPE_BY_TWICE_ORDER[np.minimum(twice_order, len(_BOND_TYPE_BY_TWICE_ORDER) - 1)]
    return bonds


def mol_to_graph(mol: Chem.Mol, canonical: str | None = None, source: str | None = None) -> MolGraph:
    """Featurize a sanitized RDKit molecule.

    ``canonical`` (``Chem.MolToSmiles(mol)``) and ``source`` (the SMILES ``mol`` was parsed from) let
    the featurizer skip values that those texts prove constant; give both or neither. The arrays are
    the same either way.
    """
    reads = _Reads.from_texts(canonical, source)
    x = np.array(_atom_rows(mol, reads), dtype=np.int64).reshape(-1, len(ATOM_FEATURES))
    if mol.GetNumBonds() == 0:
        bonds = np.zeros((0, 5), np.int64)
    else:
        bonds = _bond_rows(mol, reads)
        if reads.bond_stereo:
            np.minimum(bonds[:, 3], _STEREO_MAX, out=bonds[:, 3])
    ends = bonds[:, :2]
    x[:, 2] = np.bincount(ends.ravel(), minlength=x.shape[0])  # degree = bonds per atom
    if reads.charge_radicals or reads.chirality:  # raw values may be negative: those go to "other" too
        x = np.where((x < 0) | (x > _ATOM_MAX), _ATOM_MAX, x)
    else:
        np.minimum(x, _ATOM_MAX, out=x)
    edge_index = np.ascontiguousarray(np.concatenate([ends, ends[:, ::-1]]).T)
    attr = bonds[:, 2:]
    return MolGraph(x, edge_index, np.concatenate([attr, attr]))


@dataclass(slots=True)
class FeaturizedMolecule:
    """Parse outcome plus graph; ``graph`` is None exactly when ``error`` is set."""

    input: str
    canonical: str | None
    error: str | None
    graph: MolGraph | None


def featurize_one(smiles: object, policy: ParsePolicy = ParsePolicy()) -> FeaturizedMolecule:
    """Parse, canonicalise and featurize one SMILES (RDKit parses it once)."""
    parsed: ParsedMolecule = parse_smiles(smiles, policy)
    if parsed.mol is None:
        return FeaturizedMolecule(parsed.input, None, parsed.error, None)
    graph = mol_to_graph(parsed.mol, parsed.canonical, parsed.input)
    return FeaturizedMolecule(parsed.input, parsed.canonical, None, graph)


def featurize_chunk(chunk: Sequence[object], policy: ParsePolicy = ParsePolicy()) -> list[FeaturizedMolecule]:
    """Featurize a list in the calling process (the unit of work of the process pools)."""
    return [featurize_one(s, policy) for s in chunk]


@dataclass(slots=True)
class PackedGraphs:
    """Many graphs as one set of concatenated arrays: what crosses process boundaries.

    Pickling thousands of small arrays costs about 30 us per molecule; the packed form about 3 us.
    ``edge_index`` keeps each graph's own (local) node numbering.
    """

    num_atoms: np.ndarray  # int64 [n_graphs]
    num_edges: np.ndarray  # int64 [n_graphs]
    x: np.ndarray  # int64 [sum atoms, len(ATOM_FEATURES)]
    edge_index: np.ndarray  # int64 [2, sum edges]
    edge_attr: np.ndarray  # int64 [sum edges, len(BOND_FEATURES)]

    @classmethod
    def pack(cls, graphs: Sequence[MolGraph]) -> PackedGraphs:
        if not graphs:
            none = np.zeros(0, np.int64)
            return cls(none, none, np.zeros((0, len(ATOM_FEATURES)), np.int64), np.zeros((2, 0), np.int64),
                       np.zeros((0, len(BOND_FEATURES)), np.int64))
        return cls(
            num_atoms=np.fromiter((g.x.shape[0] for g in graphs), np.int64, count=len(graphs)),
            num_edges=np.fromiter((g.edge_index.shape[1] for g in graphs), np.int64, count=len(graphs)),
            x=np.concatenate([g.x for g in graphs]),
            edge_index=np.concatenate([g.edge_index for g in graphs], axis=1),
            edge_attr=np.concatenate([g.edge_attr for g in graphs]),
        )

    def unpack(self) -> list[MolGraph]:
        """The graphs again, as views into the packed arrays (no copies)."""
        atom_end = np.cumsum(self.num_atoms).tolist()
        edge_end = np.cumsum(self.num_edges).tolist()
        return [
            MolGraph(self.x[a1 - na : a1], self.edge_index[:, e1 - ne : e1], self.edge_attr[e1 - ne : e1])
            for a1, na, e1, ne in zip(atom_end, self.num_atoms.tolist(), edge_end, self.num_edges.tolist(),
                                      strict=True)
        ]


def _featurize_packed(args: tuple[list[object], ParsePolicy]) -> tuple[list, list, list, PackedGraphs]:
    """Worker side of :func:`featurize_smiles`: featurize a chunk and pack its graphs."""
    chunk, policy = args
    items = featurize_chunk(chunk, policy)
    return ([f.input for f in items], [f.canonical for f in items], [f.error for f in items],
            PackedGraphs.pack([f.graph for f in items if f.graph is not None]))


def _chunks(items: Sequence[object], size: int) -> Iterator[list[object]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def featurize_smiles(
    smiles: Sequence[object],
    policy: ParsePolicy = ParsePolicy(),
    workers: int = 0,
    chunk_size: int = 1024,
    threshold: int = PARALLEL_THRESHOLD,
) -> list[FeaturizedMolecule]:
    """Featurize many SMILES, row-aligned with the input.

    ``workers=0`` uses all cores for inputs of at least ``threshold`` molecules and the calling
    process otherwise; ``workers=1`` never starts processes. Chunks of ``chunk_size`` SMILES go to the
    workers in order (``Executor.map``), so results keep the input order; each chunk comes back as
    :class:`PackedGraphs`, which keeps the parent's unpickling cost small.
    """
    n_workers = workers or (os.cpu_count() or 1)
    if n_workers <= 1 or len(smiles) < threshold:
        return featurize_chunk(smiles, policy)
    out: list[FeaturizedMolecule] = []
    with ProcessPoolExecutor(max_workers=n_workers) as pool:
        for inputs, canonical, errors, packed in pool.map(
            _featurize_packed, ((c, policy) for c in _chunks(smiles, chunk_size))
        ):
            graphs = iter(packed.unpack())
            out.extend(FeaturizedMolecule(i, c, e, None if e is not None else next(graphs))
                       for i, c, e in zip(inputs, canonical, errors, strict=True))
    return out


def collate_graphs(graphs: Sequence[MolGraph]) -> Batch:
    """Concatenate graphs into one torch-geometric ``Batch`` without per-graph ``Data`` overhead."""
    import torch
    from torch_geometric.data import Batch

    if not graphs:
        x = np.zeros((0, len(ATOM_FEATURES)), np.int64)
        edge_index = np.zeros((2, 0), np.int64)
        edge_attr = np.zeros((0, len(BOND_FEATURES)), np.int64)
        sizes = np.zeros(0, np.int64)
    else:
        sizes = np.fromiter((g.x.shape[0] for g in graphs), dtype=np.int64, count=len(graphs))
        n_edges = np.fromiter((g.edge_index.shape[1] for g in graphs), dtype=np.int64, count=len(graphs))
        offsets = np.repeat(np.cumsum(sizes) - sizes, n_edges)  # node offset of each edge's graph
        x = np.concatenate([g.x for g in graphs])
        edge_index = np.concatenate([g.edge_index for g in graphs], axis=1) + offsets
        edge_attr = np.concatenate([g.edge_attr for g in graphs])
    batch_vec = np.repeat(np.arange(len(graphs), dtype=np.int64), sizes)
    batch = Batch(
        x=torch.from_numpy(x),
        edge_index=torch.from_numpy(edge_index),
        edge_attr=torch.from_numpy(edge_attr),
        batch=torch.from_numpy(batch_vec),
        ptr=torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)),
    )
    batch._num_graphs = len(graphs)  # what torch-geometric's own collation sets
    return batch
