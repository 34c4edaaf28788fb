"""Helpers (no tests here) for a real Redis: the shared server (127.0.0.1:6379, isolated by a key
namespace) and private throw-away servers that tests may stop and restart to simulate outages."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path

import redis

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
