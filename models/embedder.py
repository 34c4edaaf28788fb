"""Batch embedding of molecules in the SMILES view, the graph view and the fused (concatenated) view.

>>> emb = Embedder()                                     # the built-in pretrained encoders
>>> out = emb.embed(["CCO", "not-a-smiles"], views=("smiles", "graph", "fused"))
>>> out.errors[1], np.isnan(out.vectors["fused"][1]).all()
('unparsable SMILES (RDKit could not parse or sanitize it)', True)

Rows are aligned with the input: an invalid SMILES yields a NaN row plus its reason. Each SMILES is
parsed once; the encoders see canonical SMILES, so equivalent inputs give identical vectors. Vectors
are looked up in an optional :class:`~models.embedding_cache.VectorCache` first, and only missing
ones are computed, in length-sorted batches, on CUDA with bf16 autocast when present.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.chemistry import ParsePolicy, parse_smiles
from models.embedding_cache import VectorCache, cache_key
from models.featurizer import (
    FEATURIZER_REVISION,
    PARALLEL_THRESHOLD,
    MolGraph,
    collate_graphs,
    featurize_smiles,
    mols_to_packed,
)
from models.graph_encoder import GraphEncoder
from models.smiles_encoder import MolFormerModel, load_smiles_encoder

log = logging.getLogger(__name__)

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_SMILES_ENCODER = CHECKPOINTS / "smiles"
DEFAULT_GRAPH_ENCODER = CHECKPOINTS / "graph"
VIEWS = ("smiles", "graph", "fused")
ENCODER_VIEWS = ("smiles", "graph")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def device_description(device: torch.device) -> dict[str, str]:
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device)}
    return {"type": "cpu", "name": "cpu"}


def validate_views(views: Sequence[str]) -> tuple[str, ...]:
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ValueError(f"unknown view(s) {unknown}; choose from {list(VIEWS)}")
    if not views:
        raise ValueError("at least one view is required")
    return tuple(dict.fromkeys(views))


@dataclass
class EmbeddingBatch:
    """Row-aligned result of :meth:`Embedder.embed`."""

    inputs: list[str]
    canonical: list[str | None]
    errors: list[str | None]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # view -> float32 [N, dim]

    @property
    def valid(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


class SmilesView:
    """The SMILES transformer with its tokenizer; embeds canonical SMILES."""

    def __init__(self, model: MolFormerModel, tokenizer, version: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.version = version
        self.dim = model.config.hidden_size
        self.max_length = model.config.max_position_embeddings

    @classmethod
    def load(cls, directory: str | Path) -> SmilesView:
        model, tokenizer, meta = load_smiles_encoder(directory)
        return cls(model, tokenizer, meta.get("version") or f"molformer-{Path(directory).name}")

    @torch.inference_mode()
    def encode(self, smiles: Sequence[str], device: torch.device, batch_size: int) -> np.ndarray:
        out = np.empty((len(smiles), self.dim), dtype=np.float32)
        if not smiles:
            return out
        order = np.argsort([len(s) for s in smiles], kind="stable")  # length buckets
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer(
                [smiles[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
                return_token_type_ids=False,
            )
            ids = enc["input_ids"].to(device, non_blocking=True)
            mask = enc["attention_mask"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                vec = self.model.embed(ids, mask)
            out[idx] = vec.float().cpu().numpy()
        return out


class GraphView:
    """The GINE graph encoder; embeds featurized molecular graphs."""

    def __init__(self, model: GraphEncoder, version: str) -> None:
        self.model = model.eval()
        self.version = version
        self.dim = model.embedding_size

    @classmethod
    def load(cls, directory: str | Path) -> GraphView:
        from models.checkpoint import read_meta

        meta = read_meta(Path(directory))
        return cls(GraphEncoder.load(directory), meta.get("version") or f"mhg-gin-{Path(directory).name}")

    @torch.inference_mode()
    def encode(self, graphs: Sequence[MolGraph], device: torch.device, batch_size: int) -> np.ndarray:
        out = np.empty((len(graphs), self.dim), dtype=np.float32)
        if not graphs:
            return out
        order = np.argsort([g.x.shape[0] for g in graphs], kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = collate_graphs([graphs[i] for i in idx]).to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                vec = self.model.embed(batch)
            out[idx] = vec.float().cpu().numpy()
        return out


class Embedder:
    """Embeds SMILES in the ``smiles``, ``graph`` and ``fused`` views, row-aligned with the input."""

    def __init__(
        self,
        smiles_encoder: str | Path | SmilesView | None = None,
        graph_encoder: str | Path | GraphView | None = None,
        device: str = "auto",
        batch_size: int = 256,
        policy: ParsePolicy = ParsePolicy(),
        cache: VectorCache | None = None,
        featurize_workers: int = 0,
    ) -> None:
        self.device = resolve_device(device)
        self.smiles = (
            smiles_encoder
            if isinstance(smiles_encoder, SmilesView)
            else SmilesView.load(_checkpoint(smiles_encoder, DEFAULT_SMILES_ENCODER, "SMILES"))
        )
        self.graph = (
            graph_encoder
            if isinstance(graph_encoder, GraphView)
            else GraphView.load(_checkpoint(graph_encoder, DEFAULT_GRAPH_ENCODER, "graph"))
        )
        self.smiles.model.to(self.device)
        self.graph.model.to(self.device)
        self.batch_size = batch_size
        self.policy = policy
        self.cache = cache
        self.featurize_workers = featurize_workers
        self._pool: ProcessPoolExecutor | None = None  # started by the first large call, then kept
        self._pool_lock = threading.Lock()
        log.info("embedder ready", extra={"device": str(self.device), "versions": self.versions})

    def _worker_pool(self, workers: int) -> ProcessPoolExecutor:
        """The featurization process pool: started on the first call that needs it and kept for the next
        ones, so a stream of large calls (``molfusion predict`` chunks, API batches, catalog sets) forks
        its workers once instead of once per call."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(workers)
                log.info("featurization pool started", extra={"workers": workers})
            return self._pool

    def close(self) -> None:
        """Stop the featurization worker processes (a later large call starts new ones)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    @property
    def versions(self) -> dict[str, str]:
        """The encoders' versions (their weights), per view: what a head records and is checked against."""
        return {"smiles": self.smiles.version, "graph": self.graph.version}

    @property
    def vector_versions(self) -> dict[str, str]:
        """What a stored vector depends on, per view: the encoder's version, and for the graph view also the
        featurizer's revision (``<version>.f<FEATURIZER_REVISION>``). Every store of vectors is keyed by
        these (the embedding cache, catalog features, dataset ``.npy`` files), so vectors made by an older
        featurizer are never reused."""
        return {"smiles": self.smiles.version, "graph": f"{self.graph.version}.f{FEATURIZER_REVISION}"}

    @property
    def dims(self) -> dict[str, int]:
        return {"smiles": self.smiles.dim, "graph": self.graph.dim, "fused": self.smiles.dim + self.graph.dim}

    def embed(self, smiles: Sequence[object], views: Sequence[str] = VIEWS) -> EmbeddingBatch:
        """Embed ``smiles``; invalid inputs give NaN rows and a reason, never an exception."""
        views = validate_views(views)
        inputs = [s if isinstance(s, str) else str(s) for s in smiles]
        needed = {"smiles", "graph"} if "fused" in views else set(views)
        n = len(inputs)
        canonical: list[str | None] = [None] * n
        errors: list[str | None] = [None] * n
        mols: dict[str, tuple[object, str]] = {}
        graphs: dict[str, MolGraph] = {}
        workers = self.featurize_workers or (os.cpu_count() or 1)
        parallel = n >= PARALLEL_THRESHOLD and workers > 1 and "graph" in needed
        if parallel:
            featurized = featurize_smiles(smiles, self.policy, workers, pool=self._worker_pool(workers))
            for i, item in enumerate(featurized):
                canonical[i], errors[i] = item.canonical, item.error
                if item.graph is not None:
                    graphs.setdefault(item.canonical, item.graph)
        else:
            for i, raw in enumerate(smiles):
                parsed = parse_smiles(raw, self.policy)
                canonical[i], errors[i] = parsed.canonical, parsed.error
                if parsed.mol is not None:
                    mols.setdefault(parsed.canonical, (parsed.mol, parsed.input))
        unique = list(dict.fromkeys(c for c in canonical if c is not None))
        per_view = {v: self._vectors(v, unique, mols, graphs) for v in ("smiles", "graph") if v in needed}
        row_of = {c: j for j, c in enumerate(unique)}
        rows = np.array([row_of.get(c, -1) if c is not None else -1 for c in canonical], dtype=np.int64)
        result = EmbeddingBatch(inputs=inputs, canonical=canonical, errors=errors)
        for view in views:
            table = (
                np.concatenate([per_view["smiles"], per_view["graph"]], axis=1)
                if view == "fused"
                else per_view[view]
            )
            out = np.full((n, self.dims[view]), np.nan, dtype=np.float32)
            ok = rows >= 0
            out[ok] = table[rows[ok]]
            result.vectors[view] = out
        return result

    def embed_canonical(self, canonical: Sequence[str], view: str) -> np.ndarray:
        """Vectors for already-canonical, valid SMILES in one encoder view (cache consulted)."""
        if view not in ENCODER_VIEWS:
            raise ValueError(f"view must be one of {ENCODER_VIEWS}")
        return self._vectors(view, list(canonical), {}, {})

    def _vectors(self, view: str, unique: list[str], mols: dict, graphs: dict[str, MolGraph]) -> np.ndarray:
        encoder = self.smiles if view == "smiles" else self.graph
        table = np.empty((len(unique), encoder.dim), dtype=np.float32)
        tag = self.vector_versions[view]  # once: the property builds a dict
        keys = [cache_key(tag, c) for c in unique]
        cached: list[np.ndarray | None] = [None] * len(unique)
        if self.cache is not None and unique:  # a stored vector of another dimension is a miss
            cached = self.cache.get_many(keys, encoder.dim)
        missing = [j for j, vec in enumerate(cached) if vec is None]
        for j, vec in enumerate(cached):
            if vec is not None:
                table[j] = vec
        if missing:
            todo = [unique[j] for j in missing]
            if view == "smiles":
                fresh = self.smiles.encode(todo, self.device, self.batch_size)
            else:
                fresh = self.graph.encode(self._graphs_for(todo, mols, graphs), self.device, self.batch_size)
            table[missing] = fresh
            if self.cache is not None:  # a non-finite vector (numerical failure) is never kept
                self.cache.set_many([(keys[j], table[j]) for j in missing if np.isfinite(table[j]).all()])
        return table

    def _graphs_for(self, canonical: list[str], mols: dict, graphs: dict[str, MolGraph]) -> list[MolGraph]:
        """Graphs of ``canonical``: already featurized ones, the rest featurized together (faster than
        one at a time) from the parsed molecules, or parsed from the canonical form itself."""
        todo = [c for c in canonical if c not in graphs]
        unlimited = ParsePolicy(max_smiles_length=10**9, max_atoms=10**9, salt_policy="keep")
        parsed = [mols[c] if c in mols else (parse_smiles(c, unlimited).mol, c) for c in todo]
        # Both texts let the featurizer skip reads they prove constant (same arrays, faster).
        packed = mols_to_packed([m for m, _ in parsed], todo, [source for _, source in parsed])
        made = dict(zip(todo, packed.unpack(), strict=True))
        return [graphs[c] if c in graphs else made[c] for c in canonical]


def _checkpoint(given: str | Path | None, default: Path, what: str) -> Path:
    path = Path(given) if given is not None else default
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no {what} encoder checkpoint at {path} (expected config.json and model.safetensors)"
        )
    return path
