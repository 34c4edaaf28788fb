"""Remembered /v1/predict answers (response memo and the ASGI fast path): same bytes, same errors,
same metrics as the route, and never a stale or foreign answer."""

from __future__ import annotations

import asyncio
import json
import re

import pydantic_core
import pytest
from fastapi.testclient import TestClient
from test_api_helpers import api_heads_fixture, make_settings, wait_ready  # noqa: F401

from app.api.fastpath import PredictFastPath
from app.api.main import create_app
from app.api.predictions import results_body
from app.api.schemas import PredictResponse

MAX_MOLECULES = 5
SMILES = ["CCO", "C1CC1(", "c1ccncc1"]


@pytest.fixture(scope="module")
def client(tiny_checkpoints, api_heads_dir):
    settings = make_settings(tiny_checkpoints, api_heads_dir, max_molecules_per_request=MAX_MOLECULES)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def _metric(client, pattern: str) -> float:
    match = re.search(rf"^{pattern} (\S+)$", client.get("/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


def _requests(client) -> float:
    return _metric(client, r'molfusion_http_requests_total\{method="POST",route="/v1/predict",status="200"\}')


def _molecules(client, status: str) -> float:
    return _metric(client, rf'molfusion_molecules_total\{{endpoint="predict",status="{status}"\}}')


def _chunks(payload: bytes):  # no Content-Length: the fast path leaves it to the route
    yield payload


def test_remembered_answer_is_byte_identical_with_the_same_headers_and_metrics(client):
    body = {"smiles": ["OCCOC", "C1CC1(", "c1ccoc1"], "properties": ["esol", "bbbp"]}
    first = client.post("/v1/predict", json=body)
    assert first.status_code == 200
    PredictResponse.model_validate_json(first.content)  # the documented schema
    assert list(first.json()["results"][0]["predictions"]) == ["esol", "bbbp"]  # request order
    before = {
        "memo": _metric(client, "molfusion_memo_answers_total"),
        "requests": _requests(client),
        "ok": _molecules(client, "ok"),
        "invalid": _molecules(client, "invalid"),
    }
    again = client.post("/v1/predict", json=body)  # answered by the fast path
    routed = client.post(  # chunked: answered by the route, from the same memo
        "/v1/predict",
        content=_chunks(json.dumps(body).encode()),
        headers={"content-type": "application/json"},
    )
    for r in (again, routed):
        assert r.status_code == 200
        assert r.content == first.content
        assert r.headers["content-type"] == first.headers["content-type"] == "application/json"
        assert r.headers["content-length"] == first.headers["content-length"]
    assert _metric(client, "molfusion_memo_answers_total") == before["memo"] + 2
    assert _requests(client) == before["requests"] + 2  # counted under the route template
    assert _molecules(client, "ok") == before["ok"] + 4
    assert _molecules(client, "invalid") == before["invalid"] + 2


def test_joined_items_equal_the_whole_payload_serialized():
    items = [{"input": "C", "value": float("nan"), "nested": {"a": [1.5, None]}}, {"input": "é", "x": 1e-30}]
    parts = [pydantic_core.to_json(i, inf_nan_mode="null") for i in items]
    assert results_body(parts) == pydantic_core.to_json({"results": items}, inf_nan_mode="null")


def test_another_property_set_is_not_served_from_the_memo(client):
    both = client.post("/v1/predict", json={"smiles": ["CCCO"]}).json()["results"][0]
    one = client.post("/v1/predict", json={"smiles": ["CCCO"], "properties": ["bbbp"]}).json()["results"][0]
    assert list(both["predictions"]) == ["bbbp", "esol"]
    assert list(one["predictions"]) == ["bbbp"]
    again = client.post("/v1/predict", json={"smiles": ["CCCO"], "properties": ["bbbp", "bbbp"]})
    assert again.json()["results"][0] == one  # duplicates collapse as in the route


def test_response_key_names_every_head_version_and_encoder_version(client):
    service = client.app.state.service
    key = service.response_key(("bbbp", "esol"))
    for name in ("bbbp", "esol"):
        assert f"{name}@{service.head_versions[name]}@" in key
        for view, version in service.head_infos[name]["encoder_versions"].items():
            assert f"{view}={version}" in key
    assert key != service.response_key(("esol", "bbbp")) != service.response_key(("bbbp",))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"smiles": ["CCO"], "unexpected": 1}, 422),
        ({"smiles": ["CCO"], "properties": []}, 422),
        ({"smiles": ["CCO"], "properties": ["nope"]}, 422),
        ({"smiles": ["CCO"], "properties": "bbbp"}, 422),
        ({"smiles": "CCO"}, 422),
        ({"smiles": []}, 422),
        ({"smiles": ["CCO", 1]}, 422),
        ({"smiles": ["CCO"] * (MAX_MOLECULES + 1)}, 413),
        (["CCO"], 422),
    ],
)
def test_errors_stay_the_routes_even_for_remembered_molecules(client, body, status):
    assert client.post("/v1/predict", json={"smiles": ["CCO"]}).status_code == 200  # now remembered
    r = client.post("/v1/predict", json=body)
    assert r.status_code == status, r.text
    if body == {"smiles": ["CCO"], "properties": ["nope"]}:
        assert r.json()["detail"][0]["input"] == "nope"


def test_non_json_media_type_and_bad_json_stay_the_routes(client):
    client.post("/v1/predict", json={"smiles": ["CCO"]})
    raw = json.dumps({"smiles": ["CCO"]}).encode()
    for media in ("text/plain", "application/x/+json", "application/json garbage"):  # not JSON to FastAPI
        assert client.post("/v1/predict", content=raw, headers={"content-type": media}).status_code == 422
    assert client.post(
        "/v1/predict", content=b"[" * 100_000, headers={"content-type": "application/json"}
    ).status_code in (400, 422)
    r = client.post("/v1/predict", content=raw, headers={"content-type": "application/vnd.x+json"})
    assert r.status_code == 200


def test_api_key_is_checked_for_remembered_requests(tiny_checkpoints, api_heads_dir):
    settings = make_settings(tiny_checkpoints, api_heads_dir, api_key="k3y")  # memos on
    with TestClient(create_app(settings)) as c:
        good = {"X-API-Key": "k3y"}
        wait_ready(c, headers=good)
        body = {"smiles": ["CCO"]}
        first = c.post("/v1/predict", json=body, headers=good)
        assert first.status_code == 200
        assert c.post("/v1/predict", json=body).status_code == 401
        assert c.post("/v1/predict", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/v1/predict", json=body, headers={"X-API-Key": ""}).status_code == 401
        again = c.post("/v1/predict", json=body, headers={"x-api-key": "k3y"})
        assert again.status_code == 200 and again.content == first.content


def test_memos_off_means_no_fast_path(tiny_checkpoints, api_heads_dir):
    settings = make_settings(tiny_checkpoints, api_heads_dir, memo_items=0)
    app = create_app(settings)
    assert not any(m.cls is PredictFastPath for m in app.user_middleware)
    with TestClient(app) as c:
        wait_ready(c)
        for _ in range(2):
            assert c.post("/v1/predict", json={"smiles": ["CCO"]}).status_code == 200
        assert len(c.app.state.service.responses) == 0


# --- the middleware on its own: what reaches the app -----------------------------------------------


class _Recorder:
    """Inner ASGI app that records what it receives and answers 204."""

    def __init__(self) -> None:
        self.calls: list[list[dict]] = []

    async def __call__(self, scope, receive, send) -> None:
        messages = [await receive()]
        while messages[-1]["type"] == "http.request" and messages[-1].get("more_body"):
            messages.append(await receive())
        self.calls.append(messages)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _call(middleware, body_messages: list[dict], headers: list[tuple[bytes, bytes]]):
    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "root_path": "", "headers": headers}
    sent: list[dict] = []
    queue = list(body_messages)

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return scope, sent


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


def test_middleware_answers_remembered_requests_and_hands_others_on_with_their_body(client):
    service = client.app.state.service
    payload = json.dumps({"smiles": SMILES}).encode()
    expected = client.post(
        "/v1/predict", content=payload, headers={"content-type": "application/json"}
    ).content
    inner = _Recorder()
    fast = PredictFastPath(inner, service)

    halves = [
        {"type": "http.request", "body": payload[:7], "more_body": True},
        {"type": "http.request", "body": payload[7:], "more_body": False},
    ]
    scope, sent = _call(fast, halves, _headers(payload))
    assert inner.calls == []
    assert sent[0]["status"] == 200 and sent[1]["body"] == expected
    assert scope["molfusion.route"] == "/v1/predict"

    unknown = json.dumps({"smiles": ["CCO", "CCCCCCCCCCCCO"]}).encode()
    _, sent = _call(fast, [{"type": "http.request", "body": unknown, "more_body": False}], _headers(unknown))
    assert inner.calls[-1] == [{"type": "http.request", "body": unknown, "more_body": False}]
    assert sent[0]["status"] == 204

    gone = [{"type": "http.request", "body": payload[:7], "more_body": True}, {"type": "http.disconnect"}]
    _call(fast, list(gone), _headers(payload))
    assert inner.calls[-1] == gone  # the app sees the client leave, as it would have

    whole = [{"type": "http.request", "body": payload, "more_body": False}]
    for headers in (
        [(b"content-type", b"application/json")],  # no Content-Length: not read here at all
        [*_headers(payload), (b"transfer-encoding", b"chunked")],
        [(b"content-type", b"text/plain"), (b"content-length", str(len(payload)).encode())],
    ):
        calls = len(inner.calls)
        _call(fast, list(whole), headers)
        assert len(inner.calls) == calls + 1 and inner.calls[-1] == whole


def test_a_prediction_without_a_finite_value_is_never_remembered(client, monkeypatch):
    """A head that fails numerically for a molecule answers null for it; that answer is not kept, so
    the next request computes again instead of replaying null until a restart."""
    import numpy as np

    service = client.app.state.service
    head = service.heads["esol"]
    real = head.predict
    monkeypatch.setattr(head, "predict", lambda views: np.full_like(np.asarray(real(views)), np.nan))
    body = {"smiles": ["CCOCCOCCO"], "properties": ["esol"]}
    first = client.post("/v1/predict", json=body).json()["results"][0]
    assert first["predictions"]["esol"]["tasks"] and all(
        t["value"] is None for t in first["predictions"]["esol"]["tasks"].values()
    )
    monkeypatch.setattr(head, "predict", real)
    again = client.post("/v1/predict", json=body).json()["results"][0]
    assert all(isinstance(t["value"], float) for t in again["predictions"]["esol"]["tasks"].values())
