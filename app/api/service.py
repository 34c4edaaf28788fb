"""The model side of the service: embedder + embedding cache + property heads behind one micro-batcher.

A request reads as a straight line: the route hands its molecules to :meth:`ModelService.embed` or
:meth:`ModelService.predict`. A predict request whose inputs and predictions are all remembered by
the in-process memos (``app.api.memo``) is answered at once on the event loop; everything else goes
to the micro-batcher (``app.batcher``), which coalesces concurrent requests and runs
:meth:`ModelService._run` in its worker thread: validate and canonicalise every SMILES (``models``),
look vectors up in the cache and encode only the missing ones (``models.embedder.Embedder``), apply
each head once to the molecules of the batch that asked for it (``fusion.registry``), and hand the
rows back per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.api.memo import CanonicalMemo, PredictionMemo, ResponseMemo
from app.api.schemas import PropertyInfo
from app.batcher import MicroBatcher
from app.factory import build_embedder
from app.metrics import ServiceMetrics
from app.settings import Settings
from models.embedding_cache import LRUVectorCache, RedisVectorCache, VectorCache

log = logging.getLogger(__name__)

ENCODER_VIEWS = ("smiles", "graph")


class NotReadyError(RuntimeError):
    """Models are still loading (or failed to load)."""


class UnknownPropertyError(ValueError):
    def __init__(self, unknown: list[str], served: list[str], skipped: dict[str, str] | None = None) -> None:
        self.unknown = unknown
        self.served = served
        self.skipped = {name: reason for name, reason in (skipped or {}).items() if name in unknown}
        super().__init__(f"unknown propert{'y' if len(unknown) == 1 else 'ies'} {unknown}; served: {served}")


@dataclass(frozen=True, slots=True)
class EmbedJob:
    smiles: list[str]
    views: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PredictJob:
    smiles: list[str]
    heads: tuple[str, ...]


@dataclass(slots=True)
class JobResult:
    """Row-aligned outcome of one job."""

    canonical: list[str | None]
    errors: list[str | None]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # embed jobs: view -> [n, dim]
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # predict jobs: head -> [n, tasks]


def build_cache(settings: Settings) -> VectorCache:
    """Redis when ``redis_url`` is set, else the in-process LRU."""
    if settings.redis_url:
        return RedisVectorCache(
            settings.redis_url,
            dtype=settings.cache_dtype,
            ttl_s=settings.cache_ttl_s,
            timeout_s=settings.redis_timeout_s,
            retry_s=settings.redis_retry_s,
            namespace=settings.cache_namespace,
        )
    return LRUVectorCache(max_items=settings.cache_max_items, dtype=settings.cache_dtype)


def _head_views(head: Any) -> tuple[str, ...]:
    return tuple(v for v in ENCODER_VIEWS if v in head.views)


def _version_mismatch(head: Any, versions: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """Views whose encoder version differs between a head and the loaded embedder."""
    wanted = dict(head.encoder_versions)
    return {
        v: {"head": wanted.get(v), "served": versions[v]}
        for v in _head_views(head)
        if wanted.get(v) != versions[v]
    }


def describe_head(name: str, head: Any, version: str | None) -> dict[str, Any]:
    """What ``/v1/properties`` says of a loaded head, checked against :class:`PropertyInfo`: a
    ``pydantic.ValidationError`` (or ``TypeError``/``AttributeError``) when its card does not describe it."""
    card = head.card
    info = {
        "name": name,
        "version": version,
        "description": card.get("description"),
        "tasks": list(head.tasks),
        "task_types": list(head.task_types),
        "units": [u if u else None for u in head.units],
        "views": list(_head_views(head)),
        "encoder_versions": {v: dict(head.encoder_versions).get(v) for v in _head_views(head)},
        "metrics": card.get("metrics", {}),
    }
    return PropertyInfo.model_validate(info).model_dump()


def _view_table(tables: dict[str, np.ndarray], view: str) -> np.ndarray:
    """The fused view is the concatenation [smiles | graph] of the two encoder views."""
    return np.concatenate([tables["smiles"], tables["graph"]], axis=1) if view == "fused" else tables[view]


def _gather(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``table[rows]`` with NaN rows where ``rows`` is -1 (invalid inputs)."""
    out = np.full((len(rows), table.shape[1]), np.nan, dtype=table.dtype)
    ok = rows >= 0
    out[ok] = table[rows[ok]]
    return out


def _artifact_digest(path: Path | None) -> str | None:
    """Short sha256 over a head directory's files (names and bytes): changes whenever it is retrained."""
    if path is None or not Path(path).is_dir():
        return None
    h = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode())
        h.update(file.read_bytes())
    return h.hexdigest()[:12]


class ModelService:
    """Owns the embedder, the cache, the heads and the micro-batcher for one app instance."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics, embedder: Any | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cache: VectorCache = (
            build_cache(settings) if embedder is None or embedder.cache is None else embedder.cache
        )
        self.embedder = embedder
        if embedder is not None:
            embedder.cache = self.cache  # an injected embedder without a cache uses the configured one
        self.heads: dict[str, Any] = {}
        self.skipped_heads: dict[str, str] = {}
        self.cards: dict[str, dict] = {}
        self.head_versions: dict[str, str | None] = {}
        self.load_error: str | None = None
        self.canonicalize: CanonicalMemo | None = None
        self.predictions: PredictionMemo | None = None
        self.responses: ResponseMemo | None = None
        self._response_keys: dict[tuple[str, ...], str] = {}
        self.head_infos: dict[str, dict[str, Any]] = {}
        self.loaded_at: float | None = None
        self.batcher: MicroBatcher[EmbedJob | PredictJob, JobResult] = MicroBatcher(
            self._run,
            size_of=lambda job: len(job.smiles),
            max_size=settings.microbatch_max_size,
            max_wait_ms=settings.microbatch_max_wait_ms,
            on_batch=metrics.observe_batch,
        )

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.loaded_at is not None and self.batcher.running

    def load(self) -> None:
        """Load encoders and heads (blocking; the app runs it in a thread at startup)."""
        started = time.perf_counter()
        try:
            if self.embedder is None:
                self.embedder = build_embedder(self.settings, self.cache)
            self.canonicalize = CanonicalMemo(self.embedder.policy, self.settings.memo_items)
            self.predictions = PredictionMemo(self.settings.memo_items)
            self.responses = ResponseMemo(self.settings.memo_items)
            self._load_heads()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model loading failed", extra={"error": self.load_error})
            raise
        self.loaded_at = time.time()
        log.info(
            "models loaded",
            extra={
                "seconds": round(time.perf_counter() - started, 3),
                "heads": sorted(self.heads),
                "skipped_heads": self.skipped_heads,
                "device": str(self.embedder.device),
                "cache": self.cache.name,
            },
        )

    def _load_heads(self) -> None:
        from fusion.registry import HeadRegistry

        registry = HeadRegistry(self.settings.heads_dir)
        if not registry.root.is_dir():  # a typo in MOLFUSION_HEADS_DIR would otherwise serve nothing quietly
            log.warning(
                "heads folder does not exist; no properties are served",
                extra={"heads_dir": str(registry.root), "setting": "MOLFUSION_HEADS_DIR"},
            )
        versions = self.embedder.versions
        self._response_keys = {}  # response-memo keys name the versions of the heads loaded here
        for name in registry.names():
            try:
                head = registry.load(name)
            except Exception as exc:  # one broken head must not take the service down
                self.skipped_heads[name] = f"failed to load: {type(exc).__name__}: {exc}"
                log.warning("head skipped", extra={"head": name, "reason": self.skipped_heads[name]})
                continue
            extra = sorted(set(head.views) - set(ENCODER_VIEWS))
            if extra:
                self.skipped_heads[name] = f"needs views the service does not compute: {extra}"
                log.warning("head skipped", extra={"head": name, "reason": self.skipped_heads[name]})
                continue
            mismatch = _version_mismatch(head, versions)
            if mismatch:
                self.skipped_heads[name] = f"encoder versions differ: {mismatch}"
                log.warning(
                    "head skipped",
                    extra={"head": name, "reason": "encoder versions differ", "versions": mismatch},
                )
                continue
            self.heads[name] = head
            self.cards[name] = dict(head.card)
            self.head_versions[name] = head.card.get("version") or _artifact_digest(head.path)
            try:  # the description is what /v1/properties serves: a card field of the wrong type skips it
                self.head_infos[name] = describe_head(name, head, self.head_versions[name])
            except (ValidationError, TypeError, AttributeError) as exc:
                for table in (self.heads, self.cards, self.head_versions):
                    table.pop(name, None)
                self.skipped_heads[name] = f"card does not describe the head: {exc}".replace("\n", " ")[:500]
                log.warning("head skipped", extra={"head": name, "reason": self.skipped_heads[name]})

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        for resource in (self.cache, self.embedder):  # Redis connections; featurization workers
            close = getattr(resource, "close", None)
            if close is not None:
                close()

    async def watch_cache(self) -> None:
        """While the Redis cache is down, probe it every ``redis_retry_s`` so it recovers without traffic."""
        ping = getattr(self.cache, "ping", None)
        if ping is None:
            return
        await asyncio.to_thread(ping)  # at start-up: an unreachable Redis shows as degraded at once
        while True:
            await asyncio.sleep(self.settings.redis_retry_s)
            if not self.cache.state().get("healthy", True):
                await asyncio.to_thread(ping)

    # -- requests --------------------------------------------------------------------------------
    def _require_ready(self) -> None:
        if not self.ready:
            raise NotReadyError(self.load_error or "models are loading")

    def resolve_properties(self, requested: list[str] | None) -> tuple[str, ...]:
        """Requested head names (deduplicated, in order), or every served head when ``None``."""
        self._require_ready()
        if requested is None:
            return tuple(sorted(self.heads))
        unknown = [p for p in dict.fromkeys(requested) if p not in self.heads]
        if unknown:
            raise UnknownPropertyError(unknown, sorted(self.heads), self.skipped_heads)
        return tuple(dict.fromkeys(requested))

    def response_key(self, heads: tuple[str, ...]) -> str:
        """Key of a property set in :class:`ResponseMemo`: every head in request order with its version
        and the encoder versions it was trained on (computed once per property set)."""
        key = self._response_keys.get(heads)
        if key is None:
            key = "|".join(
                f"{name}@{self.head_versions[name]}@"
                + ",".join(f"{v}={e}" for v, e in self.head_infos[name]["encoder_versions"].items())
                for name in heads
            )
            if len(self._response_keys) < 4096:  # a bounded number of distinct property sets
                self._response_keys[heads] = key
        return key

    async def embed(self, smiles: list[str], views: tuple[str, ...]) -> JobResult:
        self._require_ready()
        return await self.batcher.submit(EmbedJob(smiles, views))

    async def predict(self, smiles: list[str], heads: tuple[str, ...]) -> JobResult:
        self._require_ready()
        remembered = self._remembered(smiles, heads)
        if remembered is not None:
            return remembered
        return await self.batcher.submit(PredictJob(smiles, heads))

    def _remembered(self, smiles: list[str], heads: tuple[str, ...]) -> JobResult | None:
        """The whole answer from the in-process memos, or ``None`` if any input or prediction is not
        remembered. Only dictionary look-ups (microseconds), so it runs on the event loop and spares
        repeated requests the thread hop; everything else (RDKit, cache backend, models) goes to
        the batcher's worker thread."""
        assert self.canonicalize is not None and self.predictions is not None
        known = self.canonicalize.recall(smiles)
        if known is None:
            return None
        canonical, errors = known
        valid = [c for c in canonical if c is not None]
        predictions: dict[str, np.ndarray] = {}
        for name in heads:
            found = self.predictions.lookup(name, self.head_versions[name], valid)
            if any(v is None for v in found):
                return None
            values = np.full((len(smiles), len(self.heads[name].tasks)), np.nan, dtype=np.float64)
            ok = [i for i, c in enumerate(canonical) if c is not None]
            if ok:
                values[ok] = np.stack(found)  # type: ignore[arg-type]
            predictions[name] = values
        self.metrics.memo_answers.inc()
        return JobResult(canonical=canonical, errors=errors, predictions=predictions)

    # -- the batched work (worker thread) --------------------------------------------------------
    def _run(self, jobs: list[EmbedJob | PredictJob]) -> list[JobResult]:
        """The batch as one straight line over its *distinct* valid molecules:

        1. validate and canonicalise every input (memoized);
        2. per head, take remembered predictions, and note the molecules still to predict;
        3. per encoder view, get the vectors of the molecules that need them (embed jobs, and
           predictions not remembered) from the cache, encoding only what it lacks;
        4. apply each head once to its molecules, remember the outputs;
        5. hand rows back per job, NaN rows for invalid inputs.
        """
        smiles = [s for job in jobs for s in job.smiles]
        spans: list[slice] = []
        for job in jobs:
            start = spans[-1].stop if spans else 0
            spans.append(slice(start, start + len(job.smiles)))
        t0 = time.perf_counter()
        canonical, errors = self.canonicalize(smiles)
        unique = list(dict.fromkeys(c for c in canonical if c is not None))
        row_of = {c: j for j, c in enumerate(unique)}
        rows = np.array([-1 if c is None else row_of[c] for c in canonical], dtype=np.int64)

        need: dict[str, set[int]] = {v: set() for v in ENCODER_VIEWS}  # view -> distinct rows to embed
        head_values: dict[str, np.ndarray] = {}
        head_todo: dict[str, np.ndarray] = {}
        for i, job in enumerate(jobs):
            job_rows = rows[spans[i]]
            job_rows = job_rows[job_rows >= 0]
            if isinstance(job, EmbedJob):
                for v in ENCODER_VIEWS if "fused" in job.views else job.views:
                    need[v].update(job_rows.tolist())
        for name in dict.fromkeys(h for job in jobs if isinstance(job, PredictJob) for h in job.heads):
            head = self.heads[name]
            wanted = np.unique(
                np.concatenate(
                    [
                        rows[spans[i]]
                        for i, job in enumerate(jobs)
                        if isinstance(job, PredictJob) and name in job.heads
                    ]
                )
            )
            wanted = wanted[wanted >= 0]
            values = np.full((len(unique), len(head.tasks)), np.nan, dtype=np.float64)
            remembered = self.predictions.lookup(name, self.head_versions[name], [unique[r] for r in wanted])
            todo = np.array([r for r, m in zip(wanted, remembered, strict=True) if m is None], dtype=np.int64)
            for r, m in zip(wanted, remembered, strict=True):
                if m is not None:
                    values[r] = m
            head_values[name], head_todo[name] = values, todo
            for v in _head_views(head):
                need[v].update(todo.tolist())
        tables: dict[str, np.ndarray] = {}
        for v in ENCODER_VIEWS:
            table = np.full((len(unique), self.embedder.dims[v]), np.nan, dtype=np.float32)
            if need[v]:
                idx = np.fromiter(sorted(need[v]), dtype=np.int64)
                table[idx] = self.embedder.embed_canonical([unique[r] for r in idx], v)
            tables[v] = table
        t1 = time.perf_counter()
        self.metrics.model_time.labels("embed").observe(t1 - t0)

        for name, todo in head_todo.items():
            if todo.size:
                head = self.heads[name]
                predicted = head.predict({v: tables[v][todo] for v in _head_views(head)})
                predicted = np.asarray(predicted, dtype=np.float64).reshape(todo.size, len(head.tasks))
                head_values[name][todo] = predicted
                self.predictions.store(name, self.head_versions[name], [unique[r] for r in todo], predicted)
        self.metrics.model_time.labels("heads").observe(time.perf_counter() - t1)

        results = [JobResult(canonical=canonical[s], errors=errors[s]) for s in spans]
        for i, job in enumerate(jobs):
            job_rows = rows[spans[i]]
            if isinstance(job, EmbedJob):
                results[i].vectors = {v: _gather(_view_table(tables, v), job_rows) for v in job.views}
            else:
                results[i].predictions = {name: _gather(head_values[name], job_rows) for name in job.heads}
        return results

