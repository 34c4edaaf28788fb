"""Helpers for a real Redis: the shared server (127.0.0.1:6379, isolated by a key namespace) and
private throw-away servers that tests may stop and restart to simulate outages; and, at the end, tests
of how both caches count a stored vector of another dimension than the encoder's."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis

from models.embedding_cache import LRUVectorCache, RedisVectorCache, VectorCache, cache_key

SHARED_URL = "redis://127.0.0.1:6379/0"


def shared_redis_or_fail() -> redis.Redis:
    client = redis.Redis.from_url(SHARED_URL, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"these tests need a real Redis at {SHARED_URL} (start: redis-server)") from exc
    return client


def unique_namespace() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


def delete_namespace(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(match=namespace + "*", count=1000))
    if keys:
        client.delete(*keys)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of our own on a free port (no persistence); ``stop()`` is a real outage."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                str(self.workdir),
                "--enable-debug-command",
                "local",
                "--pidfile",
                str(self.workdir / f"redis-{self.port}.pid"),
                "--logfile",
                str(self.workdir / f"redis-{self.port}.log"),
            ],
            check=True,
            capture_output=True,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True, timeout=10
        )
        client = redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
            except redis.RedisError:
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis on port {self.port} did not stop")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1)


# -- a stored vector of another dimension than the encoder's -----------------------------------------

WRONG_DIM_DB = 11  # a database of the local Redis that no other test uses (conftest.own_redis_db)


def _embedder(cache: VectorCache, tiny_checkpoints: dict[str, Path]):
    from models.embedder import Embedder

    return Embedder(tiny_checkpoints["smiles"], tiny_checkpoints["graph"], device="cpu", cache=cache)


def _embed(embedder, smiles: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The SMILES-view vectors through the embedder's cache, and computed without it."""
    got = embedder.embed(smiles, views=("smiles",)).vectors["smiles"]
    cache, embedder.cache = embedder.cache, None
    try:
        want = embedder.embed(smiles, views=("smiles",)).vectors["smiles"]
    finally:
        embedder.cache = cache
    return got, want


def _counters(cache: VectorCache) -> tuple[int, int, int]:
    state = cache.state()
    return state["hits"], state["misses"], state["unreadable"]


def test_memory_cache_counts_a_vector_of_another_dimension_as_an_unreadable_miss(tiny_checkpoints):
    """The embedder treats a stored vector of another length than its encoder's as a miss, but the
    cache counted it as a hit. Now it is an unreadable miss, and the recomputed vector replaces it."""
    cache = LRUVectorCache(max_items=100, dtype="float32")
    embedder = _embedder(cache, tiny_checkpoints)
    dim = embedder.dims["smiles"]
    key = cache_key(embedder.vector_versions["smiles"], "CCO")
    cache.set_many([(key, np.ones(dim + 5, np.float32))])  # written by something else
    got, want = _embed(embedder, ["CCO", "CCN"])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert _counters(cache) == (0, 2, 1)  # CCO: an unreadable miss (was a hit); CCN: a plain miss
    (stored,) = cache.get_many([key])
    assert stored is not None and stored.shape == (dim,)
    np.testing.assert_allclose(stored, want[0], atol=1e-6)  # rewritten with the encoder's vector
    assert _counters(cache) == (1, 2, 1)
    embedder.embed(["CCO", "CCN"], views=("smiles",))
    assert _counters(cache) == (3, 2, 1)  # both hits now, nothing more counted


def test_memory_cache_counts_damaged_values_as_unreadable():
    cache = LRUVectorCache(max_items=10, dtype="float32")
    cache.set_many([("k", np.full(4, np.nan, np.float32))])
    assert cache.get_many(["k", "missing"]) == [None, None]
    assert _counters(cache) == (0, 2, 1)


@pytest.mark.redis
def test_redis_cache_counts_a_vector_of_another_dimension_as_an_unreadable_miss(
    own_redis_db, tiny_checkpoints, caplog: pytest.LogCaptureFixture
):
    """A vector written by a float32 deployment and read by a float16 one has twice the dimension (and
    finite values): the embedder recomputes it; the cache counts an unreadable miss, logs it and holds
    the float16 vector afterwards."""
    client = own_redis_db(WRONG_DIM_DB)
    cache = RedisVectorCache(f"redis://127.0.0.1:6379/{WRONG_DIM_DB}", dtype="float16")
    try:
        embedder = _embedder(cache, tiny_checkpoints)
        dim = embedder.dims["smiles"]
        key = cache_key(embedder.vector_versions["smiles"], "CCO")
        client.set(key, np.ones(dim, np.float32).tobytes())
        with caplog.at_level(logging.WARNING, logger="models.embedding_cache"):
            got, want = _embed(embedder, ["CCO", "CCN"])
        np.testing.assert_allclose(got, want, atol=1e-6)  # recomputed, not read
        assert _counters(cache) == (0, 2, 1) and cache.state()["healthy"]
        (warned,) = [r for r in caplog.records if r.getMessage().startswith("redis cache values unreadable")]
        assert warned.reason == "wrong dimension" and warned.first_key == key and warned.values == 1
        raw = client.get(key)
        assert isinstance(raw, bytes) and len(raw) == dim * 2  # the float16 vector now
        again = embedder.embed(["CCO", "CCN"], views=("smiles",)).vectors["smiles"]
        np.testing.assert_allclose(again, want, atol=2e-3)  # float16 round trip of the cache
        assert _counters(cache) == (2, 2, 1)
    finally:
        cache.close()
