"""Property-based fuzzing of the OpenAPI schema (schemathesis, valid and invalid inputs): no 5xx, and
every response matches its documented status code, content type and schema."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_api_helpers import api_heads_fixture, make_settings  # noqa: F401
from test_cache_helpers import free_port

from app.api.main import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZED = r"^/v1/(embed|predict|properties|info|health/live|health/ready)$"


@pytest.fixture(scope="module")
def live_server(tiny_checkpoints, api_heads_dir):
    """The app under a real uvicorn server on loopback, ready (models loaded)."""
    app = create_app(
        make_settings(
            tiny_checkpoints, api_heads_dir, max_molecules_per_request=64, max_request_bytes=100_000
        )
    )
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/v1/health/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not become ready")
        time.sleep(0.05)
    yield base
    server.should_exit = True
    thread.join(timeout=10)


def _openapi() -> dict:
    """The served OpenAPI document (building the app loads no models)."""
    from app.settings import Settings

    return create_app(Settings(api_key=None)).openapi()


schema = schemathesis.openapi.from_dict(_openapi()).include(path_regex=FUZZED)


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_no_server_errors_and_documented_responses(case, live_server):
    case.call_and_validate(base_url=live_server, checks=CHECKS)
