"""Prometheus metrics of the REST service, on a registry owned by each app instance.

Exposed at ``/metrics`` (text exposition format). With ``--workers N`` every worker process keeps its
own registry, so a scrape sees the worker that answered it; run one worker per container (and scale
containers) when exact totals matter.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.batcher import BatchStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class _CacheCollector(Collector):
    """Reads the embedding cache's own counters at scrape time (the cache counts, we only report)."""

    def __init__(self, state: Callable[[], dict | None]) -> None:
        self._state = state

    def collect(self):
        state = self._state()
        if state is None:
            return
        backend = state.get("backend", "none")
        for name, key, doc in (
            ("molfusion_cache_hits", "hits", "Embedding-cache lookups answered from the cache."),
            ("molfusion_cache_misses", "misses", "Embedding-cache lookups that had to be computed."),
            ("molfusion_cache_errors", "errors", "Cache backend failures (each one degrades to a miss)."),
        ):
            family = CounterMetricFamily(name, doc, labels=["backend"])
            family.add_metric([backend], float(state.get(key, 0)))
            yield family
        up = GaugeMetricFamily(
            "molfusion_cache_up", "1 when the cache backend answers, 0 while degraded.", labels=["backend"]
        )
        up.add_metric([backend], 1.0 if state.get("healthy", True) else 0.0)
        yield up


class ServiceMetrics:
    """All service metrics; ``render()`` gives the exposition text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "molfusion_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "molfusion_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.molecules = Counter(
            "molfusion_molecules",
            "Molecules answered, by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.batch_molecules = Histogram(
            "molfusion_batch_molecules",
            "Molecules per micro-batch.",
            buckets=_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "molfusion_batch_requests",
            "Requests coalesced per micro-batch.",
            buckets=_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.batch_queue_wait = Histogram(
            "molfusion_batch_queue_wait_seconds",
            "Wait of a batch's oldest request before the batch started.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.memo_answers = Counter(
            "molfusion_memo_answers",
            "Predict requests answered from the in-process memos on the event loop.",
            registry=self.registry,
        )
        self._molecule_counters: dict[tuple[str, ...], Counter] = {}
        self._request_counters: dict[tuple[str, ...], Counter] = {}
        self._latency_children: dict[tuple[str, ...], Histogram] = {}
        self.model_time = Histogram(
            "molfusion_model_seconds",
            "Time in model work per micro-batch, by stage (embed, heads, total).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def track_cache(self, state: Callable[[], dict | None]) -> None:
        """Report the cache's hit/miss/error counters and health, read from ``state()`` at scrape time."""
        self.registry.register(_CacheCollector(state))

    def count_molecules(self, endpoint: str, ok: int, invalid: int) -> None:
        """Add answered molecules of ``endpoint`` by status."""
        for status, n in (("ok", ok), ("invalid", invalid)):
            _child(self._molecule_counters, self.molecules, (endpoint, status)).inc(n)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request and record its latency."""
        _child(self._request_counters, self.requests, (method, route, str(status))).inc()
        _child(self._latency_children, self.latency, (method, route)).observe(seconds)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_molecules.observe(stats.items)
        self.batch_requests.observe(stats.requests)
        self.batch_queue_wait.observe(stats.queue_wait_s)
        self.model_time.labels("total").observe(stats.run_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_MAX_CHILDREN = 10_000  # label sets are bounded anyway (routes x statuses); this bounds the look-up dicts


def _child(children: dict, metric, labels: tuple[str, ...]):
    """``metric.labels(*labels)``, looked up once and then kept in ``children``."""
    child = children.get(labels)
    if child is None:
        child = metric.labels(*labels)
        if len(children) < _MAX_CHILDREN:
            children[labels] = child
    return child


ROUTE_SCOPE_KEY = "molfusion.route"


class MetricsMiddleware:
    """Pure ASGI middleware counting requests and timing them, labelled by the matched route template
    (``/v1/predict``, never the raw path, so label cardinality stays bounded). A request answered
    before routing (``app.api.fastpath``) names its template in ``scope[ROUTE_SCOPE_KEY]``."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = scope.get(ROUTE_SCOPE_KEY) or getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(
                scope.get("method", ""), template, status, time.perf_counter() - started
            )
