"""Graph-level self-supervision targets: which functional groups (motifs) a molecule contains.

The second pretraining objective of the graph encoder predicts, from the pooled molecule embedding,
the presence of each of RDKit's 85 functional-group fragment descriptors (``rdkit.Chem.Fragments``,
the ``fr_*`` SMARTS counts: carboxylic acids, amides, nitro groups, halogens, rings of given kinds …).
This is the "semantic motif prediction" task of GROVER (Rong et al., NeurIPS 2020), which used the
same RDKit fragment set; unlike attribute masking, which only shapes node states, it trains the
readout that every downstream head reads.

Labels are computed once per corpus molecule on the CPU (parallel over processes) and stored as a
``uint8 [N, 85]`` 0/1 matrix row-aligned with the corpus. :func:`graphs_and_motifs` featurizes the
corpus and labels its motifs in one pass, from one RDKit parse of each SMILES.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, partial

import numpy as np
from rdkit import Chem

from models.chemistry import parse_smiles
from models.featurizer import MolGraph, PackedGraphs, mols_to_packed
from models.pretrain.corpus import map_chunks

CHUNK = 4096


@cache
def motif_functions() -> tuple[tuple[str, Callable], ...]:
    """``(name, fn(mol) -> count)`` for every RDKit fragment descriptor, in RDKit's fixed order."""
    from rdkit.Chem import Fragments

    return tuple((name, fn) for name, fn in Fragments.fns)


def motif_names() -> list[str]:
    return [name for name, _ in motif_functions()]


def motif_row(smiles: str) -> np.ndarray:
    """0/1 presence of every motif in ``smiles`` (all zeros when RDKit cannot parse it)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return np.zeros(len(motif_functions()), dtype=np.uint8)
    return mol_motif_row(mol)


def mol_motif_row(mol: Chem.Mol) -> np.ndarray:
    """0/1 presence of every motif in a sanitized molecule."""
    fns = motif_functions()
    row = np.zeros(len(fns), dtype=np.uint8)
    for j, (_, fn) in enumerate(fns):
        if fn(mol):
            row[j] = 1
    return row


def _chunk_labels(chunk: list[str]) -> np.ndarray:
    if not chunk:  # an empty input is one empty chunk
        return np.zeros((0, len(motif_functions())), dtype=np.uint8)
    return np.stack([motif_row(s) for s in chunk])


def motif_labels(smiles: Sequence[str], workers: int = 0, chunk_size: int = CHUNK) -> np.ndarray:
    """``uint8 [len(smiles), n_motifs]`` presence matrix, row-aligned with ``smiles``.

    Chunks of ``chunk_size`` go to ``workers`` processes (0 = all cores; order is preserved), as in
    :func:`models.pretrain.corpus.map_chunks`.
    """
    return np.concatenate(map_chunks(_chunk_labels, smiles, workers, chunk_size))


def _graphs_and_motifs_chunk(chunk: list[str], motifs: bool) -> tuple[PackedGraphs, np.ndarray | None]:
    """Graphs of the valid SMILES of ``chunk`` and, with ``motifs``, their motif rows (in the same order).

    Each SMILES is parsed once (:func:`models.chemistry.parse_smiles`, as the featurizer does) and the
    molecule serves both. One cut out of a multi-fragment input (salt stripping) carries no ring
    information, so its motifs are read from its canonical SMILES, parsed again.
    """
    mols: list[Chem.Mol] = []
    canonical: list[str] = []
    sources: list[str] = []
    for smiles in chunk:
        parsed = parse_smiles(smiles)
        if parsed.mol is not None and parsed.canonical is not None:
            mols.append(parsed.mol)
            canonical.append(parsed.canonical)
            sources.append(parsed.input)
    labels = None
    if motifs:
        labels = np.zeros((len(mols), len(motif_functions())), dtype=np.uint8)
        for i, (mol, text, source) in enumerate(zip(mols, canonical, sources, strict=True)):
            labels[i] = mol_motif_row(mol) if "." not in source else motif_row(text)
    return mols_to_packed(mols, canonical, sources), labels


def graphs_and_motifs(
    smiles: Sequence[str], workers: int = 0, motifs: bool = True, chunk_size: int = CHUNK
) -> tuple[list[MolGraph], np.ndarray | None]:
    """Graphs of the valid entries of ``smiles`` (in order; invalid ones are dropped) and, with ``motifs``,
    the row-aligned ``uint8 [n_valid, n_motifs]`` presence matrix. The same graphs and labels as
    ``featurize_smiles`` followed by :func:`motif_labels` of the canonical SMILES, with one parse per
    molecule instead of two. Chunks of ``chunk_size`` go to ``workers`` processes (0 = all cores; order is
    preserved), as in :func:`models.pretrain.corpus.map_chunks`.
    """
    parts = map_chunks(partial(_graphs_and_motifs_chunk, motifs=motifs), smiles, workers, chunk_size)
    graphs = [graph for packed, _ in parts for graph in packed.unpack()]
    labels = [rows for _, rows in parts if rows is not None]
    return graphs, np.concatenate(labels) if motifs else None
