"""MHG-GNN-style graph encoder: GIN with edge embeddings (GINE) over RDKit molecular graphs.

Node input ``h^0_v = sum_j E_j[x_vj]`` (one embedding table per categorical atom feature). Layer ``l``:

    h^l_v = MLP_l( (1 + eps_l) h^{l-1}_v + sum_{u in N(v)} ReLU(h^{l-1}_u + B_l(e_uv)) )

(Xu et al., 2019; Hu et al., 2020, with ``B_l`` the summed bond-feature embeddings of layer ``l``),
followed by BatchNorm, ReLU (not on the last layer) and dropout. The molecule embedding is the
concatenation of the sum-pooled node states of every layer, the input layer included, so its size is
``(num_layers + 1) * hidden_size`` (as in MHG-GNN, Kishimoto et al., 2023).

:class:`GraphEncoderForPretraining` adds the self-supervised heads: masked atom attributes (every
atom feature column) and masked bond attributes (bond type, stereo, conjugation of bonds touching a
masked atom), after Hu et al. (2020) "Strategies for Pre-training Graph Neural Networks", and,
optionally, a graph-level head predicting from the pooled embedding which functional groups the
molecule contains (``models.pretrain.motifs``; GROVER's motif prediction, Rong et al., 2020).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch_geometric.nn import GINEConv, global_add_pool

from models.checkpoint import weights_digest, write_meta
from models.featurizer import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class GraphEncoderConfig:
    hidden_size: int = 300
    num_layers: int = 5
    dropout: float = 0.1
    atom_feature_dims: tuple[int, ...] = ATOM_FEATURE_DIMS
    bond_feature_dims: tuple[int, ...] = BOND_FEATURE_DIMS

    @property
    def embedding_size(self) -> int:
        return (self.num_layers + 1) * self.hidden_size

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> GraphEncoderConfig:
        raw = json.loads(text)
        raw["atom_feature_dims"] = tuple(raw["atom_feature_dims"])
        raw["bond_feature_dims"] = tuple(raw["bond_feature_dims"])
        return cls(**raw)


class FeatureEmbedding(nn.Module):
    """Sum of one embedding table per categorical column; index ``dim`` of each column is ``[MASK]``."""

    def __init__(self, dims: tuple[int, ...], hidden: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(d + 1, hidden) for d in dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for table in self.tables:
            nn.init.xavier_uniform_(table.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tables[0](x[:, 0])
        for j in range(1, len(self.tables)):
            out = out + self.tables[j](x[:, j])
        return out


class GraphEncoder(nn.Module):
    """GINE stack whose :meth:`embed` gives ``(num_layers + 1) * hidden_size`` floats per molecule."""

    def __init__(self, config: GraphEncoderConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.atom_embedding = FeatureEmbedding(config.atom_feature_dims, h)
        self.bond_embeddings = nn.ModuleList(
            FeatureEmbedding(config.bond_feature_dims, h) for _ in range(config.num_layers)
        )
        self.convs = nn.ModuleList(
            GINEConv(
                nn.Sequential(nn.Linear(h, 2 * h), nn.BatchNorm1d(2 * h), nn.ReLU(), nn.Linear(2 * h, h)),
                train_eps=True,
            )
            for _ in range(config.num_layers)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(h) for _ in range(config.num_layers))

    @property
    def embedding_size(self) -> int:
        return self.config.embedding_size

    def node_states(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor
    ) -> list[torch.Tensor]:
        """Node states of every layer, input layer first."""
        h = self.atom_embedding(x)
        states = [h]
        last = self.config.num_layers - 1
        for layer, (conv, norm, bond_emb) in enumerate(
            zip(self.convs, self.norms, self.bond_embeddings, strict=True)
        ):
            h = norm(conv(h, edge_index, bond_emb(edge_attr)))
            if layer != last:
                h = F.relu(h)
            h = F.dropout(h, p=self.config.dropout, training=self.training)
            states.append(h)
        return states

    def readout(self, states: list[torch.Tensor], batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        return torch.cat([global_add_pool(s.float(), batch, size=num_graphs) for s in states], dim=-1)

    def embed(self, batch) -> torch.Tensor:  # batch: torch_geometric Batch
        states = self.node_states(batch.x, batch.edge_index, batch.edge_attr)
        return self.readout(states, batch.batch, int(batch.num_graphs))

    forward = embed

    # --- directory checkpoints ---
    def save(
        self,
        directory: str | Path,
        name: str = "mhg-gin",
        extra_meta: dict | None = None,
        dtype: torch.dtype = torch.float16,
    ) -> str:
        """Write config, fp16 safetensors weights and version; returns the version string."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(self.config.to_json() + "\n")
        state = {k: v.detach().to("cpu") for k, v in self.state_dict().items()}
        state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
        save_file(state, str(out / WEIGHTS_FILE))
        version = f"{name}-{weights_digest(state)}"
        write_meta(out, name=name, kind="graph", version=version, extra=extra_meta)
        return version

    @classmethod
    def load(cls, directory: str | Path) -> GraphEncoder:
        src = Path(directory)
        config = GraphEncoderConfig.from_json((src / CONFIG_FILE).read_text())
        model = cls(config)
        state = load_file(str(src / WEIGHTS_FILE))
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
        model.load_state_dict(state)
        return model.eval()


class GraphEncoderForPretraining(nn.Module):
    """Encoder plus linear heads predicting masked atom columns, the attributes of masked bonds and
    (when ``num_motifs > 0``) the motif-presence vector from the molecule embedding.

    The motif head is ``Linear(LayerNorm(readout))``: linear, so the objective shapes the very
    embedding that downstream heads read, and normalised, because sum pooling scales with size.
    """

    def __init__(self, config: GraphEncoderConfig, num_motifs: int = 0, motif_weight: float = 1.0) -> None:
        super().__init__()
        self.encoder = GraphEncoder(config)
        h = config.hidden_size
        self.atom_heads = nn.ModuleList(nn.Linear(h, d) for d in config.atom_feature_dims)
        self.bond_heads = nn.ModuleList(nn.Linear(h, d) for d in config.bond_feature_dims)
        self.motif_weight = motif_weight
        self.motif_head = (
            nn.Sequential(nn.LayerNorm(config.embedding_size), nn.Linear(config.embedding_size, num_motifs))
            if num_motifs > 0 else None
        )

    def forward(self, x, edge_index, edge_attr, atom_mask, bond_mask, x_true, edge_attr_true,
                batch: torch.Tensor | None = None, motifs: torch.Tensor | None = None) -> dict:
        """``x``/``edge_attr`` already have masked rows replaced by the ``[MASK]`` index.

        ``batch`` (graph index of every atom) and ``motifs`` (``[num_graphs, num_motifs]`` 0/1) enable
        the motif loss. Returns the total loss, each part and accuracies on the first column (atom
        type, bond type) and over all motif bits.
        """
        states = self.encoder.node_states(x, edge_index, edge_attr)
        h = states[-1]
        h_atoms = h[atom_mask]
        atom_loss = sum(
            F.cross_entropy(head(h_atoms).float(), x_true[atom_mask, j])
            for j, head in enumerate(self.atom_heads)
        ) / len(self.atom_heads)
        src, dst = edge_index[:, bond_mask]
        h_bonds = h[src] + h[dst]
        if h_bonds.shape[0]:
            bond_loss = sum(
                F.cross_entropy(head(h_bonds).float(), edge_attr_true[bond_mask, j])
                for j, head in enumerate(self.bond_heads)
            ) / len(self.bond_heads)
            bond_acc = (self.bond_heads[0](h_bonds).argmax(-1) == edge_attr_true[bond_mask, 0]).float().mean()
        else:
            bond_loss = h.sum() * 0.0
            bond_acc = torch.tensor(1.0, device=h.device)
        atom_acc = (self.atom_heads[0](h_atoms).argmax(-1) == x_true[atom_mask, 0]).float().mean()
        out = {
            "loss": atom_loss + bond_loss,
            "atom_loss": atom_loss,
            "bond_loss": bond_loss,
            "atom_acc": atom_acc,
            "bond_acc": bond_acc,
        }
        if self.motif_head is not None and motifs is not None and batch is not None:
            pooled = self.encoder.readout(states, batch, motifs.shape[0])
            logits = self.motif_head(pooled).float()
            target = motifs.float()
            motif_loss = F.binary_cross_entropy_with_logits(logits, target)
            out["loss"] = out["loss"] + self.motif_weight * motif_loss
            out["motif_loss"] = motif_loss
            out["motif_acc"] = ((logits > 0).float() == target).float().mean()
        return out
