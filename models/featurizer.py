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
bond (about 1 us each) and the getter calls on it, so the featurizer makes exactly one pass over
the atoms and one over the bonds, reads only the values that can vary, and does everything else with
numpy on whole columns of a whole chunk of molecules at once (:class:`_ChunkRows`), so the fixed cost
of a numpy call (about 1 us) is paid per chunk, not per molecule:

* atoms and bonds are fetched by index (``GetAtomWithIdx``): RDKit's ``GetAtoms()``/``GetBonds()``
  are pure-Python iterators costing about 1 us more per item;
* the values go into two flat lists of numbers per chunk (no per-atom tuples kept alive, which the
  garbage collector would rescan);

* formal charge and radical electrons can only be non-zero on atoms that the canonical SMILES writes
  in brackets, chirality tags only come from ``@`` in the input, bond stereo only from ``/`` or ``\\``
  and dative bonds only from ``->``/``<-``; when the SMILES texts are given and lack those characters
  the columns are constants and are not read;
* bond types come from ``GetBondTypeAsDouble`` (bond order 1, 2, 3, 1.5; a float getter costs far
  less than the ``GetBondType`` enum), looked up chunk-wide; the enum is read only when a dative bond
  (also order 1) is possible;
* raw values go straight from the getters into one flat ``np.fromiter`` per chunk (no per-molecule
  ``np.array`` of tuples, which converts RDKit's enum objects slowly); clipping to the column ranges,
  degrees (``bincount`` over the bond ends) and the two-direction edge order are vectorised per chunk.

The result is array-for-array identical to reading every value from every atom and bond
(``tests/test_featurizer.py`` checks this on real molecules). Large inputs are split across worker
processes (:func:`featurize_smiles`); :func:`featurize_packed` is the per-chunk entry point.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
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
# Bond type from twice the bond order (GetBondTypeAsDouble): 1 -> single, 2 -> double, 3 -> triple, 1.5 ->
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


# Bumped when the graph arrays of some molecule change; part of the graph view's embedding-cache key.
# 2: tetrahedral centres are read from the molecule parsed from its canonical SMILES
#    (_in_canonical_order).
FEATURIZER_REVISION = 2


def _in_canonical_order(mol: Chem.Mol, canonical: str | None) -> Chem.Mol:
    """``mol`` with its atoms in canonical order when it has tetrahedral centres.

    RDKit's chiral tag (CW / CCW) is relative to the order of an atom's bonds, which follows the input
    text: two writings of one molecule gave different tags, graphs and embeddings. Parsed from its
    canonical SMILES, every writing gives the same tags. Only molecules whose SMILES has '@' are
    re-parsed (about 50 us each); the rest keep their parse.
    """
    if canonical is None or "@" not in canonical:
        return mol
    again = Chem.MolFromSmiles(canonical)
    return again if again is not None else mol


def mols_to_packed(mols: Sequence[Chem.Mol], canonical: Sequence[str | None] | None = None,
                   sources: Sequence[str | None] | None = None) -> PackedGraphs:
    """Featurize many sanitized molecules into one :class:`PackedGraphs` (the fast path).

    ``canonical[i]`` (``Chem.MolToSmiles(mols[i])``) and ``sources[i]`` (the SMILES it was parsed
    from) let the featurizer skip values that those texts prove constant; give both or neither. With
    ``canonical``, molecules with tetrahedral centres are featurized in canonical atom order.
    """
    rows = _ChunkRows()
    for i, mol in enumerate(mols):
        texts = (None, None) if canonical is None or sources is None else (canonical[i], sources[i])
        rows.add(mol, *texts)
    return rows.pack()


def mol_to_graph(mol: Chem.Mol, canonical: str | None = None, source: str | None = None) -> MolGraph:
    """Featurize one sanitized RDKit molecule.

    ``canonical`` (``Chem.MolToSmiles(mol)``) and ``source`` (the SMILES ``mol`` was parsed from) let
    the featurizer skip values that those texts prove constant; give both or neither. The arrays are
    the same either way. For many molecules :func:`mols_to_packed` is faster.
    """
    return mols_to_packed([mol], [canonical], [source]).unpack()[0]


@dataclass(slots=True)
class FeaturizedMolecule:
    """Parse outcome plus graph; ``graph`` is None exactly when ``error`` is set."""

    input: str
    canonical: str | None
    error: str | None
    graph: MolGraph | None


def featurize_packed(
    chunk: Sequence[object], policy: ParsePolicy = ParsePolicy(), graphs: bool = True
) -> tuple[list[str | None], list[str | None], PackedGraphs]:
    """Parse, canonicalise and featurize a chunk: canonical SMILES and errors per input, and the valid
    rows' graphs (in row order) as one :class:`PackedGraphs`. Each SMILES is parsed once.
    ``graphs=False`` only parses (the packed graphs are then empty)."""
    canonical: list[str | None] = []
    errors: list[str | None] = []
    rows = _ChunkRows()
    for raw in chunk:
        parsed: ParsedMolecule = parse_smiles(raw, policy)
        canonical.append(parsed.canonical)
        errors.append(parsed.error)
        if graphs and parsed.mol is not None:
            rows.add(parsed.mol, parsed.canonical, parsed.input)
    return canonical, errors, rows.pack()


def featurize_one(smiles: object, policy: ParsePolicy = ParsePolicy()) -> FeaturizedMolecule:
    """Parse, canonicalise and featurize one SMILES (RDKit parses it once)."""
    return featurize_chunk([smiles], policy)[0]


def featurize_chunk(chunk: Sequence[object], policy: ParsePolicy = ParsePolicy()) -> list[FeaturizedMolecule]:
    """Featurize a list in the calling process, one :class:`FeaturizedMolecule` per input."""
    canonical, errors, packed = featurize_packed(chunk, policy)
    return _unpacked(_inputs(chunk), canonical, errors, packed)


def _inputs(chunk: Sequence[object]) -> list[str]:
    return [s if isinstance(s, str) else str(s) for s in chunk]


def _unpacked(inputs: list[str], canonical: list[str | None], errors: list[str | None],
              packed: PackedGraphs) -> list[FeaturizedMolecule]:
    graphs = iter(packed.unpack())
    return [FeaturizedMolecule(i, c, e, None if e is not None else next(graphs))
            for i, c, e in zip(inputs, canonical, errors, strict=True)]


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


@dataclass(slots=True)
class _ChunkRows:
    """Raw per-atom/per-bond values of many molecules, collected in one pass before any numpy work."""

    # flat values, ATOM_FEATURES order per atom (degree 0, charge offset added)
    atoms: list[int] = field(default_factory=list)
    # flat values per bond: begin, end, bond-type code, stereo (raw), conjugated; the code is twice the
    # bond order (>= 0) or, when dative bonds are possible, -1 - the bond-type enum value
    bonds: list[float] = field(default_factory=list)
    num_atoms: list[int] = field(default_factory=list)
    num_bonds: list[int] = field(default_factory=list)
    any_signed: bool = False  # some atom values were read that can be negative (charge, chirality)
    any_dative: bool = False  # some bond-type codes are enum values

    def add(self, mol: Chem.Mol, canonical: str | None, source: str | None) -> None:
        """One molecule; its texts (both or neither) decide what is read (:class:`_Reads`) and, with
        ``canonical``, whether it is featurized in canonical atom order (:func:`_in_canonical_order`)."""
        reads = _Reads.from_texts(canonical, source)
        mol = _in_canonical_order(mol, canonical)
        # Atoms and bonds by index: RDKit's ``GetAtoms()``/``GetBonds()`` are pure-Python iterators
        # (several Python calls and two extra RDKit calls per item), about 1 us per item more.
        n_atoms, n_bonds = mol.GetNumAtoms(), mol.GetNumBonds()
        atom, bond = mol.GetAtomWithIdx, mol.GetBondWithIdx
        atoms = self.atoms  # one flat list of ints: no per-atom tuple outlives this loop
        if reads.charge_radicals or reads.chirality:
            self.any_signed = True
            for i in range(n_atoms):
                a = atom(i)
                atoms += (a.GetAtomicNum(), a.GetChiralTag(), 0, a.GetFormalCharge() + _FORMAL_CHARGE_OFFSET,
                          a.GetTotalNumHs(), a.GetNumRadicalElectrons(), a.GetHybridization(),
                          a.GetIsAromatic(), a.IsInRing())
        else:
            for i in range(n_atoms):
                a = atom(i)
                atoms += (a.GetAtomicNum(), 0, 0, _FORMAL_CHARGE_OFFSET, a.GetTotalNumHs(), 0,
                          a.GetHybridization(), a.GetIsAromatic(), a.IsInRing())
        bonds = self.bonds
        if reads.dative:  # bond-type enum read, stored as -1 - value (a dative bond's order is 1, too)
            self.any_dative = True
            stereo = reads.bond_stereo
            for i in range(n_bonds):
                b = bond(i)
                bonds += (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), -1 - b.GetBondType(),
                          b.GetStereo() if stereo else 0, b.GetIsConjugated())
        elif reads.bond_stereo:  # else twice the bond order (1, 2, 3, 1.5 -> 2, 4, 6, 3)
            for i in range(n_bonds):
                b = bond(i)
                bonds += (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.GetBondTypeAsDouble(), b.GetStereo(),
                          b.GetIsConjugated())
        else:
            for i in range(n_bonds):
                b = bond(i)
                bonds += (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.GetBondTypeAsDouble(), 0,
                          b.GetIsConjugated())
        self.num_atoms.append(n_atoms)
        self.num_bonds.append(n_bonds)

    def pack(self) -> PackedGraphs:
        """All molecules' arrays at once: clipping, bond types, degrees and edge order vectorised."""
        n_atoms = np.array(self.num_atoms, dtype=np.int64)
        n_bonds = np.array(self.num_bonds, dtype=np.int64)
        x = np.fromiter(self.atoms, np.int64, len(self.atoms)).reshape(-1, len(ATOM_FEATURES))
        raw = np.fromiter(self.bonds, np.float64, len(self.bonds)).reshape(-1, 5)
        bonds = raw.astype(np.int64)
        # degree = bonds per atom, counted on chunk-wide atom numbers
        ends = bonds[:, :2] + np.repeat(np.cumsum(n_atoms) - n_atoms, n_bonds)[:, None]
        x[:, 2] = np.bincount(ends.ravel(), minlength=x.shape[0])
        if self.any_signed:  # raw values may be negative: those go to "other" too
            x = np.where((x < 0) | (x > _ATOM_MAX), _ATOM_MAX, x)
        else:
            np.minimum(x, _ATOM_MAX, out=x)
        twice = np.minimum(2.0 * raw[:, 2], len(_BOND_TYPE_BY_TWICE_ORDER) - 1).astype(np.int64)
        if self.any_dative:
            enum = np.clip(-1 - bonds[:, 2], 0, len(_BOND_TYPE_BY_ENUM) - 1)
            bonds[:, 2] = np.where(raw[:, 2] < 0, _BOND_TYPE_BY_ENUM[enum],
                                   _BOND_TYPE_BY_TWICE_ORDER[np.maximum(twice, 0)])
        else:
            bonds[:, 2] = _BOND_TYPE_BY_TWICE_ORDER[twice]
        np.minimum(bonds[:, 3], _STEREO_MAX, out=bonds[:, 3])
        # each graph's edges: its bonds begin -> end, then the same bonds end -> begin
        first = np.arange(len(bonds)) + np.repeat(np.cumsum(n_bonds) - n_bonds, n_bonds)
        second = first + np.repeat(n_bonds, n_bonds)
        edge_index = np.empty((2, 2 * len(bonds)), dtype=np.int64)
        edge_index[:, first] = bonds[:, :2].T
        edge_index[:, second] = bonds[:, 1::-1].T
        edge_attr = np.empty((2 * len(bonds), len(BOND_FEATURES)), dtype=np.int64)
        edge_attr[first] = edge_attr[second] = bonds[:, 2:]
        return PackedGraphs(n_atoms, 2 * n_bonds, x, edge_index, edge_attr)


def _featurize_packed(args: tuple[list[object], ParsePolicy]) -> tuple[list, list, PackedGraphs]:
    """Worker side of :func:`featurize_smiles`."""
    chunk, policy = args
    return featurize_packed(chunk, policy)


def _chunks(items: Sequence[object], size: int) -> Iterator[list[object]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def featurize_smiles(
    smiles: Sequence[object],
    policy: ParsePolicy = ParsePolicy(),
    workers: int = 0,
    chunk_size: int = 1024,
    threshold: int = PARALLEL_THRESHOLD,
    pool: Executor | None = None,
) -> list[FeaturizedMolecule]:
    """Featurize many SMILES, row-aligned with the input.

    ``workers=0`` uses all cores for inputs of at least ``threshold`` molecules and the calling
    process otherwise; ``workers=1`` never starts processes. Chunks of ``chunk_size`` SMILES go to the
    workers in order (``Executor.map``), so results keep the input order; each chunk comes back as
    :class:`PackedGraphs`, which keeps the parent's unpickling cost small. ``pool``: a process pool to
    use (and leave running) instead of starting one for this call; forking a pool from a parent that
    holds models costs about a second on a 16-core host (:class:`models.embedder.Embedder` keeps one).
    """
    n_workers = workers or (os.cpu_count() or 1)
    if n_workers <= 1 or len(smiles) < threshold:
        return featurize_chunk(smiles, policy)
    with contextlib.nullcontext(pool) if pool is not None else ProcessPoolExecutor(n_workers) as running:
        chunks = list(_chunks(smiles, chunk_size))
        out: list[FeaturizedMolecule] = []
        for chunk, (canonical, errors, packed) in zip(
            chunks, running.map(_featurize_packed, ((c, policy) for c in chunks)), strict=True
        ):
            out.extend(_unpacked(_inputs(chunk), canonical, errors, packed))
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


@dataclass(slots=True)
class CollatedGraphs:
    """A batch of graphs in compact dtypes, ready to copy to a device and widen there.

    ``x``/``edge_attr`` are uint8 (every feature index is below 256), ``edge_index`` is int32 and uses
    batch-wide node numbers; :meth:`to_batch` gives the torch-geometric ``Batch`` of :func:`collate_graphs`.
    """

    x: np.ndarray  # uint8 [sum atoms, len(ATOM_FEATURES)]
    edge_index: np.ndarray  # int32 [2, sum edges]
    edge_attr: np.ndarray  # uint8 [sum edges, len(BOND_FEATURES)]
    num_atoms: np.ndarray  # int64 [n_graphs]

    def to_batch(self) -> Batch:
        import torch
        from torch_geometric.data import Batch

        sizes = torch.from_numpy(self.num_atoms)
        batch = Batch(
            x=torch.from_numpy(self.x).long(),
            edge_index=torch.from_numpy(self.edge_index).long(),
            edge_attr=torch.from_numpy(self.edge_attr).long(),
            batch=torch.repeat_interleave(torch.arange(len(sizes)), sizes),
            ptr=torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(sizes, 0)]),
        )
        batch._num_graphs = len(sizes)
        return batch


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each pair, without a Python loop."""
    shift = starts - (np.cumsum(lengths) - lengths)
    return np.repeat(shift, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def collate_packed(packed: PackedGraphs, idx: np.ndarray) -> CollatedGraphs:
    """Graphs ``idx`` of ``packed`` (in that order) as one compact batch, vectorised."""
    atom_start = np.cumsum(packed.num_atoms) - packed.num_atoms
    edge_start = np.cumsum(packed.num_edges) - packed.num_edges
    n_atoms, n_edges = packed.num_atoms[idx], packed.num_edges[idx]
    atoms = _ranges(atom_start[idx], n_atoms)
    edges = _ranges(edge_start[idx], n_edges)
    node_offset = np.repeat(np.cumsum(n_atoms) - n_atoms, n_edges)
    return CollatedGraphs(
        x=packed.x[atoms].astype(np.uint8),
        edge_index=(packed.edge_index[:, edges] + node_offset).astype(np.int32),
        edge_attr=packed.edge_attr[edges].astype(np.uint8),
        num_atoms=n_atoms,
    )
