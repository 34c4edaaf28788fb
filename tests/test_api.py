"""The REST API end to end on tiny encoders and small real heads (in-process LRU cache)."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_api_helpers import api_heads_fixture, make_settings, wait_ready  # noqa: F401

from app.api.main import create_app

MAX_MOLECULES = 40
MAX_BYTES = 64_000


@pytest.fixture(scope="module")
def client(tiny_checkpoints, api_heads_dir):
    settings = make_settings(
        tiny_checkpoints,
        api_heads_dir,
        max_molecules_per_request=MAX_MOLECULES,
        max_request_bytes=MAX_BYTES,
        max_smiles_length=500,
    )
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


# --- happy paths --------------------------------------------------------------------------------


def test_embed_rows_in_order_with_invalid_items(client):
    served = client.app.state.service.embedder
    smiles = ["CCO", "OCC", "not-a-smiles", "c1ccccc1O"]
    r = client.post("/v1/embed", json={"smiles": smiles, "views": ["smiles", "graph", "fused"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["encoder_versions"] == served.versions
    assert body["dims"] == served.dims
    items = body["results"]
    assert [i["input"] for i in items] == smiles
    assert [i["status"] for i in items] == ["ok", "ok", "invalid", "ok"]
    assert items[0]["canonical_smiles"] == items[1]["canonical_smiles"] == "CCO"
    assert items[2]["embeddings"] is None and "unparsable" in items[2]["error"]
    expected = served.embed(smiles, views=("smiles", "graph", "fused")).vectors
    for i in (0, 1, 3):
        emb = items[i]["embeddings"]
        assert len(emb["fused"]) == served.dims["fused"]
        np.testing.assert_allclose(emb["fused"], emb["smiles"] + emb["graph"])
        # the request wrote float16 vectors to the cache that this second call reads back
        np.testing.assert_allclose(emb["smiles"], expected["smiles"][i], rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(emb["graph"], expected["graph"][i], rtol=1e-2, atol=1e-2)


def test_embed_default_view_is_fused(client):
    r = client.post("/v1/embed", json={"smiles": ["CCN"]})
    assert r.status_code == 200
    assert list(r.json()["results"][0]["embeddings"]) == ["fused"]


def test_predict_all_served_heads(client, api_heads_dir):
    from fusion.registry import HeadRegistry

    smiles = ["CC(=O)Oc1ccccc1C(=O)O", "C1CC1(", "c1ccncc1"]
    r = client.post("/v1/predict", json={"smiles": smiles})
    assert r.status_code == 200, r.text
    items = r.json()["results"]
    assert [i["status"] for i in items] == ["ok", "invalid", "ok"]
    assert items[1]["predictions"] is None and items[1]["error"]
    registry = HeadRegistry(api_heads_dir)
    served = client.app.state.service.embedder
    vectors = served.embed(smiles, views=("smiles", "graph")).vectors
    for name in ("bbbp", "esol"):
        expected = registry.load(name).predict(vectors)
        for i in (0, 2):
            pred = items[i]["predictions"][name]
            assert pred["head"] == name and re.fullmatch(r"[0-9a-f]{12}", pred["head_version"])
            assert pred["encoder_versions"] == served.versions
            ((task, value),) = pred["tasks"].items()
            assert value["value"] == pytest.approx(float(expected[i, 0]), rel=1e-2, abs=1e-2)
    bbbp = items[0]["predictions"]["bbbp"]["tasks"]["p_np"]
    assert bbbp["task_type"] == "classification" and 0.0 <= bbbp["value"] <= 1.0
    esol = items[0]["predictions"]["esol"]["tasks"]["log_solubility"]
    assert esol["task_type"] == "regression" and esol["units"] == "log10(mol/L)"
    assert "stale" not in items[0]["predictions"]


def test_predict_selected_property_only(client):
    r = client.post("/v1/predict", json={"smiles": ["CCO"], "properties": ["esol", "esol"]})
    assert r.status_code == 200
    assert list(r.json()["results"][0]["predictions"]) == ["esol"]


@pytest.mark.parametrize("properties", [["bbbp", "no_such_property"], ["stale"]])
def test_predict_unknown_property_is_422_naming_it(client, properties):
    r = client.post("/v1/predict", json={"smiles": ["CCO"], "properties": properties})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["input"] for d in detail] == properties[-1:]
    assert properties[-1] in detail[0]["msg"] and "bbbp" in detail[0]["msg"]
    if properties == ["stale"]:  # a head skipped at start-up is named with the reason
        assert "skipped at start-up: encoder versions differ" in detail[0]["msg"]


def test_properties_lists_served_heads_and_skipped_ones(client):
    r = client.get("/v1/properties")
    assert r.status_code == 200
    body = r.json()
    by_name = {p["name"]: p for p in body["properties"]}
    assert sorted(by_name) == ["bbbp", "esol"]
    assert by_name["bbbp"]["tasks"] == ["p_np"] and by_name["bbbp"]["task_types"] == ["classification"]
    assert by_name["esol"]["units"] == ["log10(mol/L)"]
    assert "roc_auc" in json.dumps(by_name["bbbp"]["metrics"])
    assert "encoder versions differ" in body["skipped"]["stale"]


def test_info_and_health(client, tiny_embedder):
    info = client.get("/v1/info").json()
    assert {e["view"]: e["version"] for e in info["encoders"]} == tiny_embedder.versions
    assert info["device"] == {"type": "cpu", "name": "cpu"}
    assert info["cache"]["backend"] == "memory" and info["cache"]["healthy"]
    assert info["properties"] == ["bbbp", "esol"]
    assert info["limits"]["max_molecules_per_request"] == MAX_MOLECULES
    assert isinstance(info["microbatch"]["max_size"], int)  # a count, not 512.0
    assert client.get("/v1/health/live").json() == {"status": "alive"}
    ready = client.get("/v1/health/ready").json()
    assert ready["status"] == "ready" and ready["degraded"] is False


def test_openapi_documents_the_models(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("EmbedRequest", "EmbedResponse", "PredictRequest", "PredictResponse", "PropertiesResponse"):
        assert name in schemas
    assert "securitySchemes" not in spec.get("components", {})  # no key configured: nothing to send


def _metric(client, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", client.get("/metrics").text, re.M).group(1))


# --- concurrency: the micro-batcher coalesces requests -------------------------------------------


def test_concurrent_requests_are_batched_and_correct(client, data_dir):
    import pandas as pd

    smiles = pd.read_csv(data_dir / "moleculenet" / "bbbp.csv")["smiles"].tolist()[300:364]

    def one(s: str):
        return client.post("/v1/predict", json={"smiles": [s], "properties": ["esol"]})

    alone = {s: one(s).json() for s in smiles[:4]}

    batches_before = _metric(client, "molfusion_batch_requests_count")
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(one, smiles))
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["results"][0]["input"] for r in responses] == smiles
    for s, r in zip(smiles[:4], responses[:4], strict=True):
        got = r.json()["results"][0]["predictions"]["esol"]["tasks"]["log_solubility"]["value"]
        ref = alone[s]["results"][0]["predictions"]["esol"]["tasks"]["log_solubility"]["value"]
        assert got == pytest.approx(ref, rel=1e-3)  # the later ones read float16-cached vectors
    batches = _metric(client, "molfusion_batch_requests_count") - batches_before
    assert batches < len(smiles) - len(alone)  # the first 4 come from the memo; others shared model calls


def test_repeated_predict_is_answered_from_the_memos(client):
    body = {"smiles": ["OCCN", "C1CC1(", "NCCO"], "properties": ["bbbp", "esol"]}
    first = client.post("/v1/predict", json=body).json()
    before = _metric(client, "molfusion_memo_answers_total")
    again = client.post("/v1/predict", json=body).json()
    assert _metric(client, "molfusion_memo_answers_total") == before + 1  # served without a model call
    assert again == first
    assert [i["status"] for i in again["results"]] == ["ok", "invalid", "ok"]


def test_metrics_exposes_requests_cache_batches_and_model_time(client):
    client.post("/v1/embed", json={"smiles": ["CCCl", "CCCl"]})
    text = client.get("/metrics").text
    requests = r'molfusion_http_requests_total\{method="POST",route="/v1/embed",status="200"\} [1-9]'
    assert re.search(requests, text)
    assert 'molfusion_http_request_duration_seconds_bucket{le="0.05",method="POST",route="/v1/embed"}' in text
    assert re.search(r'molfusion_cache_hits_total\{backend="memory"\} [1-9]', text)
    assert re.search(r'molfusion_cache_misses_total\{backend="memory"\} [1-9]', text)
    assert "molfusion_batch_molecules_bucket" in text
    assert re.search(r'molfusion_model_seconds_count\{stage="embed"\} [1-9]', text)
    assert re.search(r'molfusion_molecules_total\{endpoint="embed",status="ok"\} [1-9]', text)


# --- invalid and edge inputs: 4xx or per-item invalid, never 500 -----------------------------------


@pytest.mark.parametrize("path", ["/v1/embed", "/v1/predict"])
@pytest.mark.parametrize(
    ("smiles", "reason"),
    [
        ("", "empty"),
        ("C" * 10_000, "too long"),
        ("CCOé", "non-ASCII"),
        ("💊", "non-ASCII"),
        ("C C", "whitespace"),
        ("c1ccccc1(", "unparsable"),
    ],
)
def test_bad_smiles_are_per_item_invalid(client, path, smiles, reason):
    r = client.post(path, json={"smiles": ["CCO", smiles]})
    assert r.status_code == 200, r.text
    first, item = r.json()["results"]
    assert first["status"] == "ok"
    assert item["status"] == "invalid" and reason in item["error"] and item["input"] == smiles


@pytest.mark.parametrize("path", ["/v1/embed", "/v1/predict"])
@pytest.mark.parametrize(
    "body",
    [
        {"smiles": []},
        {"smiles": "CCO"},
        {"smiles": [1, 2]},
        {"smiles": None},
        {"smiles": [["CCO"]]},
        {},
        {"smiles": ["CCO"], "unexpected": 1},
        [],
        "CCO",
    ],
)
def test_wrong_shapes_and_types_are_422(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_wrong_views_and_properties_types_are_422(client):
    assert client.post("/v1/embed", json={"smiles": ["CCO"], "views": ["bogus"]}).status_code == 422
    assert client.post("/v1/embed", json={"smiles": ["CCO"], "views": []}).status_code == 422
    assert client.post("/v1/predict", json={"smiles": ["CCO"], "properties": []}).status_code == 422
    assert client.post("/v1/predict", json={"smiles": ["CCO"], "properties": "bbbp"}).status_code == 422


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00", b""])
def test_malformed_bodies_are_4xx(client, raw):
    r = client.post("/v1/predict", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500


def test_too_many_molecules_is_413(client):
    r = client.post("/v1/predict", json={"smiles": ["CCO"] * (MAX_MOLECULES + 1)})
    assert r.status_code == 413
    assert f"{MAX_MOLECULES + 1} > {MAX_MOLECULES}" in r.json()["detail"]
    assert client.post("/v1/embed", json={"smiles": ["CCO"] * MAX_MOLECULES}).status_code == 200


def test_body_too_large_is_413(client):
    big = {"smiles": ["C" * 400] * 200}  # ~80 kB > MAX_BYTES
    r = client.post("/v1/embed", json=big)
    assert r.status_code == 413 and "too large" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit applies while streaming
        payload = json.dumps(big).encode()
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    r = client.post("/v1/embed", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["detail"]


def test_unknown_route_and_method_are_4xx(client):
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/predict").status_code == 405


# --- API key -------------------------------------------------------------------------------------


def test_api_key_guards_every_v1_route(tiny_checkpoints, api_heads_dir):
    settings = make_settings(tiny_checkpoints, api_heads_dir, api_key="k3y", memo_items=0)  # memos off
    with TestClient(create_app(settings)) as c:
        good = {"X-API-Key": "k3y"}
        wait_ready(c, headers=good)
        for method, path, body in (
            ("post", "/v1/predict", {"smiles": ["CCO"]}),
            ("get", "/v1/info", None),
            ("get", "/v1/properties", None),
            ("get", "/v1/health/ready", None),
        ):
            call = getattr(c, method)
            kwargs = {"json": body} if body is not None else {}
            assert call(path, **kwargs).status_code == 401
            assert call(path, headers={"X-API-Key": "wrong"}, **kwargs).status_code == 401
            assert call(path, headers=good, **kwargs).status_code == 200
        assert "API key" in c.get("/v1/info").json()["detail"]
        assert c.get("/metrics").status_code == 200  # scraping is not under /v1
        spec = c.get("/openapi.json").json()
        assert "APIKeyHeader" in json.dumps(spec["components"]["securitySchemes"])
        assert "401" in spec["paths"]["/v1/predict"]["post"]["responses"]


def test_not_ready_is_503_and_failed_load_is_reported(tiny_checkpoints, tmp_path):
    settings = make_settings(
        {"smiles": tmp_path / "missing", "graph": tiny_checkpoints["graph"]}, tmp_path / "heads"
    )
    with TestClient(create_app(settings)) as c:
        with pytest.raises(AssertionError, match="failed"):
            wait_ready(c, timeout_s=30)
        ready = c.get("/v1/health/ready")
        assert ready.status_code == 503 and "no SMILES encoder checkpoint" in ready.json()["error"]
        r = c.post("/v1/predict", json={"smiles": ["CCO"]})
        assert r.status_code == 503 and "not ready" in r.json()["detail"]
        assert c.get("/v1/health/live").status_code == 200


def test_several_workers_load_models_before_accepting_requests(tiny_checkpoints, api_heads_dir):
    settings = make_settings(tiny_checkpoints, api_heads_dir, workers=2)
    with TestClient(create_app(settings)) as c:
        assert c.app.state.service.ready  # loaded during start-up, before the first request
        assert c.post("/v1/predict", json={"smiles": ["CCO"]}).status_code == 200


def test_uploads_get_the_upload_limit_not_the_json_body_limit(client):
    """A CSV upload above the JSON body limit but within MOLFUSION_UPLOAD_MAX_BYTES reaches the upload
    route (which validates it), instead of being cut off by the generic body-size 413."""
    rows = "smiles,y\n" + "".join(f"{'C' * 30},{i % 2}\n" for i in range(3000))  # ~100 kB > MAX_BYTES
    assert len(rows) > MAX_BYTES
    r = client.post(
        "/v1/recommendations",
        files={"file": ("t.csv", rows.encode(), "text/csv")},
        data={"smiles_column": "smiles", "targets": "y"},
    )
    assert r.status_code != 413 or "MOLFUSION_MAX_REQUEST_BYTES" not in r.text
    assert r.status_code < 500
    r = client.post("/v1/embed", content=b"x" * (MAX_BYTES + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "MOLFUSION_MAX_REQUEST_BYTES" in r.json()["detail"]


def test_body_limit_names_the_file_for_uploads_as_the_upload_routes_do():
    """An upload cut off by the body-size middleware (before the route reads it) gets the upload
    routes' error shape, ``detail[0].loc == ["body", "file"]``; other routes keep a plain message."""
    from fastapi import FastAPI

    from app.api.limits import BodySizeLimit

    bare = FastAPI()

    @bare.post("/v1/recommendations")
    async def upload() -> dict:
        return {}

    @bare.post("/v1/embed")
    async def embed() -> dict:
        return {}

    app = BodySizeLimit(bare, max_bytes=100, upload_max_bytes=100)
    too_big = b"x" * (100 + BodySizeLimit.MULTIPART_SLACK + 1)
    with TestClient(app) as c:
        r = c.post("/v1/recommendations", content=too_big)
        assert r.status_code == 413
        detail = r.json()["detail"]
        assert detail[0]["loc"] == ["body", "file"] and "MOLFUSION_UPLOAD_MAX_BYTES" in detail[0]["msg"]
        r = c.post("/v1/embed", content=b"x" * 101)
        assert r.status_code == 413 and "MOLFUSION_MAX_REQUEST_BYTES" in r.json()["detail"]


def test_inputs_json_cannot_carry_get_a_422_not_a_500(client):
    """NaN / Infinity (Python's json accepts them) and lone surrogates in a request: the validation
    error echoes the input, which strict JSON cannot hold; the reply is still a 422 naming the field."""
    bodies = [
        ("/v1/predict", b'{"smiles": ["CCO"], "properties": [NaN]}', "properties"),
        ("/v1/embed", b'{"smiles": [Infinity]}', "smiles"),
        ("/v1/predict", b'{"smiles": [NaN]}', "smiles"),
        ("/v1/embed", b'{"smiles": [1, "\\ud800"], "views": [-Infinity]}', "smiles"),
    ]
    for path, body, field in bodies:
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (path, body, r.status_code, r.text[:300])
        assert any(field in d["loc"] for d in r.json()["detail"]), r.text[:300]


@pytest.mark.parametrize(("page", "scripts"), [("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]),
                                               ("/redoc", ["redoc.standalone.js"])])
def test_docs_pages_load_their_assets_from_the_service(client, page, scripts):
    """/docs and /redoc work without internet access: every script, style and icon the page names is a
    path of this service that answers 200 with the file (FastAPI's defaults point at a CDN)."""
    html = client.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert "cdn.jsdelivr.net" not in html.text and "fonts.googleapis.com" not in html.text
    urls = re.findall(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']""", html.text)
    urls += re.findall(r"""url:\s*["']([^"']+)["']""", html.text)  # swagger's openapi_url
    assert "/openapi.json" in urls
    for name in scripts:
        (url,) = [u for u in urls if u.endswith(name)]
        assert url.startswith("/"), url  # served here, not by a third party
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 10_000, url
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url
