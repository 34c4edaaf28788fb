"""Overlapped embedding: worker processes prepare chunk k+1, k+2, ... while the device encodes chunk k.

Preparing a molecule (RDKit parse, canonical SMILES, graph arrays, tokens) costs a few hundred
microseconds of CPU, encoding it on a GPU a few microseconds, so end-to-end throughput on one host is
bounded by ``cores x per-core preparation rate`` only if preparation runs on every core *while* the
device works. :class:`EmbeddingPipeline` does that:

* a persistent process pool runs :func:`prepare_chunk` on chunks of ``chunk_size`` SMILES, keeping
  ``prefetch`` chunks in flight ahead of the one being encoded;
* a prepared chunk travels back as a few packed arrays (:class:`~models.featurizer.PackedGraphs`, all
  token ids concatenated) rather than thousands of small objects, so the parent's unpickling stays
  cheap;
* the parent only pads, collates, copies to the device and runs the two encoders (bf16 autocast on
  CUDA), length-sorted in batches of ``batch_size``.

Rows are aligned with the input like :meth:`models.embedder.Embedder.embed`: an invalid SMILES gives a
NaN row and its reason.

>>> pipe = EmbeddingPipeline(smiles_view, graph_view, torch.device("cuda"), workers=16)  # doctest: +SKIP
>>> for chunk in pipe.run(smiles_iterable, views=("smiles", "graph", "fused")):       # doctest: +SKIP
...     write(chunk.start, chunk.canonical, chunk.errors, chunk.vectors)
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import torch

from models.chemistry import ParsePolicy, parse_smiles
from models.featurizer import MolGraph, PackedGraphs, collate_graphs, featurize_one

log = logging.getLogger(__name__)

_worker_tokenizer = None  # set in each worker by _init_worker


@dataclass(slots=True)
class PreparedChunk:
    """CPU-side result for one chunk. Graph and token arrays cover the valid rows only, in row order."""

    start: int
    inputs: list[str]
    canonical: list[str | None]
    errors: list[str | None]
    valid_rows: np.ndarray  # int64 [n_valid]
    graphs: PackedGraphs | None = None
    token_ids: np.ndarray | None = None  # int32 [sum tokens], <bos> ... <eos> per molecule
    token_lengths: np.ndarray | None = None  # int64 [n_valid]


@dataclass(slots=True)
class EmbeddedChunk:
    start: int
    inputs: list[str]
    canonical: list[str | None]
    errors: list[str | None]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # view -> float32 [n, dim], NaN rows


def _init_worker(tokenizer) -> None:
    global _worker_tokenizer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    torch.set_num_threads(1)
    _worker_tokenizer = tokenizer


def prepare_chunk(
    start: int,
    smiles: Sequence[object],
    policy: ParsePolicy,
    need_graph: bool,
    need_tokens: bool,
    max_length: int = 512,
    tokenizer=None,
) -> PreparedChunk:
    """Parse, canonicalise, featurize and tokenize one chunk (runs in a worker process)."""
    tokenizer = tokenizer if tokenizer is not None else _worker_tokenizer
    n = len(smiles)
    canonical: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    graphs: list[MolGraph] = []
    valid: list[int] = []
    for i, raw in enumerate(smiles):
        if need_graph:
            item = featurize_one(raw, policy)
            canonical[i], errors[i] = item.canonical, item.error
            if item.graph is not None:
                graphs.append(item.graph)
        else:
            parsed = parse_smiles(raw, policy)
            canonical[i], errors[i] = parsed.canonical, parsed.error
        if errors[i] is None:
            valid.append(i)
    chunk = PreparedChunk(start=start, inputs=[s if isinstance(s, str) else str(s) for s in smiles],
                          canonical=canonical, errors=errors, valid_rows=np.array(valid, dtype=np.int64))
    if need_graph:
        chunk.graphs = PackedGraphs.pack(graphs)
    if need_tokens:
        texts = [canonical[i] for i in valid]
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"] if texts else []
        chunk.token_lengths = np.array([len(t) for t in ids], dtype=np.int64)
        chunk.token_ids = np.fromiter((t for row in ids for t in row), dtype=np.int32,
                                      count=int(chunk.token_lengths.sum()))
    return chunk


def _prepare_args(args: tuple) -> PreparedChunk:
    return prepare_chunk(*args)


class EmbeddingPipeline:
    """Encode an iterable of SMILES chunk by chunk, preparation overlapped with device work.

    ``smiles_view`` / ``graph_view`` are the :class:`models.embedder.SmilesView` / ``GraphView``
    objects of an :class:`~models.embedder.Embedder` (their ``model``, ``tokenizer``, ``dim``,
    ``max_length`` are used). ``workers=0`` means all cores.
    """

    def __init__(self, smiles_view, graph_view, device: torch.device, batch_size: int = 1024,
                 policy: ParsePolicy = ParsePolicy(), workers: int = 0, chunk_size: int = 4096,
                 prefetch: int | None = None) -> None:
        self.smiles_view, self.graph_view = smiles_view, graph_view
        self.device = device
        self.batch_size = batch_size
        self.policy = policy
        self.workers = workers or (os.cpu_count() or 1)
        self.chunk_size = chunk_size
        self.prefetch = prefetch if prefetch is not None else 2 * self.workers
        self.dims = {"smiles": smiles_view.dim, "graph": graph_view.dim,
                     "fused": smiles_view.dim + graph_view.dim}

    def run(self, smiles: Iterable[object], views: Sequence[str] = ("smiles", "graph", "fused"),
            ) -> Iterator[EmbeddedChunk]:
        """Yield :class:`EmbeddedChunk` results in input order."""
        need = {"smiles", "graph"} if "fused" in views else set(views)
        log.info("embedding pipeline started", extra={"device": str(self.device), "workers": self.workers,
                                                      "chunk_size": self.chunk_size, "views": list(views)})
        it = iter(smiles)
        pending: deque[Future] = deque()
        start = 0
        with ProcessPoolExecutor(self.workers, initializer=_init_worker,
                                 initargs=(self.smiles_view.tokenizer,)) as pool:
            def submit() -> bool:
                nonlocal start
                part = list(islice(it, self.chunk_size))
                if not part:
                    return False
                pending.append(pool.submit(_prepare_args, (start, part, self.policy, "graph" in need,
                                                           "smiles" in need, self.smiles_view.max_length)))
                start += len(part)
                return True

            while len(pending) < self.prefetch and submit():
                pass
            while pending:
                prepared = pending.popleft().result()
                submit()
                yield self.encode(prepared, views, need)

    @torch.inference_mode()
    def encode(self, chunk: PreparedChunk, views: Sequence[str], need: set[str]) -> EmbeddedChunk:
        n = len(chunk.inputs)
        per_view: dict[str, np.ndarray] = {}
        if "smiles" in need:
            per_view["smiles"] = self._encode_tokens(chunk)
        if "graph" in need:
            per_view["graph"] = self._encode_graphs(chunk)
        out = EmbeddedChunk(chunk.start, chunk.inputs, chunk.canonical, chunk.errors)
        for view in views:
            table = (np.concatenate([per_view["smiles"], per_view["graph"]], axis=1) if view == "fused"
                     else per_view[view])
            full = np.full((n, self.dims[view]), np.nan, dtype=np.float32)
            full[chunk.valid_rows] = table
            out.vectors[view] = full
        return out

    def _encode_tokens(self, chunk: PreparedChunk) -> np.ndarray:
        """Pad length-sorted batches from the packed ids and run the SMILES encoder's masked-mean embed."""
        lengths = chunk.token_lengths
        out = np.empty((len(lengths), self.smiles_view.dim), dtype=np.float32)
        offsets = np.cumsum(lengths) - lengths
        order = np.argsort(lengths, kind="stable")
        pad = self.smiles_view.model.config.pad_token_id
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            width = int(lengths[idx].max())
            cols = np.arange(width)
            mask = cols[None, :] < lengths[idx, None]
            gather = np.where(mask, offsets[idx, None] + cols[None, :], 0)
            ids = np.where(mask, chunk.token_ids[gather], pad).astype(np.int64)
            ids_t = _to_device(torch.from_numpy(ids), self.device)
            mask_t = _to_device(torch.from_numpy(mask.astype(np.int64)), self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                vec = self.smiles_view.model.embed(ids_t, mask_t)
            out[idx] = vec.float().cpu().numpy()
        return out

    def _encode_graphs(self, chunk: PreparedChunk) -> np.ndarray:
        graphs = chunk.graphs.unpack()
        out = np.empty((len(graphs), self.graph_view.dim), dtype=np.float32)
        order = np.argsort(chunk.graphs.num_atoms, kind="stable")
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            batch = collate_graphs([graphs[i] for i in idx])
            if self.device.type == "cuda":
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                vec = self.graph_view.model.embed(batch)
            out[idx] = vec.float().cpu().numpy()
        return out


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor
