"""Embedding caches: vectors keyed by encoder version + hash of the canonical SMILES.

:class:`VectorCache` is the protocol the :class:`models.embedder.Embedder` uses. Values are packed
binary (float16 or float32 bytes), never JSON. :class:`LRUVectorCache` is the embedded default;
:class:`RedisVectorCache` is shared between processes and hosts (``docs/cache.md``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np

CacheDtype = Literal["float16", "float32"]
KEY_PREFIX = "molfusion:emb"

log = logging.getLogger(__name__)


def cache_key(encoder_version: str, canonical_smiles: str) -> str:
    """``molfusion:emb:<encoder name-version>:<sha1 of canonical SMILES>``."""
    digest = hashlib.sha1(canonical_smiles.encode()).hexdigest()
    return f"{KEY_PREFIX}:{encoder_version}:{digest}"


def pack(vector: np.ndarray, dtype: CacheDtype) -> bytes:
    return np.ascontiguousarray(vector, dtype=dtype).tobytes()


def unpack(blob: bytes, dtype: CacheDtype, dim: int | None = None) -> np.ndarray | None:
    """The vector packed in ``blob``, or ``None`` when the bytes are no vector of finite ``dtype`` values
    (a value written by something else, or damaged) or, with ``dim``, one of another dimension (e.g.
    written under another ``MOLFUSION_CACHE_DTYPE``): a reader treats that as a miss and recomputes."""
    if unreadable_reason(blob, dtype, dim):
        return None
    return np.frombuffer(blob, dtype=dtype).astype(np.float32)


def unreadable_reason(blob: bytes, dtype: CacheDtype, dim: int | None = None) -> str | None:
    """Why ``blob`` is no vector for this reader (see :func:`unpack`), or ``None`` when it is one."""
    itemsize = np.dtype(dtype).itemsize
    if not blob or len(blob) % itemsize:
        return "wrong length"
    if dim is not None and len(blob) != dim * itemsize:
        return "wrong dimension"
    if not np.isfinite(np.frombuffer(blob, dtype=dtype)).all():
        return "not finite"
    return None


class VectorCache(Protocol):
    """Batch get/set of float vectors. Implementations must never raise on backend failure."""

    name: str

    def get_many(self, keys: Sequence[str], dim: int | None = None) -> list[np.ndarray | None]:
        """The vectors of ``keys`` (``None`` = miss); with ``dim``, a stored vector of another dimension
        is a miss too, counted as unreadable."""
        ...

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
        self.unreadable = 0  # stored values that were no vector for the reader: read as misses

    def get_many(self, keys: Sequence[str], dim: int | None = None) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        with self._lock:
            for key in keys:
                blob = self._data.get(key)
                vector = None if blob is None else unpack(blob, self.dtype, dim)
                if vector is None:
                    self.misses += 1
                    self.unreadable += blob is not None
                else:
                    self.hits += 1
                    self._data.move_to_end(key)
                out.append(vector)
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
        return {
            "backend": self.name,
            "healthy": True,
            "items": len(self._data),
            "max_items": self.max_items,
            "hits": self.hits,
            "misses": self.misses,
            "unreadable": self.unreadable,
        }


def _error_text(exc: Exception, limit: int = 300) -> str:
    """A short description of a Redis error for logs and state: a failed pipeline's message names the
    command with its arguments (kilobytes of packed vector bytes), so only the error after it is kept."""
    text = str(exc)
    marker = "of pipeline caused error: "
    if marker in text:
        text = text.split(marker, 1)[1]
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RedisVectorCache:
    """Vectors in Redis: ``MGET`` for batch reads, a non-transactional pipeline of ``SET`` for writes.

    Failure policy: a cache must never fail a request. Any Redis error (refused connection, timeout,
    ``OOM``...) is logged once, counted, and turns the backend *down*: for the next ``retry_s`` seconds
    every read is a miss and every write is dropped without touching the network, so a dead or slow
    Redis costs at most one ``timeout_s`` per ``retry_s``. After that the next call tries Redis again
    (the client reconnects by itself) and, on success, the backend is *up* again.

    ``namespace`` is prepended to every key (``<namespace><cache_key>``), for sharing one Redis database
    between deployments or tests. Values are the packed vector bytes; ``ttl_s`` sets an expiry on writes.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        dtype: CacheDtype = "float16",
        ttl_s: int | None = None,
        timeout_s: float = 0.25,
        retry_s: float = 2.0,
        namespace: str = "",
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.dtype: CacheDtype = dtype
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self.namespace = namespace
        # No client-side retries: on failure we fall back to computing, which is the retry that matters.
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
        self._lock = threading.Lock()
        self._down_until = 0.0  # monotonic time before which Redis is not contacted
        self._down_since: float | None = None  # wall-clock time of the first failure of this outage
        self._writes_refused = False  # this outage began with Redis refusing a write (see _failed)
        self.last_error: str | None = None
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.skipped = 0  # calls answered without Redis while it was down
        self.unreadable = 0  # values that were no vector for the reader (unreadable_reason): read as misses

    # -- failure bookkeeping -------------------------------------------------------------------
    def _available(self) -> bool:
        with self._lock:
            if time.monotonic() < self._down_until:
                self.skipped += 1
                return False
            return True

    def _failed(self, op: str, exc: Exception) -> None:
        from redis.exceptions import ResponseError

        with self._lock:
            self.errors += 1
            self.last_error = _error_text(exc)
            self._down_until = time.monotonic() + self.retry_s
            first = self._down_since is None
            if first:
                self._down_since = time.time()
                # Redis answers but refuses writes (OOM under maxmemory + noeviction, a read-only
                # replica): reads and pings keep working, so only a write that succeeds ends the outage.
                self._writes_refused = op == "pipeline-set" and isinstance(exc, ResponseError)
        level = logging.WARNING if first else logging.DEBUG
        log.log(
            level,
            "redis cache unavailable; computing instead",
            extra={"op": op, "error": self.last_error, "retry_s": self.retry_s, "redis": self._safe_url()},
        )

    def _succeeded(self, op: str) -> None:
        if self._down_since is None or (self._writes_refused and op != "pipeline-set"):
            return
        with self._lock:
            outage_s = time.time() - self._down_since if self._down_since is not None else 0.0
            self._down_since = None
            self._down_until = 0.0
        log.warning("redis cache back", extra={"outage_s": round(outage_s, 3), "redis": self._safe_url()})

    # -- VectorCache ------------------------------------------------------------------------------
    def get_many(self, keys: Sequence[str], dim: int | None = None) -> list[np.ndarray | None]:
        if not keys:
            return []
        if not self._available():
            with self._lock:
                self.misses += len(keys)
            return [None] * len(keys)
        try:
            blobs = self._client.mget([self.namespace + k for k in keys])
        except Exception as exc:  # any backend failure degrades to a miss, by contract
            self._failed("mget", exc)
            with self._lock:
                self.misses += len(keys)
            return [None] * len(keys)
        self._succeeded("mget")
        out = [None if b is None else unpack(b, self.dtype, dim) for b in blobs]
        unreadable = sum(b is not None and v is None for b, v in zip(blobs, out, strict=True))
        if unreadable:
            bad = [(k, b) for k, b, v in zip(keys, blobs, out, strict=True) if b is not None and v is None]
            first, blob = bad[0]
            log.warning(
                "redis cache values unreadable; computing instead",
                extra={
                    "values": unreadable,
                    "first_key": self.namespace + first,
                    "reason": unreadable_reason(blob, self.dtype, dim),
                },
            )
        hits = sum(v is not None for v in out)
        with self._lock:
            self.hits += hits
            self.misses += len(keys) - hits
            self.unreadable += unreadable
        return out

    def set_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        if not items or not self._available():
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, vector in items:
                pipe.set(self.namespace + key, pack(vector, self.dtype), ex=self.ttl_s)
            pipe.execute()
        except Exception as exc:
            self._failed("pipeline-set", exc)
            return
        self._succeeded("pipeline-set")

    def ping(self) -> bool:
        """Probe Redis now (ignores the back-off window); updates the up/down state."""
        try:
            self._client.ping()
        except Exception as exc:
            self._failed("ping", exc)
            return False
        self._succeeded("ping")
        return True

    def close(self) -> None:
        self._client.close()

    def _safe_url(self) -> str:
        """The URL without its password."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    def state(self) -> dict:
        with self._lock:
            down = self._down_since is not None
            return {
                "backend": self.name,
                "healthy": not down,
                "url": self._safe_url(),
                "dtype": self.dtype,
                "ttl_s": self.ttl_s,
                "down_since": (
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._down_since)) if down else None
                ),
                "last_error": self.last_error,
                "hits": self.hits,
                "misses": self.misses,
                "errors": self.errors,
                "skipped_while_down": self.skipped,
                "unreadable": self.unreadable,
            }
