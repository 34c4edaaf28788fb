"""Graph-level self-supervision targets: which functional groups (motifs) a molecule contains.

The second pretraining objective of the graph encoder predicts, from the pooled molecule embedding,
the presence of each of RDKit's 85 functional-group fragment descriptors (``rdkit.Chem.Fragments``,
the ``fr_*`` SMARTS counts: carboxylic acids, amides, nitro groups, halogens, rings of given kinds …).
This is the "semantic motif prediction" task of GROVER (Rong et al., NeurIPS 2020), which used the
same RDKit fragment set; unlike attribute masking, which only shapes node states, it trains the
readout that every downstream head reads.

Labels are computed once per corpus molecule on the CPU (parallel over processes) and stored as a
``uint8 [N, 85]`` 0/1 matrix row-aligned with the corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import numpy as np

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
    from rdkit import Chem

    fns = motif_functions()
    row = np.zeros(len(fns), dtype=np.uint8)
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return row
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
