"""The service with a Redis cache: shared vectors, and a real Redis outage mid-test (still 200)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from test_api_helpers import api_heads_fixture, make_settings, wait_ready  # noqa: F401
from test_cache_helpers import PrivateRedis

from app.api.main import create_app
from models.embedding_cache import cache_key

pytestmark = pytest.mark.redis


def _ready(client) -> dict:
    return client.get("/v1/health/ready").json()


def test_redis_outage_mid_test_then_recovery(tiny_checkpoints, api_heads_dir, tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    settings = make_settings(
        tiny_checkpoints,
        api_heads_dir,
        redis_url=server.url,
        redis_timeout_s=0.2,
        redis_retry_s=0.3,
        cache_dtype="float32",
        cache_namespace="svc:",
        memo_items=0,  # every request goes through the embedding cache
    )
    try:
        with TestClient(create_app(settings)) as client:
            wait_ready(client)
            embedder = client.app.state.service.embedder
            body = {"smiles": ["CCO", "c1ccccc1N"], "properties": ["esol"]}
            first = client.post("/v1/predict", json=body)
            assert first.status_code == 200
            redis = server.client()
            key = "svc:" + cache_key(embedder.versions["smiles"], "CCO")
            assert redis.exists(key)  # written through to Redis with the namespace
            assert client.get("/v1/info").json()["cache"]["backend"] == "redis"
            again = client.post("/v1/predict", json=body).json()
            assert again == first.json()  # float32 cache: identical values from cached vectors
            assert client.app.state.service.cache.state()["hits"] >= 2

            server.stop()  # the outage
            for smiles in (["CCO"], ["CCCN"], ["c1ccccc1N", "CCO"]):
                r = client.post("/v1/predict", json={"smiles": smiles, "properties": ["esol"]})
                assert r.status_code == 200 and r.json()["results"][0]["status"] == "ok"
                assert client.post("/v1/embed", json={"smiles": smiles}).status_code == 200
            ready = _ready(client)
            assert ready["status"] == "ready" and ready["degraded"] is True
            assert ready["cache"]["healthy"] is False and ready["cache"]["last_error"]
            info = client.get("/v1/info").json()["cache"]
            assert info["healthy"] is False and info["down_since"]
            assert 'molfusion_cache_up{backend="redis"} 0.0' in client.get("/metrics").text

            server.start()  # back (empty): the background probe notices without any request
            deadline = time.monotonic() + 10
            while _ready(client)["degraded"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _ready(client)["degraded"] is False
            assert client.post("/v1/predict", json=body).status_code == 200
            assert server.client().exists(key)  # writes reach the new server again
    finally:
        server.stop()


def test_unreachable_redis_at_startup_still_serves(tiny_checkpoints, api_heads_dir):
    from test_cache_helpers import free_port

    nobody = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(
        tiny_checkpoints, api_heads_dir, redis_url=nobody, redis_timeout_s=0.1, redis_retry_s=5.0
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        deadline = time.monotonic() + 5  # before any request: the start-up probe found Redis down
        while _ready(client)["degraded"] is not True and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _ready(client)["degraded"] is True
        r = client.post("/v1/embed", json={"smiles": ["CCO", "bad("]})
        assert r.status_code == 200
        assert [i["status"] for i in r.json()["results"]] == ["ok", "invalid"]
        assert _ready(client)["degraded"] is True


def test_job_routes_answer_503_while_their_redis_is_down(tiny_checkpoints, api_heads_dir):
    """The job store and queue are down: 503 with Retry-After, soon (was a bare 500 after 5 s)."""
    from test_cache_helpers import free_port

    nobody = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(tiny_checkpoints, api_heads_dir, redis_url=nobody, redis_timeout_s=0.1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        t0 = time.perf_counter()
        got = client.get(f"/v1/recommendations/{'a' * 32}")
        assert got.status_code == 503 and got.headers["Retry-After"] == "5"
        assert "job store (Redis) unavailable" in got.json()["detail"]
        rows = "".join(f"{'C' * i}O,{i % 2}\n" for i in range(1, 61))  # a valid upload: 60 alcohols
        upload = {"file": ("t.csv", f"smiles,y\n{rows}".encode())}
        posted = client.post("/v1/recommendations", files=upload, data={"method": "none"})
        assert posted.status_code == 503, posted.text
        assert time.perf_counter() - t0 < 6
        assert client.post("/v1/embed", json={"smiles": ["CCO"]}).status_code == 200  # the rest works


def test_redis_down_at_startup_is_one_warning_line_not_a_traceback(tiny_checkpoints, api_heads_dir, caplog):
    """Redis starting after the API is expected (compose starts them together): the job component logs
    one warning naming the error and connects on first use; a traceback is kept for real faults."""
    import logging

    from test_cache_helpers import free_port

    nobody = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(tiny_checkpoints, api_heads_dir, redis_url=nobody, redis_timeout_s=0.1)
    with caplog.at_level(logging.INFO, logger="app.api.main"), TestClient(create_app(settings)) as client:
        wait_ready(client)
    records = [r for r in caplog.records if r.name == "app.api.main" and getattr(r, "component", None)]
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.levelname == "WARNING" and record.exc_info is None
    assert record.component == "recommendation jobs" and "Connect" in record.error
