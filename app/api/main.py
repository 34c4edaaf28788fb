"""The FastAPI application, assembled in one place: routers, middleware, error mapping, lifespan.

``uvicorn app.api.main:create_app --factory`` (what ``molfusion serve`` runs) builds one app per
worker process, and each worker loads its own models. With one worker they load in the background:
``/v1/health/live`` answers at once and ``/v1/health/ready`` turns 200 when they are loaded. With
several workers (``MOLFUSION_WORKERS``) each worker loads before it accepts connections, so no
request reaches a worker that is still loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.api import embeddings, health, info, predictions, properties, recommendations
from app.api.deps import require_api_key
from app.api.docs_pages import add_docs_pages
from app.api.fastpath import PredictFastPath
from app.api.limits import BodySizeLimit
from app.api.schemas import ErrorResponse
from app.api.service import ModelService, NotReadyError, UnknownPropertyError
from app.metrics import CONTENT_TYPE, MetricsMiddleware, ServiceMetrics
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

DESCRIPTION = """Molecular property prediction from fused embeddings of a SMILES transformer and a graph
encoder. Send SMILES, get embeddings or property predictions back, one result per input in order.
When `MOLFUSION_API_KEY` is set every `/v1` call needs the `X-API-Key` header."""


async def _load(service: ModelService) -> None:
    try:
        await asyncio.to_thread(service.load)
    except Exception:  # already logged with its reason; /v1/health/ready reports it
        return


def _unreachable(exc: BaseException) -> bool:
    """A service that could not be reached (refused, reset, timed out), not a fault of ours."""
    return isinstance(exc, (OSError, RedisConnectionError, RedisTimeoutError))


@contextlib.asynccontextmanager
async def _optional_lifespan(lifespan, app: FastAPI, component: str) -> AsyncIterator[None]:
    """Run a router's lifespan; if it fails to start (e.g. its Redis is down) log it and serve anyway,
    so predictions never depend on another component's start-up."""
    context = lifespan(app)
    try:
        await context.__aenter__()
    except Exception as exc:
        if _unreachable(exc):  # e.g. Redis not up yet: expected, and the component connects on first use
            log.warning(
                "component unavailable at start-up; serving without it until it connects",
                extra={"component": component, "error": f"{type(exc).__name__}: {exc}"},
            )
        else:
            log.error(
                "component failed to start; serving without it",
                exc_info=True,
                extra={"component": component, "error": f"{type(exc).__name__}: {exc}"},
            )
        yield
        return
    try:
        yield
    finally:
        await context.__aexit__(None, None, None)


def _json_safe(value: object) -> object:
    """``value`` when strict JSON (no NaN/Infinity, valid UTF-8) can carry it, else its repr."""
    try:
        json.dumps(value, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError):
        return repr(value)[:500]
    return value


def create_app(settings: Settings | None = None, embedder=None) -> FastAPI:
    """Build the app. ``embedder`` (optional) replaces the one built from settings, e.g. in tests."""
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    service = ModelService(settings, metrics, embedder=embedder)
    metrics.track_cache(lambda: service.cache.state())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        loading = asyncio.create_task(_load(service), name="load-models")
        if settings.workers > 1:
            # Several workers share one socket: a worker must not accept connections before its models
            # are loaded, or it would answer 503 while its siblings are ready.
            await asyncio.shield(loading)
        tasks = [loading, asyncio.create_task(service.watch_cache(), name="watch-cache")]
        try:
            async with _optional_lifespan(recommendations.lifespan, app, "recommendation jobs"):
                yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await service.stop()

    app = FastAPI(
        title="molfusion",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # add_docs_pages serves both pages with local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = metrics

    # The key check is attached only when a key is configured: FastAPI's dependency resolution is a
    # measurable share of a cached request, and /docs then shows the security scheme only when it applies.
    keyed = [Depends(require_api_key)] if settings.api_key else []
    errors = (
        {401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key."}}
        if settings.api_key
        else {}
    )
    for module in (embeddings, predictions, properties, info):
        app.include_router(
            module.router,
            dependencies=keyed,
            responses={**errors, 503: {"model": ErrorResponse, "description": "Models are still loading."}},
        )
    app.include_router(health.router, dependencies=keyed, responses=errors)
    app.include_router(recommendations.router, dependencies=keyed)
    app.include_router(recommendations.datasets_router, dependencies=keyed)

    add_docs_pages(app)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, with inputs that JSON cannot carry (NaN, Infinity, lone surrogates) echoed
        as their repr: the default handler failed on them with a 500."""
        detail = [{**error, "input": _json_safe(error.get("input"))} for error in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)

    @app.exception_handler(RedisError)
    async def _jobs_redis_down(request: Request, exc: RedisError) -> JSONResponse:
        """Only the recommendation jobs raise Redis errors (the embedding cache degrades to computing):
        their store or queue is down, which is the operator's side and temporary."""
        log.warning("job store unavailable", extra={"path": request.url.path, "error": type(exc).__name__})
        return JSONResponse(
            {"detail": f"recommendation job store (Redis) unavailable: {type(exc).__name__}; retry later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(NotReadyError)
    async def _not_ready(request: Request, exc: NotReadyError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"service not ready: {exc}"}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.exception_handler(UnknownPropertyError)
    async def _unknown_property(request: Request, exc: UnknownPropertyError) -> JSONResponse:
        detail = [
            {
                "loc": ["body", "properties"],
                "type": "unknown_property",
                "input": name,
                "msg": (
                    f"property {name!r} is not served (its head was skipped at start-up: {exc.skipped[name]})"
                    if name in exc.skipped
                    else f"unknown property {name!r}"
                )
                + f"; served properties: {exc.served}",
            }
            for name in exc.unknown
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    if settings.memo_items > 0:  # innermost: within the body limit and the request metrics
        app.add_middleware(PredictFastPath, service=service)
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_request_bytes, upload_max_bytes=settings.upload_max_bytes
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _version() -> str:
    from app.api.info import _package_version

    return _package_version()
