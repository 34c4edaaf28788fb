"""Overlapped embedding: worker processes prepare chunk k+1, k+2, ... while the device encodes chunk k.

Preparing a molecule (RDKit parse, canonical SMILES, graph arrays, tokens) costs a few hundred
microseconds of CPU, encoding it on a GPU a few microseconds, so end-to-end throughput on one host is
bounded by ``cores x per-core preparation rate`` only if preparation runs on every core *while* the
device works and the one parent process that drives the device does almost nothing per molecule.
:class:`EmbeddingPipeline` does that:

* a persistent process pool runs :func:`prepare_chunk` on chunks of ``chunk_size`` SMILES, keeping
  ``prefetch`` chunks in flight ahead of the one being encoded. A worker parses, canonicalises,
  featurizes (:func:`models.featurizer.featurize_packed`), tokenizes (the vectorised
  :class:`models.tokenizer.RegexTokenizer`, checked to give the model tokenizer's ids) and *collates*:
  a prepared chunk is a few length-sorted batches, each a handful of compact numpy arrays (padded
  int32 token ids + lengths; uint8 atom/bond features, int32 batch-wide ``edge_index``, atoms per
  graph) plus the chunk's canonical SMILES and reasons, so crossing the process boundary and
  unpickling cost the parent about a microsecond per molecule;
* the parent only turns those arrays into tensors, copies them to the device (pinned memory,
  ``non_blocking``), builds the attention mask and the graph-batch vector *on the device* (and widens
  the compact dtypes there), runs the two
  encoders (bf16 autocast on CUDA) and scatters the vectors into one device tensor per chunk (NaN rows
  for invalid inputs, the fused view's column layout). That tensor comes back with one asynchronous
  copy into pinned memory; the parent only waits for it after it has queued the next chunk's work, so
  on CUDA the host-side work of chunk k+1 overlaps the device work of chunk k. On CPU the same code
  runs synchronously.

Rows are aligned with the input like :meth:`models.embedder.Embedder.embed`: an invalid SMILES gives a
NaN row and its reason; the vectors equal ``Embedder.embed``'s up to float rounding from a different
batch composition (``tests/test_pipeline.py``).

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

from models.chemistry import ParsePolicy
from models.featurizer import CollatedGraphs, collate_packed, featurize_packed
from models.tokenizer import RegexTokenizer

log = logging.getLogger(__name__)

_worker_tokenizer = None  # set in each worker by _init_worker


@dataclass(slots=True)
class TokenBatch:
    """Padded token ids of one length bucket; ``rows`` are the molecules' rows in the chunk."""

    rows: np.ndarray  # int64 [b]
    ids: np.ndarray  # int32 [b, longest], right-padded with the pad id
    lengths: np.ndarray  # int64 [b]


@dataclass(slots=True)
class GraphBatch:
    rows: np.ndarray  # int64 [b]
    graphs: CollatedGraphs


@dataclass(slots=True)
class PreparedChunk:
    """What a worker sends back for one chunk: per-row canonical SMILES and reasons, and the valid
    rows already collated into length-sorted batches for each encoder."""

    start: int
    size: int
    canonical: list[str | None]
    errors: list[str | None]
    token_batches: list[TokenBatch] = field(default_factory=list)
    graph_batches: list[GraphBatch] = field(default_factory=list)


@dataclass(slots=True)
class EmbeddedChunk:
    start: int
    inputs: list[str]
    canonical: list[str | None]
    errors: list[str | None]
    # view -> float32 [n, dim], NaN rows for invalid inputs. With "fused" requested, "smiles" and
    # "graph" are column views of the fused array (no copies).
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


def _init_worker(tokenizer) -> None:
    global _worker_tokenizer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    torch.set_num_threads(1)
    _worker_tokenizer = tokenizer


def _token_arrays(tokenizer, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(tokenizer, RegexTokenizer):
        return tokenizer.encode_flat(texts)
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"] if texts else []
    lengths = np.array([len(t) for t in ids], dtype=np.int64)
    return np.fromiter((t for row in ids for t in row), np.int32, int(lengths.sum())), lengths


def _token_batches(flat: np.ndarray, lengths: np.ndarray, rows: np.ndarray, batch_size: int,
                   pad_id: int) -> list[TokenBatch]:
    """Length-sorted batches, each padded to its longest sequence (vectorised gather)."""
    offsets = np.cumsum(lengths) - lengths
    order = np.argsort(lengths, kind="stable")
    out = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        width = int(lengths[idx].max())
        cols = np.arange(width)
        mask = cols[None, :] < lengths[idx, None]
        ids = np.where(mask, flat[np.where(mask, offsets[idx, None] + cols[None, :], 0)], pad_id)
        out.append(TokenBatch(rows[idx], ids.astype(np.int32), lengths[idx]))
    return out


def prepare_chunk(
    start: int,
    smiles: Sequence[object],
    policy: ParsePolicy,
    need_graph: bool,
    need_tokens: bool,
    max_length: int = 512,
    batch_size: int = 1024,
    pad_id: int = 0,
    tokenizer=None,
) -> PreparedChunk:
    """Parse, canonicalise, featurize, tokenize and collate one chunk (runs in a worker process).

    ``tokenizer`` is a :class:`~models.tokenizer.RegexTokenizer` or a Hugging Face tokenizer; by
    default the one the worker was started with.
    """
    tokenizer = tokenizer if tokenizer is not None else _worker_tokenizer
    canonical, errors, packed = featurize_packed(smiles, policy, graphs=need_graph)
    rows = np.array([i for i, e in enumerate(errors) if e is None], dtype=np.int64)
    chunk = PreparedChunk(start=start, size=len(smiles), canonical=canonical, errors=errors)
    if need_tokens and len(rows):
        flat, lengths = _token_arrays(tokenizer, [canonical[i] for i in rows], max_length)
        chunk.token_batches = _token_batches(flat, lengths, rows, batch_size, pad_id)
    if need_graph and len(rows):
        order = np.argsort(packed.num_atoms, kind="stable")
        chunk.graph_batches = [
            GraphBatch(rows[idx], collate_packed(packed, idx))
            for idx in (order[s : s + batch_size] for s in range(0, len(order), batch_size))
        ]
    return chunk


def _prepare_args(args: tuple) -> PreparedChunk:
    return prepare_chunk(*args)


@dataclass(slots=True)
class _InFlight:
    """A chunk whose vectors are being computed / copied back; ``ready`` is set once queued."""

    prepared: PreparedChunk
    inputs: list[str]
    host: torch.Tensor  # float32 [n, columns], filled by an asynchronous copy on CUDA
    ready: torch.cuda.Event | None


class EmbeddingPipeline:
    """Encode an iterable of SMILES chunk by chunk, preparation overlapped with device work.

    ``smiles_view`` / ``graph_view`` are the :class:`models.embedder.SmilesView` / ``GraphView``
    objects of an :class:`~models.embedder.Embedder` (their ``model``, ``tokenizer``, ``dim``,
    ``max_length`` are used). ``workers=0`` means all cores.
    """

    def __init__(self, smiles_view, graph_view, device: torch.device, batch_size: int = 1024,
                 policy: ParsePolicy = ParsePolicy(), workers: int = 0, chunk_size: int = 2048,
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
        hf = smiles_view.tokenizer
        self.pad_id = hf.pad_token_id if hf.pad_token_id is not None else 0
        # The workers' tokenizer: the vectorised regex one when it reproduces the model tokenizer's ids.
        self.worker_tokenizer = RegexTokenizer.from_fast_tokenizer(hf, smiles_view.max_length) or hf
        self.cuda = device.type == "cuda"
        self._staging: list[torch.Tensor | None] = [None, None]
        self._turn = 0

    def worker_args(self, start: int, part: list[object], need: set[str]) -> tuple:
        """Arguments of :func:`prepare_chunk` for one chunk (the tokenizer comes from the worker)."""
        return (start, part, self.policy, "graph" in need, "smiles" in need, self.smiles_view.max_length,
                self.batch_size, self.pad_id)

    def run(self, smiles: Iterable[object], views: Sequence[str] = ("smiles", "graph", "fused"),
            ) -> Iterator[EmbeddedChunk]:
        """Yield :class:`EmbeddedChunk` results in input order."""
        need = {"smiles", "graph"} if "fused" in views else set(views)
        log.info("embedding pipeline started", extra={"device": str(self.device), "workers": self.workers,
                                                      "chunk_size": self.chunk_size, "views": list(views)})
        it = iter(smiles)
        pending: deque[tuple[Future, list[object]]] = deque()
        start = 0
        with ProcessPoolExecutor(self.workers, initializer=_init_worker,
                                 initargs=(self.worker_tokenizer,)) as pool:
            def submit() -> bool:
                nonlocal start
                part = list(islice(it, self.chunk_size))
                if not part:
                    return False
                pending.append((pool.submit(_prepare_args, self.worker_args(start, part, need)), part))
                start += len(part)
                return True

            while len(pending) < self.prefetch and submit():
                pass
            previous: _InFlight | None = None
            while pending:
                future, part = pending.popleft()
                prepared = future.result()
                submit()
                current = self.launch(prepared, part, need)
                if previous is not None:  # its copy had the whole of this chunk's queuing to finish
                    yield self.finish(previous, views)
                previous = current
            if previous is not None:
                yield self.finish(previous, views)

    def encode(self, chunk: PreparedChunk, views: Sequence[str], inputs: Sequence[object] | None = None,
               ) -> EmbeddedChunk:
        """Encode one prepared chunk synchronously (``inputs``: the chunk's SMILES, for the result)."""
        need = {"smiles", "graph"} if "fused" in views else set(views)
        inputs = list(inputs) if inputs is not None else [""] * chunk.size
        return self.finish(self.launch(chunk, inputs, need), views)

    @torch.inference_mode()
    def launch(self, chunk: PreparedChunk, inputs: list[object], need: set[str]) -> _InFlight:
        """Queue the chunk's copies and forward passes; on CUDA, returns before the device is done."""
        ds, dg = self.dims["smiles"], self.dims["graph"]
        columns = ds * ("smiles" in need) + dg * ("graph" in need)
        out = torch.full((chunk.size, columns), float("nan"), dtype=torch.float32, device=self.device)
        graph_col = ds if "smiles" in need else 0
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda)
        if "smiles" in need:
            model = self.smiles_view.model
            for tb in chunk.token_batches:
                ids = self._to_device(tb.ids).long()
                lengths = self._to_device(tb.lengths)
                mask = (torch.arange(ids.shape[1], device=self.device)[None, :] < lengths[:, None]).long()
                with autocast:
                    vec = model.embed(ids, mask)
                out[self._to_device(tb.rows), :ds] = vec.float()
        if "graph" in need:
            from torch_geometric.data import Batch

            model = self.graph_view.model
            for gb in chunk.graph_batches:
                g = gb.graphs
                sizes = self._to_device(g.num_atoms)
                batch = Batch(
                    x=self._to_device(g.x).long(),
                    edge_index=self._to_device(g.edge_index).long(),
                    edge_attr=self._to_device(g.edge_attr).long(),
                    batch=torch.repeat_interleave(torch.arange(len(sizes), device=self.device), sizes,
                                                  output_size=len(g.x)),
                    ptr=torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)]),
                )
                batch._num_graphs = len(sizes)  # what torch-geometric's own collation sets
                with autocast:
                    vec = model.embed(batch)
                out[self._to_device(gb.rows), graph_col:] = vec.float()
        inputs = [s if isinstance(s, str) else str(s) for s in inputs]
        if not self.cuda:
            return _InFlight(chunk, inputs, out, None)
        host = self._staging_buffer(out.numel()).view(out.shape)
        host.copy_(out, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return _InFlight(chunk, inputs, host, ready)

    def finish(self, flight: _InFlight, views: Sequence[str]) -> EmbeddedChunk:
        """Wait for a launched chunk's vectors and split them into the requested views."""
        if flight.ready is not None:
            flight.ready.synchronize()
        # on CUDA the staging buffer is reused two chunks later: hand out a copy
        table = flight.host.numpy() if flight.ready is None else flight.host.numpy().copy()
        chunk = flight.prepared
        out = EmbeddedChunk(chunk.start, flight.inputs, chunk.canonical, chunk.errors)
        ds = self.dims["smiles"]
        for view in views:
            if view == "fused":
                out.vectors[view] = table
            elif view == "smiles":
                out.vectors[view] = table[:, :ds]
            else:
                out.vectors[view] = table[:, ds:] if table.shape[1] > self.dims["graph"] else table
        return out

    def _staging_buffer(self, numel: int) -> torch.Tensor:
        """One of two pinned host buffers, used in turn: a chunk's vectors are copied back into one
        while the previous chunk's are read from the other (allocating pinned memory per chunk is slow
        and would pin every chunk a consumer keeps)."""
        self._turn = 1 - self._turn
        buffer = self._staging[self._turn]
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(max(numel, self.chunk_size * self.dims["fused"]), dtype=torch.float32,
                                 pin_memory=True)
            self._staging[self._turn] = buffer
        return buffer[:numel]

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.cuda:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor
