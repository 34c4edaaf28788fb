"""Bounded in-process memos of the service's pure per-molecule functions.

A service sees the same molecules again and again. Two steps are pure functions of their input and
cost more than the rest of a cached request: validating/canonicalising a raw SMILES with RDKit
(~0.1-0.2 ms per molecule), and applying a head to one cached vector (a small network call, ~0.15 ms
per head per call on CPU). Their outcomes are kept in LRU memos: :class:`CanonicalMemo` by raw input,
and :class:`PredictionMemo` by (head name, head version, canonical SMILES); a head's version is the
digest of its files, so a retrained head never reads old predictions. The RDKit molecule is not kept:
an embedding-cache miss re-parses the canonical form when it featurizes the graph. A third memo,
:class:`ResponseMemo`, keeps each ``/v1/predict`` result item serialized, so a repeated request is
answered by joining bytes (``app.api.fastpath``). All three are bounded by ``MOLFUSION_MEMO_ITEMS``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

import numpy as np

from models.chemistry import ParsePolicy, parse_smiles

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUMemo(Generic[K, V]):
    """Thread-safe least-recently-used map whose entries weigh at most ``max_items`` together
    (0 = disabled). An entry weighs 1 unless :meth:`put_many` is given another ``weight``."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[K]) -> list[V | None]:
        out: list[V | None] = []
        with self._lock:
            for key in keys:
                entry = self._data.get(key)
                if entry is not None:
                    self._data.move_to_end(key)
                out.append(None if entry is None else entry[0])
        return out

    def put_many(self, items: Sequence[tuple[K, V]], weight: int = 1) -> None:
        """Remember every ``(key, value)``, each weighing ``weight``; an entry heavier than the whole
        memo is not kept."""
        if self.max_items <= 0 or weight > self.max_items:
            return
        with self._lock:
            for key, value in items:
                old = self._data.pop(key, None)
                if old is not None:
                    self._weight -= old[1]
                self._data[key] = (value, weight)
                self._weight += weight
            while self._weight > self.max_items:
                self._weight -= self._data.popitem(last=False)[1][1]

    def __len__(self) -> int:
        return len(self._data)


class CanonicalMemo:
    """``memo(inputs) -> (canonical, errors)``, row-aligned; a ``None`` canonical means invalid."""

    def __init__(self, policy: ParsePolicy, max_items: int = 100_000) -> None:
        self.policy = policy
        self._memo: LRUMemo[str, tuple[str | None, str | None]] = LRUMemo(max_items)

    def __call__(self, inputs: Sequence[str]) -> tuple[list[str | None], list[str | None]]:
        known = self._memo.get_many(inputs)
        fresh: list[tuple[str, tuple[str | None, str | None]]] = []
        for i, raw in enumerate(inputs):
            if known[i] is None:
                parsed = parse_smiles(raw, self.policy)
                known[i] = (parsed.canonical, parsed.error)
                if len(raw) <= self.policy.max_smiles_length:  # over-long inputs are never kept
                    fresh.append((raw, known[i]))
        self._memo.put_many(fresh)
        return [k[0] for k in known], [k[1] for k in known]  # type: ignore[index]

    def recall(self, inputs: Sequence[str]) -> tuple[list[str | None], list[str | None]] | None:
        """Outcomes for ``inputs`` if every one is remembered, else ``None`` (never parses)."""
        known = self._memo.get_many(inputs)
        if any(k is None for k in known):
            return None
        return [k[0] for k in known], [k[1] for k in known]  # type: ignore[index]


class PredictionMemo:
    """Head outputs per (head, version, canonical SMILES): ``rows`` of float64 task values."""

    def __init__(self, max_items: int = 100_000) -> None:
        self._memo: LRUMemo[tuple[str, str, str], np.ndarray] = LRUMemo(max_items)

    def lookup(self, head: str, version: str, canonical: Sequence[str]) -> list[np.ndarray | None]:
        return self._memo.get_many([(head, version, c) for c in canonical])

    def store(self, head: str, version: str, canonical: Sequence[str], values: np.ndarray) -> None:
        """Remember each molecule's row of ``values``; a row that is not finite is not remembered."""
        finite = np.isfinite(values).all(axis=1)
        self._memo.put_many(
            [((head, version, c), values[i].copy()) for i, c in enumerate(canonical) if finite[i]]
        )


class ResponseMemo:
    """Serialized ``/v1/predict`` result items by (raw input, served-versions key of the requested heads).

    The key names every requested head with its version and encoder versions
    (:meth:`app.api.service.ModelService.response_key`), so another property set, a retrained head or
    a new encoder never reads an old item. Each value is the item's JSON bytes and whether it is
    ``ok``. An entry counts as one item per head it holds (the unit of :class:`PredictionMemo`), so
    ``max_items`` bounds both memos alike: with 9 heads the default 100,000 keeps ~11,000 molecules.
    """

    def __init__(self, max_items: int) -> None:
        self._memo: LRUMemo[tuple[str, str], tuple[bytes, bool]] = LRUMemo(max_items)

    def recall(self, key: str, inputs: Sequence[str]) -> tuple[list[bytes], int] | None:
        """Every input's item and the number of ``ok`` ones, or ``None`` unless all are remembered."""
        found = self._memo.get_many([(raw, key) for raw in inputs])
        if any(entry is None for entry in found):
            return None
        return [entry[0] for entry in found], sum(entry[1] for entry in found)  # type: ignore[index]

    def store(self, key: str, weight: int, items: Sequence[tuple[str, bytes, bool]]) -> None:
        """Remember ``(raw input, item JSON, ok)`` rows; ``weight`` is the number of heads in ``key``."""
        self._memo.put_many([((raw, key), (data, ok)) for raw, data, ok in items], weight)

    def __len__(self) -> int:
        return len(self._memo)
