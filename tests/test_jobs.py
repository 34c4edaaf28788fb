"""Recommendation jobs over HTTP: upload validation, in-process lifecycle and cancel, and Redis + a real
``molfusion worker`` subprocess (done, survives an API restart, killed worker -> failed)."""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api.recommendations import datasets_router, lifespan, router
from app.jobs import JobService, reset_shared_embedder
from app.settings import Settings, get_settings

REPO = Path(__file__).resolve().parent.parent
REDIS_DB = 13  # cleared of molfusion's keys around each test; one holding other keys fails the test
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
KEEP = ("esol", "pampa")


@pytest.fixture()
def jobs_env(tiny_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("MOLFUSION_GROUPING_CACHE_DIR", str(tmp_path / "grouping-cache"))
    monkeypatch.setenv("MOLFUSION_RECOMMEND_MAX_AUX_ROWS", "60")
    monkeypatch.setenv("MOLFUSION_RECOMMEND_EVIDENCE_SEEDS", "0")
    monkeypatch.setenv("MOLFUSION_JOB_LEASE_S", "3")
    monkeypatch.setenv("MOLFUSION_LOG_JSON", "false")
    get_settings.cache_clear()
    reset_shared_embedder()
    yield get_settings()
    reset_shared_embedder()
    get_settings.cache_clear()


def make_app(settings: Settings, body: Callable | None = None) -> FastAPI:
    """The recommendation routers on a bare app; ``body`` replaces the job body (in-process only)."""

    @contextlib.asynccontextmanager
    async def custom(app: FastAPI) -> AsyncIterator[None]:
        app.state.recommendation_jobs = await JobService.create(settings, body)
        yield
        await app.state.recommendation_jobs.close()

    app = FastAPI(lifespan=custom if body is not None else lifespan)
    app.state.settings = settings
    app.include_router(router)
    app.include_router(datasets_router)
    return app


@pytest.fixture(scope="module")
def bbbp(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / "moleculenet" / "bbbp.csv", dtype=str, keep_default_na=False)


def _exclude() -> str:
    from grouping.catalog import load_catalog

    return ",".join(e.name for e in load_catalog() if e.name not in KEEP)


def _post(client: TestClient, df: pd.DataFrame | bytes, **form) -> object:
    data = df if isinstance(df, bytes) else df.to_csv(index=False).encode()
    return client.post(
        "/v1/recommendations",
        files={"file": ("target.csv", data, "text/csv")},
        data={"exclude": _exclude(), **form},
    )


def _wait(
    client: TestClient, job_id: str, states: set[str], timeout: float = 120.0
) -> tuple[dict, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/recommendations/{job_id}").json()
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if job["status"] in states:
            return job, seen
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {states}; seen {seen}")


def _field(resp) -> str:
    detail = resp.json()["detail"]
    return detail[0]["loc"][-1] if isinstance(detail, list) else detail


def test_upload_validation_errors(jobs_env: Settings, bbbp: pd.DataFrame) -> None:
    head = bbbp.head(80)
    small = jobs_env.model_copy(update={"upload_max_bytes": 8000, "upload_max_rows": 100})
    with TestClient(make_app(small)) as client:
        cases = [
            (b"\x00\x01\x02 not a csv", {}, 400, "file"),
            (head.rename(columns={"smiles": "text"}).assign(text="hello"), {}, 422, "smiles_column"),
            (head[["smiles"]], {}, 422, "file"),
            (head.assign(p_np="yes"), {"targets": "p_np"}, 422, "targets"),
            (head.assign(p_np="0.5"), {"task_type": "classification"}, 422, "task_type"),
            (head.head(40), {}, 422, "file"),
            (head.assign(smiles="C1CC"), {}, 422, "smiles_column"),
            (head, {"method": "magic"}, 422, "method"),
            (bbbp.head(101), {}, 413, "file"),
            (head.assign(smiles=head["smiles"] + "." + "C" * 100), {}, 413, "file"),
        ]
        for data, form, code, field in cases:
            resp = _post(client, data, **form)
            assert resp.status_code == code, (form, resp.text)
            assert _field(resp) == field, resp.text
        missing = client.post("/v1/recommendations", data={"method": "all"})
        assert missing.status_code == 422 and "file" in missing.text
        assert client.get("/v1/recommendations/nope").status_code == 404
        assert client.delete("/v1/recommendations/nope").status_code == 404
        more = [
            (head.assign(p_np="1"), {}, 422, "targets"),  # one class only
            (head.assign(y="1.5").assign(y=lambda d: d["y"].where(d.index != 3, "inf")), {"targets": "y"},
             422, "targets"),
            (head, {"targets": "p_np,p_np"}, 422, "targets"),
            (head, {"method": ""}, 422, "method"),  # FastAPI gave an empty field the default
            (head, {"task_type": " "}, 422, "task_type"),
            (head, {"exclude": "bbbp,no-such-set"}, 422, "exclude"),  # (last: checked just below)
        ]
        for data, form, code, field in more:
            resp = _post(client, data, **form)
            assert resp.status_code == code and _field(resp) == field, (form, resp.text)
        assert "no-such-set" in resp.text
        big = client.post("/v1/recommendations", files={"file": ("t.csv", b"smiles,y\n" + b"C,1\n" * 40_000)})
        assert big.status_code == 413 and _field(big) == "file" and "MOLFUSION_UPLOAD_MAX_BYTES" in big.text


def test_unreadable_user_catalog_is_503_not_an_upload_error(
    jobs_env: Settings, bbbp: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "extra.json"
    broken.write_text("{not json")
    monkeypatch.setenv("MOLFUSION_CATALOG_EXTRA", str(broken))
    get_settings.cache_clear()
    with TestClient(make_app(get_settings())) as client:
        for resp in (
            client.post("/v1/recommendations", files={"file": ("t.csv", bbbp.head(80).to_csv(index=False))}),
            client.get("/v1/datasets"),
            client.post(
                "/v1/datasets",
                files={"file": ("d.csv", bbbp.head(80).to_csv(index=False))},
                data={"name": "d", "smiles_column": "smiles", "label_columns": "p_np",
                      "task_type": "classification"},
            ),
        ):
            assert resp.status_code == 503 and "catalog unreadable" in resp.text, resp.text
    get_settings.cache_clear()


def test_recommendations_refuse_in_process_jobs_under_several_workers(jobs_env: Settings) -> None:
    """Each uvicorn worker process would hold its own in-process jobs: a job id posted to one would be
    unknown to the others. Without Redis and with several workers the job routes say so (503)."""
    several = jobs_env.model_copy(update={"workers": 2})
    with TestClient(make_app(several)) as client:
        resp = client.get(f"/v1/recommendations/{'0' * 32}")
        assert resp.status_code == 503 and "MOLFUSION_REDIS_URL" in resp.json()["detail"]
        posted = client.post("/v1/recommendations", files={"file": ("t.csv", b"smiles,y\nCCO,1\n")})
        assert posted.status_code == 503


def test_in_process_job_runs_to_done(jobs_env: Settings, bbbp: pd.DataFrame) -> None:
    df = bbbp.head(90).copy()
    df.loc[2, "smiles"] = "xyz"
    with TestClient(make_app(jobs_env)) as client:
        resp = _post(client, df, method="structure")
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert body["invalid_rows"] == 1 and resp.headers["location"] == f"/v1/recommendations/{body['id']}"
        job, seen = _wait(client, body["id"], {"done", "failed"})
    assert job["status"] == "done", job.get("error")
    assert seen[-1] == "done" and set(seen) <= {"queued", "running", "done"}
    result = job["result"]
    assert {c["dataset"] for c in result["candidates"]} == set(KEEP)
    assert result["invalid_rows"] == 1 and result["method"] == "structure" and job["progress"] == 1.0


def _slow_body(data: bytes, params: dict, progress) -> dict:
    for i in range(600):
        progress(i / 600, f"step {i}")
        time.sleep(0.05)
    return {"never": "reached"}


def _broken_body(data: bytes, params: dict, progress) -> dict:
    progress(0.1, "about to fail")
    raise RuntimeError("catalog folder vanished")


def test_in_process_cancel_and_failure(jobs_env: Settings, bbbp: pd.DataFrame) -> None:
    with TestClient(make_app(jobs_env, body=_slow_body)) as client:
        job_id = _post(client, bbbp.head(60)).json()["id"]
        _wait(client, job_id, {"running"}, timeout=20)
        time.sleep(1.5)  # progress is published at each heartbeat (1 s here)
        assert 0.0 < client.get(f"/v1/recommendations/{job_id}").json()["progress"] < 1.0
        resp = client.delete(f"/v1/recommendations/{job_id}")
        assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
        time.sleep(1.5)  # the runner notices at its next heartbeat and stops the thread
        assert client.get(f"/v1/recommendations/{job_id}").json()["status"] == "cancelled"
        assert client.delete(f"/v1/recommendations/{job_id}").status_code == 409
    with TestClient(make_app(jobs_env, body=_broken_body)) as client:
        job_id = _post(client, bbbp.head(60)).json()["id"]
        job, _ = _wait(client, job_id, {"done", "failed"}, timeout=20)
        assert job["status"] == "failed" and "catalog folder vanished" in job["error"]
        assert job["message"] == "failed"  # not the last phase's progress message


def test_dataset_registration_endpoint(jobs_env: Settings, bbbp: pd.DataFrame) -> None:
    with TestClient(make_app(jobs_env)) as client:
        listed = client.get("/v1/datasets").json()["datasets"]
        assert len(listed) == 19 and all(d["status"] == "ok" for d in listed)
        csv = bbbp.head(100).to_csv(index=False).encode()
        form = {
            "name": "lab-set",
            "smiles_column": "smiles",
            "label_columns": "p_np",
            "task_type": "classification",
        }
        ok = client.post("/v1/datasets", files={"file": ("x.csv", csv, "text/csv")}, data=form)
        assert ok.status_code == 201, ok.text
        assert client.post("/v1/datasets", files={"file": ("x.csv", csv)}, data=form).status_code == 409
        bad = client.post(
            "/v1/datasets",
            files={"file": ("x.csv", csv)},
            data={**form, "name": "other", "label_columns": "nope"},
        )
        assert bad.status_code == 422 and "nope" in bad.text
        assert "user_datasets" not in bad.text and "x.csv" in bad.text  # the upload, not the storage path
        names = [d["dataset"] for d in client.get("/v1/datasets").json()["datasets"]]
        assert names[-1] == "lab-set" and "other" not in names
        packed = client.post(  # a gzip upload is stored decompressed, as a target upload is read
            "/v1/datasets", files={"file": ("x.csv.gz", gzip.compress(csv))}, data={**form, "name": "packed"}
        )
        assert packed.status_code == 201, packed.text
        listed = {d["dataset"]: d for d in client.get("/v1/datasets").json()["datasets"]}
        assert listed["packed"]["status"] == "ok" and listed["packed"]["labelled_rows"] == 100
        assert Path(listed["packed"]["file"]).read_bytes() == csv
        broken = client.post(
            "/v1/datasets", files={"file": ("x.gz", gzip.compress(csv)[:40])}, data={**form, "name": "cut"}
        )
        assert broken.status_code == 400 and _field(broken) == "file" and "gzip" in broken.text


# ---------------------------------------------------------------- Redis + worker subprocess


@pytest.fixture()
def redis_env(jobs_env: Settings, monkeypatch: pytest.MonkeyPatch, own_redis_db) -> Iterator[Settings]:
    redis = pytest.importorskip("redis")
    try:
        own_redis_db(REDIS_DB)
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    monkeypatch.setenv("MOLFUSION_REDIS_URL", REDIS_URL)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@contextlib.contextmanager
def worker_process(log: Path, **env: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.redis
def test_redis_worker_lifecycle_and_restart(
    redis_env: Settings, bbbp: pd.DataFrame, tmp_path: Path
) -> None:
    with TestClient(make_app(redis_env)) as client:
        first = _post(client, bbbp.head(90), method="structure").json()["id"]
        second = _post(client, bbbp.head(90), method="none").json()["id"]
        assert client.get(f"/v1/recommendations/{first}").json()["status"] == "queued"  # no worker yet
        assert client.delete(f"/v1/recommendations/{second}").json()["status"] == "cancelled"
        with worker_process(tmp_path / "worker.log"):
            job, seen = _wait(client, first, {"done", "failed"})
        assert job["status"] == "done", (job.get("error"), (tmp_path / "worker.log").read_text()[-2000:])
        assert seen[0] == "queued" and "running" in seen
    with TestClient(make_app(redis_env)) as client:  # a new API process: state lives in Redis
        again = client.get(f"/v1/recommendations/{first}").json()
        assert again["status"] == "done" and again["result"] == job["result"]
        assert client.get(f"/v1/recommendations/{second}").json()["status"] == "cancelled"
        for side in ("input", "lease"):  # the job's side keys are no job ids (404, not a Redis type error)
            assert client.get(f"/v1/recommendations/{first}:{side}").status_code == 404
            assert client.delete(f"/v1/recommendations/{first}:{side}").status_code == 404


@pytest.mark.redis
def test_killed_worker_marks_job_failed(redis_env: Settings, bbbp: pd.DataFrame, tmp_path: Path) -> None:
    with TestClient(make_app(redis_env)) as client:
        job_id = _post(client, bbbp.head(400), method="molgroup").json()["id"]
        slow = {"MOLFUSION_RECOMMEND_EVIDENCE_SEEDS": "3", "MOLFUSION_RECOMMEND_MAX_AUX_ROWS": "1500"}
        with worker_process(tmp_path / "worker.log", **slow) as proc:
            _wait(client, job_id, {"running"}, timeout=60)
            proc.kill()
            proc.wait()
        assert (
            client.get(f"/v1/recommendations/{job_id}").json()["status"] == "running"
        )  # lease not expired yet
        job, _ = _wait(client, job_id, {"failed", "done"}, timeout=redis_env.job_lease_s + 10)
        assert job["status"] == "failed" and "heartbeat" in job["error"]


def test_worker_needs_redis(jobs_env: Settings) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    out = CliRunner().invoke(cli, ["worker", "--burst"])
    assert out.exit_code == 2
    assert "MOLFUSION_REDIS_URL" in out.output and "MOLFUSION_JOBS_REDIS_URL" in out.output


def test_jobs_can_use_their_own_redis() -> None:
    """MOLFUSION_JOBS_REDIS_URL puts jobs in Redis while the embedding cache stays in-process."""
    import asyncio

    from app.jobs import InProcessRunner, MemoryJobStore, RedisJobStore, build_store, worker_settings

    own = Settings(jobs_redis_url=REDIS_URL)
    assert own.redis_url is None and own.jobs_redis == REDIS_URL
    assert isinstance(build_store(own), RedisJobStore)
    assert worker_settings(own)["redis_settings"].database == 13
    shared = Settings(redis_url="redis://127.0.0.1:6379/12")
    assert shared.jobs_redis == "redis://127.0.0.1:6379/12"
    none = Settings()
    assert none.jobs_redis is None and isinstance(build_store(none), MemoryJobStore)

    async def queue_kind(settings: Settings) -> type:
        service = await JobService.create(settings)
        kind = type(service.queue)
        await service.close()
        return kind

    assert asyncio.run(queue_kind(own)) is not InProcessRunner


@pytest.mark.redis
def test_worker_rides_out_a_redis_restart(
    jobs_env: Settings, bbbp: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away for a moment: the worker logs it, reconnects and runs the next job (it exited
    with a traceback from arq's poll loop); with --burst it exits with status 1 and one line."""
    from test_cache_helpers import PrivateRedis

    server = PrivateRedis(tmp_path)
    server.start()
    try:
        monkeypatch.setenv("MOLFUSION_REDIS_URL", server.url)
        get_settings.cache_clear()
        settings = get_settings()
        log = tmp_path / "worker.log"
        with worker_process(log, MOLFUSION_REDIS_URL=server.url) as proc:
            time.sleep(4)  # started and polling
            server.stop()
            time.sleep(1.5)
            server.start()  # a fresh, empty Redis on the same port
            time.sleep(3)
            assert proc.poll() is None, log.read_text()[-2000:]
            with TestClient(make_app(settings)) as client:
                job_id = _post(client, bbbp.head(90), method="none").json()["id"]
                job, _ = _wait(client, job_id, {"done", "failed"}, timeout=60)
            assert job["status"] == "done", (job.get("error"), log.read_text()[-2000:])
        assert "worker lost its Redis; reconnecting" in log.read_text()
        server.stop()
        burst = subprocess.run(
            [sys.executable, "-m", "app.cli", "worker", "--burst"],
            cwd=REPO,
            env={**os.environ, "MOLFUSION_REDIS_URL": server.url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert burst.returncode == 1 and "Redis is unavailable" in burst.stderr, burst.stderr[-2000:]
        assert "Traceback" not in burst.stderr
    finally:
        get_settings.cache_clear()
        with contextlib.suppress(RuntimeError):
            server.stop()
