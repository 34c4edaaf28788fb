"""The tests' Redis databases: only molfusion's own keys are ever deleted."""

from __future__ import annotations

import uuid

import pytest
from conftest import _clear_own_keys

pytestmark = pytest.mark.redis

GUARD_DB = 13  # the jobs tests' database


def test_clearing_deletes_only_molfusion_keys_and_refuses_foreign_ones(own_redis_db) -> None:
    client = own_redis_db(GUARD_DB)
    client.set("molfusion:job:guard-test", b"1")
    client.set("arq:job:guard-test", b"1")
    _clear_own_keys(client, GUARD_DB)
    assert client.dbsize() == 0

    foreign = f"someone-else:{uuid.uuid4().hex}"
    client.set("molfusion:job:guard-test", b"1")
    client.set(foreign, b"keep me")
    try:
        with pytest.raises(pytest.fail.Exception, match="not molfusion's"):
            _clear_own_keys(client, GUARD_DB)
        assert client.get(foreign) == b"keep me"  # refused before deleting anything
        assert client.get("molfusion:job:guard-test") == b"1"
    finally:
        client.delete(foreign)
