"""Embedding caches: vectors keyed by encoder version + hash of the canonical SMILES.

:class:`VectorCache` is the protocol the :class:`models.embedder.Embedder` uses. Values are packed
binary (float16 or float32 bytes), never JSON. :class:`LRUVectorCache` is the embedded default.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np

CacheDtype = Literal["float16", "float32"]
KEY_PREFIX = "molfusion:emb"


def cache_key(encoder_version: str, canonical_smiles: str) -> str:
    """``molfusion:emb:<encoder name-version>:<sha1 of canonical SMILES>``."""
    digest = hashlib.sha1(canonical_smiles.encode()).hexdigest()
    return f"{KEY_PREFIX}:{encoder_version}:{digest}"


def pack(vector: np.ndarray, dtype: CacheDtype) -> bytes:
    return np.ascontiguousarray(vector, dtype=dtype).tobytes()


def unpack(blob: bytes, dtype: CacheDtype) -> np.ndarray:
    return np.frombuffer(blob, dtype=dtype).astype(np.float32)


class VectorCache(Protocol):
    """Batch get/set of float vectors. Implementations must never raise on backend failure."""

    name: str

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]: ...

    def set_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None: ...

    def state(self) -> dict: ...


class LRUVectorCache:
    """Thread-safe in-process LRU of packed vectors (the default when no Redis is configured)."""

    name = "memory"

    def __init__(self, max_items: int = 200_000, dtype: CacheDtype = "float16") -> None:
        self.max_items = max_items
        self.dtype: CacheDtype = dtype
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        with self._lock:
            for key in keys:
                blob = self._data.get(key)
                if blob is None:
                    self.misses += 1
                    out.append(None)
                else:
                    self.hits += 1
                    self._data.move_to_end(key)
                    out.append(unpack(blob, self.dtype))
        return out

    def set_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        if self.max_items <= 0:
            return
        with self._lock:
            for key, vector in items:
                self._data[key] = pack(vector, self.dtype)
                self._data.move_to_end(key)
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def state(self) -> dict:
        return {"backend": self.name, "healthy": True, "items": len(self._data), "max_items": self.max_items,
                "hits": self.hits, "misses": self.misses}
