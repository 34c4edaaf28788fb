"""Recommendation jobs: a job store, a queue, and the function that runs one job.

Two deployments, one code path:

- **Redis** (``MOLFUSION_REDIS_URL`` set): jobs live in Redis (a hash per job plus the uploaded CSV,
  both expiring after ``job_ttl_s``), the API enqueues them on an arq queue and a separate
  ``molfusion worker`` process runs them. Results therefore survive an API restart.
- **Embedded** (no Redis): the same records in process memory and an in-process runner task that runs
  one job at a time in a thread.

State machine: ``queued → running → done | failed``, and ``queued | running → cancelled``. Every
transition is conditional on the current state (a Lua script in Redis), so a late progress update can
never revive a cancelled job. While a job runs, its runner refreshes a lease key every few seconds
(``job_lease_s`` expiry); a ``running`` job whose lease has expired belongs to a dead worker and is
marked ``failed`` when read (and by every worker at start-up). Cancellation and the time limit
(``job_timeout_s``) are cooperative: the recommendation checks a flag at every progress report.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.settings import Settings

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
KEY = "molfusion:job:"
QUEUE_NAME = "molfusion:recommendations"
JOB_FUNCTION = "recommendation_job"


class JobCancelled(Exception):
    """Raised inside a running recommendation when its job was cancelled or timed out."""


# --------------------------------------------------------------------------------------------------
# settings-derived locations and the job body
# --------------------------------------------------------------------------------------------------


def extra_catalog_path(settings: Settings) -> Path:
    """The user-registered catalog JSON: ``catalog_extra``, else ``<heads_dir>/catalog_extra.json``,
    else ``~/.molfusion/catalog_extra.json``."""
    if settings.catalog_extra is not None:
        return settings.catalog_extra
    base = settings.heads_dir if settings.heads_dir is not None else Path.home() / ".molfusion"
    return base / "catalog_extra.json"


def user_datasets_dir(settings: Settings) -> Path:
    """Where data sets uploaded through the API are stored (next to the user catalog JSON)."""
    return extra_catalog_path(settings).parent / "user_datasets"


def grouping_cache_dir(settings: Settings) -> Path:
    return settings.grouping_cache_dir or Path.home() / ".cache" / "molfusion" / "grouping"


_embedder_lock = threading.Lock()
_embedder: Any = None


def shared_embedder() -> Any:
    """One embedder per process for recommendation jobs (built from settings on first use)."""
    global _embedder
    with _embedder_lock:
        if _embedder is None:
            from app.factory import build_embedder

            _embedder = build_embedder()
        return _embedder


def reset_shared_embedder() -> None:
    """Forget the process embedder (tests switch encoders between cases)."""
    global _embedder
    with _embedder_lock:
        embedder, _embedder = _embedder, None
    if embedder is not None:
        embedder.close()  # its featurization worker processes, if a large call started them


def recommendation_options(settings: Settings, method: str, exclude: list[str] | None = None):
    from grouping.recommend import RecommendOptions
    from grouping.routing import MolGroupConfig

    return RecommendOptions(
        method=method,
        exclude=list(exclude or []),
        max_aux_rows=settings.recommend_max_aux_rows,
        evidence_seeds=settings.recommend_evidence_seeds,
        aux_weight=settings.recommend_aux_weight,
        transfer=settings.recommend_transfer,
        routing=MolGroupConfig(
            repeats=settings.recommend_routing_repeats,
            structure_prior=settings.recommend_structure_prior,
        ),
    )


def validate_upload(data: bytes, params: dict, settings: Settings, policy=None):
    """Parse and validate an uploaded target CSV (raises :class:`grouping.target.TargetError`)."""
    from app.factory import parse_policy
    from grouping.target import parse_target, read_csv_bytes

    df = read_csv_bytes(data, settings.upload_max_bytes, settings.upload_max_rows)
    policy = policy or parse_policy(settings)
    return parse_target(
        df,
        params.get("name") or "target",
        params.get("smiles_column"),
        params.get("targets"),
        params.get("task_type") or "auto",
        settings.upload_min_rows,
        policy,
    )


def run_recommendation(
    data: bytes,
    params: dict,
    settings: Settings,
    progress: Callable[[float, str], None],
    embedder: Any = None,
) -> dict:
    """The job body: validate the upload, then :func:`grouping.recommend.recommend` with the settings."""
    from grouping.catalog import load_catalog
    from grouping.recommend import recommend

    embedder = embedder or shared_embedder()
    target = validate_upload(data, params, settings, embedder.policy)
    return recommend(
        target,
        load_catalog(extra_catalog_path(settings)),
        settings.data_dir,
        embedder,
        grouping_cache_dir(settings),
        recommendation_options(settings, params.get("method") or "molgroup", params.get("exclude")),
        progress,
    )


# --------------------------------------------------------------------------------------------------
# stores
# --------------------------------------------------------------------------------------------------


def new_job(params: dict) -> dict:
    return {
        "id": uuid.uuid4().hex,
        "status": "queued",
        "progress": 0.0,
        "message": "queued",
        "created_at": time.time(),
        "params": params,
    }


class JobStore(Protocol):
    async def create(self, job: dict, payload: bytes) -> None: ...

    async def get(self, job_id: str) -> dict | None: ...

    async def payload(self, job_id: str) -> bytes | None: ...

    async def transition(self, job_id: str, allowed: tuple[str, ...], **fields: Any) -> bool: ...

    async def touch_lease(self, job_id: str) -> None: ...

    async def lease_alive(self, job_id: str) -> bool: ...

    async def running_ids(self) -> list[str]: ...

    async def close(self) -> None: ...


class MemoryJobStore:
    """Jobs in process memory (embedded mode); a running job's lease is its runner being alive."""

    def __init__(self) -> None:
        self._jobs: dict[str, dict] = {}
        self._payloads: dict[str, bytes] = {}
        self._lock = threading.Lock()

    async def create(self, job: dict, payload: bytes) -> None:
        with self._lock:
            self._jobs[job["id"]] = dict(job)
            self._payloads[job["id"]] = payload

    async def get(self, job_id: str) -> dict | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return dict(job) if job is not None else None

    async def payload(self, job_id: str) -> bytes | None:
        return self._payloads.get(job_id)

    async def transition(self, job_id: str, allowed: tuple[str, ...], **fields: Any) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job["status"] not in allowed:
                return False
            job.update(fields)
            if fields.get("status") in FINAL:
                self._payloads.pop(job_id, None)
            return True

    async def touch_lease(self, job_id: str) -> None:
        return None

    async def lease_alive(self, job_id: str) -> bool:
        return True

    async def running_ids(self) -> list[str]:
        with self._lock:
            return [k for k, v in self._jobs.items() if v["status"] == "running"]

    async def close(self) -> None:
        return None


# Set the given fields only when the job exists and its status is one of ARGV[1] (comma-separated).
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 0 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. cur .. ',', 1, true) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""
_JSON_FIELDS = ("params", "result")


class RedisJobStore:
    """Jobs as Redis hashes ``molfusion:job:<id>`` (JSON for nested fields), the upload under ``:input``
    and the lease under ``:lease``; everything expires after ``ttl_s``."""

    def __init__(self, url: str, ttl_s: int, lease_s: int) -> None:
        import redis.asyncio as redis

        self.redis = redis.from_url(url, socket_connect_timeout=2)
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self._transition = self.redis.register_script(_TRANSITION)

    @staticmethod
    def _encode(fields: dict) -> dict[str, str]:
        return {
            k: json.dumps(v) if k in _JSON_FIELDS or not isinstance(v, str) else v
            for k, v in fields.items()
        }

    @staticmethod
    def _decode(raw: dict[bytes, bytes]) -> dict:
        out: dict[str, Any] = {}
        for k, v in raw.items():
            key, text = k.decode(), v.decode()
            if key in ("id", "status", "message", "error", "worker"):
                out[key] = text
            else:
                out[key] = json.loads(text)
        return out

    async def create(self, job: dict, payload: bytes) -> None:
        key = KEY + job["id"]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=self._encode(job))
            pipe.expire(key, self.ttl_s)
            pipe.set(key + ":input", payload, ex=self.ttl_s)
            await pipe.execute()

    async def get(self, job_id: str) -> dict | None:
        raw = await self.redis.hgetall(KEY + job_id)
        return self._decode(raw) if raw else None

    async def payload(self, job_id: str) -> bytes | None:
        return await self.redis.get(KEY + job_id + ":input")

    async def transition(self, job_id: str, allowed: tuple[str, ...], **fields: Any) -> bool:
        flat: list[str] = []
        for k, v in self._encode(fields).items():
            flat += [k, v]
        ok = bool(await self._transition(keys=[KEY + job_id], args=[",".join(allowed), *flat]))
        if ok and fields.get("status") in FINAL:
            await self.redis.delete(KEY + job_id + ":input", KEY + job_id + ":lease")
        return ok

    async def touch_lease(self, job_id: str) -> None:
        await self.redis.set(KEY + job_id + ":lease", str(time.time()), ex=self.lease_s)

    async def lease_alive(self, job_id: str) -> bool:
        return bool(await self.redis.exists(KEY + job_id + ":lease"))

    async def running_ids(self) -> list[str]:
        ids = []
        async for key in self.redis.scan_iter(match=KEY + "*", count=500):
            name = key.decode()[len(KEY) :]
            if ":" not in name and await self.redis.hget(key, "status") == b"running":
                ids.append(name)
        return ids

    async def close(self) -> None:
        await self.redis.aclose()


def build_store(settings: Settings) -> JobStore:
    if settings.jobs_redis:
        return RedisJobStore(settings.jobs_redis, settings.job_ttl_s, settings.job_lease_s)
    return MemoryJobStore()


async def mark_failed(store: JobStore, job_id: str, reason: str) -> bool:
    """``running`` -> ``failed`` with ``reason`` (the progress message stops naming the last phase)."""
    return await store.transition(
        job_id, ("running",), status="failed", error=reason, message="failed", finished_at=time.time()
    )


JOB_ID = re.compile(r"^[0-9a-f]{32}$")  # new_job's uuid4().hex


async def read_job(store: JobStore, job_id: str) -> dict | None:
    """The job (None for an id that is not a job id), with a ``running`` job whose lease expired turned
    into ``failed`` first."""
    if not JOB_ID.match(job_id):  # e.g. "<id>:lease" would otherwise reach the job's side keys
        return None
    job = await store.get(job_id)
    if job is not None and job["status"] == "running" and not await store.lease_alive(job_id):
        reason = "worker stopped responding (no heartbeat); the job was abandoned"
        if await mark_failed(store, job_id, reason):
            log.warning("job abandoned by its worker", extra={"job": job_id, "worker": job.get("worker")})
        job = await store.get(job_id)
    return job


async def sweep_abandoned(store: JobStore) -> int:
    """Fail every running job whose lease has expired; returns how many."""
    n = 0
    for job_id in await store.running_ids():
        before = await store.get(job_id)
        after = await read_job(store, job_id)
        n += int(before is not None and after is not None and after["status"] == "failed")
    return n


# --------------------------------------------------------------------------------------------------
# executing a job (shared by the in-process runner and the arq worker)
# --------------------------------------------------------------------------------------------------


@dataclass
class JobControl:
    """Shared between the job thread (reports progress) and the event loop (heartbeat, cancel)."""

    cancel: threading.Event = field(default_factory=threading.Event)
    fraction: float = 0.0
    message: str = "starting"
    reason: str = "cancelled"

    def report(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(fraction), message
        if self.cancel.is_set():
            raise JobCancelled(self.reason)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def execute(
    store: JobStore,
    job_id: str,
    settings: Settings,
    body: Callable[[bytes, dict, Callable[[float, str], None]], dict] | None = None,
) -> str:
    """Claim a queued job and run it to a final state; returns that state (or ``skipped``)."""
    await store.touch_lease(job_id)  # before the claim, so no reader sees "running" without a lease
    claimed = await store.transition(
        job_id,
        ("queued",),
        status="running",
        started_at=time.time(),
        worker=worker_name(),
        message="starting",
    )
    if not claimed:
        return "skipped"
    job = await store.get(job_id) or {}
    data = await store.payload(job_id)
    if data is None:
        await mark_failed(store, job_id, "uploaded file expired")
        return "failed"
    params = job.get("params", {})
    control = JobControl()
    run = body or (lambda d, p, cb: run_recommendation(d, p, settings, cb))
    task = asyncio.create_task(asyncio.to_thread(run, data, params, control.report))
    started = time.monotonic()
    beat = max(1.0, min(5.0, settings.job_lease_s / 3))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=beat)
            await store.touch_lease(job_id)
            current = await store.get(job_id)
            if current is None or current["status"] == "cancelled":
                control.cancel.set()
            elif time.monotonic() - started > settings.job_timeout_s:
                control.reason = f"timed out after {settings.job_timeout_s} s (MOLFUSION_JOB_TIMEOUT_S)"
                control.cancel.set()
            else:
                await store.transition(
                    job_id, ("running",), progress=round(control.fraction, 4), message=control.message
                )
        result = task.result()
    except JobCancelled:
        if control.reason != "cancelled":
            await mark_failed(store, job_id, control.reason)
            return "failed"
        return "cancelled"
    except asyncio.CancelledError:  # the worker is shutting down or arq's own timeout fired
        control.reason = "worker stopped while running the job"
        control.cancel.set()
        await mark_failed(store, job_id, control.reason)
        raise
    except Exception as exc:
        from grouping.catalog import CatalogError
        from grouping.target import TargetError

        expected = isinstance(exc, TargetError | CatalogError)  # the user's input or catalog, not a bug
        reason = str(exc) if expected else f"{type(exc).__name__}: {exc}"
        if not expected:
            log.exception("recommendation job failed", extra={"job": job_id})
        await mark_failed(store, job_id, reason)
        return "failed"
    done = await store.transition(
        job_id,
        ("running",),
        status="done",
        progress=1.0,
        message="done",
        result=result,
        finished_at=time.time(),
    )
    log.info(
        "recommendation job done", extra={"job": job_id, "seconds": round(time.monotonic() - started, 2)}
    )
    return "done" if done else "cancelled"


# --------------------------------------------------------------------------------------------------
# queues
# --------------------------------------------------------------------------------------------------


class InProcessRunner:
    """Runs queued jobs one at a time in this process (embedded mode)."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        body: Callable[[bytes, dict, Callable[[float, str], None]], dict] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.body = body
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def enqueue(self, job_id: str) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="recommendation-runner")
        await self.queue.put(job_id)

    async def _loop(self) -> None:
        while True:
            job_id = await self.queue.get()
            try:
                await execute(self.store, job_id, self.settings, self.body)
            except Exception:
                log.exception("in-process job runner error", extra={"job": job_id})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _serialize(message: dict) -> bytes:
    """arq messages as JSON (job id strings and timestamps only), not pickle."""
    return json.dumps(message, default=str).encode()


def _deserialize(blob: bytes) -> dict:
    return json.loads(blob)


class ArqQueue:
    """Enqueues jobs for ``molfusion worker`` processes through arq."""

    def __init__(self, pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, url: str) -> ArqQueue:
        from arq import create_pool
        from arq.connections import RedisSettings

        # One quick retry: a request waits ~0.5 s (not arq's 5 x 1 s) before a down Redis gives a 503.
        redis_settings = RedisSettings.from_dsn(url)
        redis_settings.conn_retries, redis_settings.conn_retry_delay = 1, 0.5
        return cls(
            await create_pool(
                redis_settings,
                default_queue_name=QUEUE_NAME,
                job_serializer=_serialize,
                job_deserializer=_deserialize,
            )
        )

    async def enqueue(self, job_id: str) -> None:
        await self.pool.enqueue_job(JOB_FUNCTION, job_id, _job_id=job_id)

    async def close(self) -> None:
        await self.pool.aclose()


@dataclass
class JobService:
    """What the API needs: a store and a queue (arq or in-process)."""

    store: JobStore
    queue: InProcessRunner | ArqQueue
    settings: Settings

    @classmethod
    async def create(cls, settings: Settings, body=None) -> JobService:
        store = build_store(settings)
        if settings.jobs_redis:
            return cls(store, await ArqQueue.connect(settings.jobs_redis), settings)
        return cls(store, InProcessRunner(store, settings, body), settings)

    async def submit(self, params: dict, payload: bytes) -> dict:
        job = new_job(params)
        await self.store.create(job, payload)
        await self.queue.enqueue(job["id"])
        log.info("recommendation job queued", extra={"job": job["id"], "method": params.get("method")})
        return job

    async def cancel(self, job_id: str) -> bool:
        return await self.store.transition(
            job_id, ("queued", "running"), status="cancelled", message="cancelled", finished_at=time.time()
        )

    async def close(self) -> None:
        await self.queue.close()
        await self.store.close()


# --------------------------------------------------------------------------------------------------
# the arq worker (``molfusion worker``)
# --------------------------------------------------------------------------------------------------


async def _worker_startup(ctx: dict) -> None:
    from app.settings import get_settings

    settings = get_settings()
    ctx["settings"] = settings
    ctx["store"] = build_store(settings)
    swept = await sweep_abandoned(ctx["store"])
    log.info(
        "recommendation worker started", extra={"worker": worker_name(), "abandoned_jobs_failed": swept}
    )


async def _worker_shutdown(ctx: dict) -> None:
    await ctx["store"].close()


async def recommendation_job(ctx: dict, job_id: str) -> str:
    """arq task: run one recommendation job (state kept in the job store, not in arq's result)."""
    return await execute(ctx["store"], job_id, ctx["settings"])


def worker_settings(settings: Settings) -> dict:
    """arq worker configuration; arq's own timeout sits above ours so ours reports first."""
    from arq.connections import RedisSettings

    if not settings.jobs_redis:
        raise ValueError(
            "molfusion worker needs MOLFUSION_JOBS_REDIS_URL or MOLFUSION_REDIS_URL "
            "(jobs run in-process without Redis)"
        )
    return {
        "functions": [recommendation_job],
        "redis_settings": RedisSettings.from_dsn(settings.jobs_redis),
        "queue_name": QUEUE_NAME,
        "on_startup": _worker_startup,
        "on_shutdown": _worker_shutdown,
        "max_jobs": 1,
        "max_tries": 1,
        "job_timeout": settings.job_timeout_s + 60,
        "keep_result": 60,
        "handle_signals": True,
        "job_serializer": _serialize,
        "job_deserializer": _deserialize,
    }
