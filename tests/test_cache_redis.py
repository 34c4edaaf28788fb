"""The Redis embedding cache against real Redis servers: round trip, key versioning, outages."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pytest
from test_cache_helpers import PrivateRedis, delete_namespace, shared_redis_or_fail, unique_namespace

from models.embedding_cache import RedisVectorCache, cache_key

pytestmark = pytest.mark.redis


@pytest.fixture()
def shared_ns():
    """A fresh key namespace on the shared Redis, deleted afterwards."""
    client = shared_redis_or_fail()
    namespace = unique_namespace()
    yield client, namespace
    delete_namespace(client, namespace)


@pytest.fixture()
def private_redis(tmp_path: Path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    with contextlib.suppress(RuntimeError):  # already stopped by the test
        server.stop()


def test_round_trip_float16_and_float32(shared_ns):
    client, namespace = shared_ns
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 48)).astype(np.float32)
    keys = [cache_key("enc-v1", s) for s in ("CCO", "c1ccccc1", "CC(=O)O")]
    for dtype, itemsize, tol in (("float16", 2, 2e-3), ("float32", 4, 0.0)):
        ns = f"{namespace}{dtype}:"
        cache = RedisVectorCache("redis://127.0.0.1:6379/0", dtype=dtype, ttl_s=120, namespace=ns)
        cache.set_many(list(zip(keys, vectors, strict=True)))
        got = cache.get_many([keys[0], cache_key("enc-v1", "missing"), keys[2]])
        assert got[1] is None
        np.testing.assert_allclose(got[0], vectors[0], rtol=tol, atol=tol)
        np.testing.assert_allclose(got[2], vectors[2], rtol=tol, atol=tol)
        assert got[0].dtype == np.float32
        raw = client.get(ns + keys[1])
        assert isinstance(raw, bytes) and len(raw) == 48 * itemsize  # packed binary, not JSON
        assert 0 < client.ttl(ns + keys[1]) <= 120
        state = cache.state()
        assert state["healthy"] and state["hits"] == 2 and state["misses"] == 1
        cache.close()


def test_no_ttl_means_persistent_keys(shared_ns):
    client, namespace = shared_ns
    cache = RedisVectorCache("redis://127.0.0.1:6379/0", namespace=namespace)
    cache.set_many([(cache_key("enc", "C"), np.ones(4, np.float32))])
    assert client.ttl(namespace + cache_key("enc", "C")) == -1


def test_key_versioning_new_encoder_never_reads_old_vectors(shared_ns, tiny_checkpoints):
    """Vectors are keyed by encoder version: a poisoned entry under the old version is served to the
    old encoder (proof that the cache is read) and never to an encoder with a new version."""
    from models.embedder import Embedder, SmilesView

    client, namespace = shared_ns
    cache = RedisVectorCache("redis://127.0.0.1:6379/0", dtype="float32", namespace=namespace)
    old = Embedder(tiny_checkpoints["smiles"], tiny_checkpoints["graph"], device="cpu", cache=cache)
    first = old.embed(["OCC", "CCO"], views=("smiles",))
    np.testing.assert_array_equal(first.vectors["smiles"][0], first.vectors["smiles"][1])  # one molecule
    keys = set(client.scan_iter(match=namespace + "*"))
    assert keys == {(namespace + cache_key(old.smiles.version, "CCO")).encode()}  # one entry for both inputs

    poison = np.full(old.dims["smiles"], 7.0, np.float32)
    cache.set_many([(cache_key(old.smiles.version, "CCO"), poison)])
    np.testing.assert_array_equal(old.embed(["CCO"], views=("smiles",)).vectors["smiles"][0], poison)

    base = old.smiles
    renamed = SmilesView(base.model, base.tokenizer, version=base.version + "-retrained")
    new = Embedder(renamed, old.graph, device="cpu", cache=cache)
    fresh = new.embed(["CCO"], views=("smiles",)).vectors["smiles"][0]
    assert not np.allclose(fresh, poison)
    np.testing.assert_allclose(fresh, first.vectors["smiles"][0], rtol=1e-5, atol=1e-6)
    assert client.exists(namespace + cache_key(renamed.version, "CCO"))


def test_outage_degrades_to_misses_and_recovers(private_redis: PrivateRedis):
    cache = RedisVectorCache(private_redis.url, dtype="float32", timeout_s=0.2, retry_s=0.5)
    key = cache_key("enc", "CCO")
    cache.set_many([(key, np.arange(8, dtype=np.float32))])
    assert cache.get_many([key])[0] is not None

    private_redis.stop()
    t0 = time.perf_counter()
    assert cache.get_many([key]) == [None]  # a refused connection is a miss, not an exception
    cache.set_many([(key, np.zeros(8, np.float32))])  # dropped silently while down
    state = cache.state()
    assert not state["healthy"] and state["errors"] == 1 and state["last_error"]
    assert state["down_since"] is not None
    assert cache.get_many([key]) == [None]
    assert cache.state()["skipped_while_down"] >= 2  # back-off: no network calls while down
    assert time.perf_counter() - t0 < 1.0

    private_redis.start()  # a fresh, empty server on the same port
    time.sleep(0.6)  # past retry_s
    assert cache.get_many([key]) == [None]  # reconnected by itself: a real miss on the new server
    assert cache.state()["healthy"]
    cache.set_many([(key, np.ones(8, np.float32))])
    np.testing.assert_array_equal(cache.get_many([key])[0], np.ones(8, np.float32))


def test_slow_redis_times_out_to_a_miss(private_redis: PrivateRedis):
    """A Redis that answers too slowly (``DEBUG SLEEP``) costs one timeout, then is skipped."""
    import threading

    cache = RedisVectorCache(private_redis.url, timeout_s=0.1, retry_s=5.0)
    key = cache_key("enc", "CCO")
    cache.set_many([(key, np.ones(4, np.float32))])
    sleeper = threading.Thread(target=lambda: private_redis.client().execute_command("DEBUG", "SLEEP", "0.8"))
    sleeper.start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    assert cache.get_many([key]) == [None]
    assert cache.get_many([key]) == [None]
    elapsed = time.perf_counter() - t0
    sleeper.join()
    assert elapsed < 0.5  # one timeout (0.1 s), then skipped; never the full 0.8 s stall
    assert "Timeout" in cache.state()["last_error"]
    assert cache.ping()  # an explicit probe brings it back at once
    assert cache.state()["healthy"]
    assert cache.get_many([key])[0] is not None


def test_password_is_not_exposed_in_state():
    cache = RedisVectorCache("redis://user:s3cret@127.0.0.1:1/0", timeout_s=0.05)
    assert "s3cret" not in str(cache.state())
    assert cache.get_many(["k"]) == [None]
    assert "s3cret" not in str(cache.state())


def test_unreadable_values_are_misses_never_errors(shared_ns, tiny_checkpoints):
    """A value that is no packed vector (odd length, NaN/inf) is a miss: the embedder recomputes it and
    writes a good one back (an odd length raised ValueError and failed every request batched with it)."""
    from models.embedder import Embedder

    client, namespace = shared_ns
    cache = RedisVectorCache("redis://127.0.0.1:6379/0", namespace=namespace)
    embedder = Embedder(tiny_checkpoints["smiles"], tiny_checkpoints["graph"], device="cpu", cache=cache)
    dim = embedder.dims["smiles"]
    want = embedder.embed(["CCO", "c1ccccc1", "CCN"], views=("smiles",)).vectors["smiles"]
    keys = [namespace + cache_key(embedder.smiles.version, s) for s in ("CCO", "c1ccccc1", "CCN")]
    client.set(keys[0], b"abc")  # not a multiple of float16's size
    client.set(keys[1], np.full(dim, np.nan, np.float16).tobytes())
    client.set(keys[2], np.full(dim, np.inf, np.float16).tobytes())
    got = cache.get_many([k[len(namespace) :] for k in keys])
    assert got == [None, None, None] and cache.state()["unreadable"] == 3 and cache.state()["healthy"]
    again = embedder.embed(["CCO", "c1ccccc1", "CCN"], views=("smiles",)).vectors["smiles"]
    np.testing.assert_allclose(again, want, atol=2e-3)  # recomputed (float16 round trip of the cache)
    assert all(v is not None for v in cache.get_many([k[len(namespace) :] for k in keys]))  # rewritten


def test_redis_refusing_writes_stays_degraded_until_a_write_succeeds(private_redis: PrivateRedis):
    """Under maxmemory + noeviction Redis answers reads and pings but refuses writes: the cache stays
    degraded (reads that succeed no longer flip it back), logs it once, and keeps the error short."""
    admin = private_redis.client()
    cache = RedisVectorCache(private_redis.url, dtype="float32", timeout_s=0.5, retry_s=0.2)
    key = cache_key("enc", "CCO")
    cache.set_many([(key, np.arange(8, dtype=np.float32))])
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)  # every write is refused with OOM
    big = [(cache_key("enc", f"C{i}"), np.ones(512, np.float32)) for i in range(5)]
    cache.set_many(big)
    state = cache.state()
    assert not state["healthy"] and "memory" in state["last_error"]
    assert len(state["last_error"]) <= 300 and "SET" not in state["last_error"]  # no command bytes
    for _ in range(3):
        time.sleep(0.25)  # past retry_s: reads and pings reach Redis and succeed
        assert cache.get_many([key])[0] is not None
        assert cache.ping()
        assert not cache.state()["healthy"]  # still degraded: writes are refused
    admin.config_set("maxmemory", 0)
    time.sleep(0.25)
    cache.set_many(big)
    assert cache.state()["healthy"]  # a write went through: the outage is over
