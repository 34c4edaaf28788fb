"""Self-supervised pretraining of the graph encoder by attribute masking (Hu et al., 2020).

Each atom is masked with probability ``p = 0.15`` (at least one atom per batch): all of its feature
columns are set to the ``[MASK]`` index (``ATOM_FEATURE_DIMS[j]`` for column ``j``), and so are the
attribute columns of every bond touching a masked atom. The encoder's last-layer node states then
predict the original atom columns (mean cross-entropy over the columns) and, from ``h_u + h_v``, the
original bond columns of the masked bonds (:class:`models.graph_encoder.GraphEncoderForPretraining`).

The featurized corpus lives on the training device as flat CSR-style arrays (atoms and directed bonds
of all molecules back to back, with per-molecule offsets); a batch is assembled by index arithmetic
on the device, so no loader processes are needed. Optional motif labels (``models.pretrain.motifs``)
live beside it as a ``uint8 [N, n_motifs]`` matrix and add the graph-level motif loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.featurizer import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS, MolGraph
from models.graph_encoder import GraphEncoderConfig, GraphEncoderForPretraining

MASK_PROB = 0.15


@dataclass
class GraphCorpus:
    """All molecules as flat arrays: ``x [A, 9] uint8``, ``edge_local [2, E] int16`` (atom indices
    within the molecule), ``edge_attr [E, 3] uint8`` and offsets ``atom_ptr``/``edge_ptr [N + 1]``."""

    x: torch.Tensor
    atom_ptr: torch.Tensor
    edge_local: torch.Tensor
    edge_attr: torch.Tensor
    edge_ptr: torch.Tensor

    def __len__(self) -> int:
        return self.atom_ptr.shape[0] - 1

    def to(self, device: torch.device) -> GraphCorpus:
        return GraphCorpus(*(t.to(device) for t in (self.x, self.atom_ptr, self.edge_local, self.edge_attr,
                                                    self.edge_ptr)))

    @classmethod
    def from_graphs(cls, graphs: Sequence[MolGraph]) -> GraphCorpus:
        atoms = np.fromiter((g.x.shape[0] for g in graphs), dtype=np.int64, count=len(graphs))
        edges = np.fromiter((g.edge_index.shape[1] for g in graphs), dtype=np.int64, count=len(graphs))
        if atoms.size and atoms.max() > np.iinfo(np.int16).max:
            raise ValueError("a molecule has more atoms than int16 local indices can address")
        return cls(
            x=torch.from_numpy(np.concatenate([g.x for g in graphs]).astype(np.uint8)),
            atom_ptr=torch.from_numpy(np.concatenate([[0], np.cumsum(atoms)])),
            edge_local=torch.from_numpy(
                np.concatenate([g.edge_index for g in graphs], axis=1).astype(np.int16)),
            edge_attr=torch.from_numpy(np.concatenate([g.edge_attr for g in graphs]).astype(np.uint8)),
            edge_ptr=torch.from_numpy(np.concatenate([[0], np.cumsum(edges)])),
        )

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, edge_index, edge_attr, batch)`` (int64) of the molecules ``indices``, in that order."""
        device = indices.device
        graph_ids = torch.arange(indices.shape[0], device=device)
        n_atoms = self.atom_ptr[indices + 1] - self.atom_ptr[indices]
        n_edges = self.edge_ptr[indices + 1] - self.edge_ptr[indices]
        atom_batch = torch.repeat_interleave(graph_ids, n_atoms)
        edge_batch = torch.repeat_interleave(graph_ids, n_edges)
        new_atom_start = torch.cumsum(n_atoms, 0) - n_atoms
        new_edge_start = torch.cumsum(n_edges, 0) - n_edges
        atom_src = torch.arange(atom_batch.shape[0], device=device) - new_atom_start[atom_batch] \
            + self.atom_ptr[indices][atom_batch]
        edge_src = torch.arange(edge_batch.shape[0], device=device) - new_edge_start[edge_batch] \
            + self.edge_ptr[indices][edge_batch]
        x = self.x[atom_src].long()
        edge_index = self.edge_local[:, edge_src].long() + new_atom_start[edge_batch][None, :]
        edge_attr = self.edge_attr[edge_src].long()
        return x, edge_index, edge_attr, atom_batch


def mask_graph(
    x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor, generator: torch.Generator,
    mask_prob: float = MASK_PROB,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(masked x, masked edge_attr, atom_mask, bond_mask)`` as described in the module docstring."""
    atom_mask = torch.rand(x.shape[0], generator=generator, device=x.device) < mask_prob
    if not bool(atom_mask.any()):
        atom_mask[torch.randint(x.shape[0], (1,), generator=generator, device=x.device)] = True
    bond_mask = atom_mask[edge_index[0]] | atom_mask[edge_index[1]]
    atom_fill = torch.tensor(ATOM_FEATURE_DIMS, device=x.device)
    bond_fill = torch.tensor(BOND_FEATURE_DIMS, device=x.device)
    x_masked = torch.where(atom_mask[:, None], atom_fill[None, :], x)
    edge_masked = torch.where(bond_mask[:, None], bond_fill[None, :], edge_attr)
    return x_masked, edge_masked, atom_mask, bond_mask


class GraphMaskingTask:
    """:class:`~models.pretrain.trainer.PretrainTask` for the graph encoder."""

    def __init__(self, config: GraphEncoderConfig, corpus: GraphCorpus, device: torch.device,
                 name: str = "mhg-gin", motifs: torch.Tensor | None = None) -> None:
        if motifs is not None and motifs.shape[0] != len(corpus):
            raise ValueError(f"motif labels have {motifs.shape[0]} rows for {len(corpus)} molecules")
        num_motifs = 0 if motifs is None else int(motifs.shape[1])
        self.model = GraphEncoderForPretraining(config, num_motifs=num_motifs).to(device)
        self.corpus = corpus.to(device)
        self.motifs = None if motifs is None else motifs.to(device)
        self.generator = torch.Generator(device=device)
        self.name = name

    @property
    def num_examples(self) -> int:
        return len(self.corpus)

    def loss(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        x, edge_index, edge_attr, batch = self.corpus.batch(indices)
        x_masked, edge_masked, atom_mask, bond_mask = mask_graph(x, edge_index, edge_attr, self.generator)
        motifs = None if self.motifs is None else self.motifs[indices]
        return self.model(x_masked, edge_index, edge_masked, atom_mask, bond_mask, x, edge_attr,
                          batch=batch, motifs=motifs)

    def export(self, directory: Path, meta: dict) -> str:
        encoder = self.model.encoder
        was_training = encoder.training
        version = encoder.save(directory, name=self.name, extra_meta=meta)
        encoder.train(was_training)
        return version
