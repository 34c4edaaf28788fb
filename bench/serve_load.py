"""Load benchmark of the REST service against the bare web stack, on loopback.

Method. Three servers run as subprocesses under the same uvicorn settings (``--workers``, loop and
HTTP implementation ``auto``: uvloop and httptools where installed, no access log): ``molfusion
serve``; a bare FastAPI app whose one endpoint returns a fixed JSON body without reading the request
(the ceiling of the web stack, the peer of the goal); and, for reference, the same fixed body from a
raw ASGI callable with no framework at all (the ceiling of uvicorn itself). A load generator in a *second*
process (asyncio streams, one keep-alive connection per client) runs a closed loop: ``C`` clients
each send a request, wait for the whole response and send the next, for ``--duration`` seconds
after ``--warmup`` seconds. Per cell it
reports requests/s, molecules/s, p50/p95/p99 latency and errors (non-200 or transport failures); from
the server's ``/metrics`` it reads the cell's cache hits/misses and mean micro-batch size.

Cells: POST /v1/predict (all served heads) with 1 or 64 molecules per request, cache ``hit`` (requests
draw from 256 molecules embedded during warm-up) or ``miss`` (every request carries molecules not
seen before, taken in order from the MOSES test set), for 1, 8, 32 and 64 clients; and the bare
endpoints for the same client counts. The goals printed at the end: cache-hit single-molecule predict
>= 50% of the bare endpoint's req/s, p99 <= 50 ms at 32 clients, zero errors.

    python bench/serve_load.py                              # CPU, the packaged encoders
    python bench/serve_load.py --encoders random            # random-init default-size encoders
    python bench/serve_load.py --device cuda --out gpu.json # on the GPU machine

Each server's output goes to a log in the work folder; when a server exits or never gets ready, or the
load generator fails, the error carries the tail of that output. The load generator and the bare
peers need only the standard library and uvicorn/FastAPI (uvloop when installed).

Results are recorded in ``docs/bench_serve.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MOLFUSION_DATA_DIR", REPO.parent / "shared" / "datasets"))
HIT_POOL = 256


# --- the bare endpoint (imported by its own uvicorn process) -------------------------------------


BARE_BODY = {"results": [{"input": "CCO", "canonical_smiles": "CCO", "status": "ok"}]}


def bare_app():
    """FastAPI app with one POST endpoint returning a fixed JSON body (the web-stack ceiling)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/bare")
    async def bare() -> dict:
        return BARE_BODY

    @app.get("/ready")
    async def ready() -> dict:
        return {}

    return app


def bare_asgi_app():
    """The same fixed body from a raw ASGI callable: no framework, no routing (uvicorn's ceiling)."""
    body = json.dumps(BARE_BODY, separators=(",", ":")).encode()
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    message = {"type": "http.response.body", "body": body}

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send(start)
        await send(message)

    return app


def serve_bare(args: argparse.Namespace) -> None:
    """Run a bare peer under the uvicorn settings of ``molfusion serve`` (``app/commands/serve.py``).

    The app is imported as the top-level module ``serve_load`` from this file's folder, so it does not
    depend on how (or whether) the ``bench`` folder is importable as a package on the host."""
    import uvicorn

    uvicorn.run(
        f"serve_load:{'bare_asgi_app' if args.kind == 'asgi' else 'bare_app'}",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_level="warning",
        loop="auto",
        http="auto",
        timeout_graceful_shutdown=10,
    )


# --- encoders and heads for the served service ---------------------------------------------------


def random_encoders(root: Path, size: str, data_dir: Path) -> dict[str, Path]:
    """Random-init encoders (``default`` sizes or ``tiny``) saved as checkpoint folders under ``root``."""
    import pandas as pd
    import torch

    from models.graph_encoder import GraphEncoder, GraphEncoderConfig
    from models.smiles_encoder import MolFormerConfig, MolFormerModel, save_smiles_encoder
    from models.tokenizer import build_tokenizer

    torch.manual_seed(0)
    corpus = pd.read_csv(data_dir / "moleculenet" / "bbbp.csv")["smiles"].tolist()
    corpus += _read_smiles(data_dir / "pretrain" / "moses_test.csv.gz", 20_000)
    tokenizer = build_tokenizer(corpus)
    if size == "tiny":
        smiles_cfg = MolFormerConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
        )
        graph_cfg = GraphEncoderConfig(hidden_size=16, num_layers=2)
    else:
        smiles_cfg = MolFormerConfig(vocab_size=len(tokenizer))
        graph_cfg = GraphEncoderConfig()
    save_smiles_encoder(
        MolFormerModel(smiles_cfg), tokenizer, root / "smiles", name=f"random-{size}-molformer"
    )
    GraphEncoder(graph_cfg).save(root / "graph", name=f"random-{size}-gin")
    return {"smiles": root / "smiles", "graph": root / "graph"}


def demo_heads(encoders: dict[str, Path] | None, device: str, root: Path, data_dir: Path) -> Path:
    """Train small BBBP (classification) and ESOL (regression) heads with ``train_from_table`` (one
    seed, scaffold split, few epochs) on the served encoders, for a benchmark without packaged heads."""
    from fusion.training import train_from_table
    from models.embedder import Embedder

    embedder = Embedder(*(encoders[v] if encoders else None for v in ("smiles", "graph")), device=device)
    for name, file, target, units in (
        ("bbbp", "bbbp.csv", "p_np", None),
        ("esol", "esol_delaney-processed.csv", "measured log solubility in mols per litre", "log10(mol/L)"),
    ):
        train_from_table(
            data_dir / "moleculenet" / file,
            [target],
            root / name,
            embedder,
            seeds=1,
            hparams={"epochs": 5},
            name=name,
            units=[units],
            progress=False,
        )
    return root


def _read_smiles(path: Path, limit: int | None = None) -> list[str]:
    """The ``smiles`` column (any case) of a CSV, gzipped or not, with the standard library only."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        column = next(i for i, name in enumerate(header) if name.strip().lower() == "smiles")
        out: list[str] = []
        for row in reader:
            if limit is not None and len(out) >= limit:
                break
            out.append(row[column])
    return out


# --- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess; ``ready_path`` is polled until it answers 200."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], port: int, ready_path: str, log_dir: Path
    ) -> None:
        self.name, self.port, self.ready_path = name, port, ready_path
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} server exited with code {self.proc.returncode}; its output:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} server not ready after {timeout_s} s; its output:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's stdout and stderr."""
        self.log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    def get(self, path: str) -> str:
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# --- the load generator (second process) ---------------------------------------------------------


class HttpConnection:
    """A minimal HTTP/1.1 keep-alive client for POST on asyncio streams: no client library to install
    on the benchmark host, and little client CPU, so the server is what gets measured. Handles
    ``Content-Length`` and chunked bodies; reconnects after any failure."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> int:
        """Send one request and read the whole response; returns the status code."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        lines = (await self._reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split()[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = value == b"close"
        if chunked:
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self._reader.readexactly(size + 2)  # chunk + CRLF (the last one: just CRLF)
                if size == 0:
                    break
        else:
            await self._reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _drive(
    url: str, bodies, clients: int, duration_s: float, warmup_s: float, max_s: float = 120.0
) -> dict:
    """Closed loop of ``clients`` workers, one keep-alive connection each. Requests *started* after the
    warm-up are measured, including those that finish after ``duration_s``; when fewer than ``clients``
    requests completed by then (slow cells: cache misses on CPU), workers keep going until they have,
    at most ``max_s`` after the warm-up. Throughput = measured requests / (last measured completion -
    end of warm-up)."""
    latencies: list[float] = []
    molecules = 0
    errors = 0
    error_kinds: dict[str, int] = {}
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s
    t_last = t_end

    async def client() -> None:
        nonlocal molecules, errors, t_last
        connection = HttpConnection(url)
        while True:
            now = time.perf_counter()
            if now >= t_end and (len(latencies) >= clients or now >= t_measure + max_s):
                connection.close()
                return
            payload, n = bodies()
            t0 = time.perf_counter()
            try:
                status = await asyncio.wait_for(connection.post(payload), timeout=300)
                ok, kind = status == 200, str(status)
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                TimeoutError,
                ValueError,
            ) as exc:
                connection.close()
                ok, kind = False, type(exc).__name__
            t1 = time.perf_counter()
            if t0 >= t_measure:
                latencies.append(t1 - t0)
                t_last = max(t_last, t1)
                if ok:
                    molecules += n
                else:
                    errors += 1
                    error_kinds[kind] = error_kinds.get(kind, 0) + 1

    await asyncio.gather(*(client() for _ in range(clients)))
    lat = sorted(t * 1000.0 for t in latencies)
    done = len(latencies)
    window = t_last - t_measure
    return {
        "window_s": window,
        "requests": done,
        "errors": errors,
        "error_kinds": error_kinds,
        "req_per_s": done / window,
        "mol_per_s": molecules / window,
        "p50_ms": percentile(lat, 50) if done else None,
        "p95_ms": percentile(lat, 95) if done else None,
        "p99_ms": percentile(lat, 99) if done else None,
    }


def percentile(ordered: list[float], q: float) -> float:
    """``q``-th percentile of sorted values, interpolated linearly (numpy's default method)."""
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def client_main(args: argparse.Namespace) -> None:
    """Entry point of the load-generator process: prints one JSON object."""
    import random

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    pool = Path(args.pool).read_text().split("\n") if args.pool else []
    rng = random.Random(0)
    offset = [args.offset]
    size = args.molecules

    if args.kind in ("bare", "asgi"):
        fixed = json.dumps({"smiles": ["CCO"]}).encode()

        def bodies():
            return fixed, 1
    elif args.kind == "hit":
        hot = pool[:HIT_POOL]

        def bodies():
            chosen = rng.sample(hot, size) if size > 1 else [rng.choice(hot)]
            return json.dumps({"smiles": chosen}).encode(), size
    else:

        def bodies():
            start = offset[0]
            offset[0] += size
            chunk = [pool[(start + i) % len(pool)] for i in range(size)]
            return json.dumps({"smiles": chunk}).encode(), size

    result = asyncio.run(_drive(args.url, bodies, args.clients, args.duration, args.warmup))
    result["pool_used"] = offset[0] - args.offset
    print(json.dumps(result))


def run_client(
    url: str, kind: str, clients: int, molecules: int, args: argparse.Namespace, pool: Path, offset: int
) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "client",
        "--url",
        url,
        "--kind",
        kind,
        "--clients",
        str(clients),
        "--molecules",
        str(molecules),
        "--duration",
        str(args.duration),
        "--warmup",
        str(0.0 if kind == "miss" else args.warmup),  # every miss request is cold anyway
        "--pool",
        str(pool),
        "--offset",
        str(offset),
    ]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0 or not out.stdout.strip():
        tail = "\n".join((out.stderr or "(no output)").splitlines()[-40:])
        raise RuntimeError(
            f"load generator ({kind}, {clients} clients) exited with {out.returncode}:\n{tail}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- orchestration -------------------------------------------------------------------------------


def _metric(text: str, name: str) -> float:
    total = 0.0
    for match in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M):
        total += float(match.group(1))
    return total


def _server_counters(server: Server) -> dict[str, float]:
    text = server.get("/metrics")
    return {
        k: _metric(text, f"molfusion_{k}")
        for k in (
            "cache_hits_total",
            "cache_misses_total",
            "batch_molecules_sum",
            "batch_molecules_count",
            "batch_requests_sum",
        )
    }


def main_bench(args: argparse.Namespace) -> dict:
    from models.embedder import DEFAULT_GRAPH_ENCODER, DEFAULT_SMILES_ENCODER

    workdir = Path(tempfile.mkdtemp(prefix="molfusion-bench-"))
    encoders: dict[str, Path] | None = None
    if args.encoders == "default":
        for path in (DEFAULT_SMILES_ENCODER, DEFAULT_GRAPH_ENCODER):
            if not (path / "config.json").exists():
                sys.exit(f"no packaged encoder at {path}; use --encoders random (or tiny) for a dry run")
    else:
        print(f"building random-init {args.encoders} encoders in {workdir}", file=sys.stderr)
        size = "tiny" if args.encoders == "tiny" else "default"
        encoders = random_encoders(workdir / "encoders", size, args.data_dir)
    heads_dir = Path(args.heads_dir) if args.heads_dir else None
    if heads_dir is None and (args.encoders != "default" or args.train_heads):
        print("training demo heads (bbbp, esol)", file=sys.stderr)
        heads_dir = demo_heads(encoders, args.device, workdir / "heads", args.data_dir)
        if args.keep:
            print(f"demo heads kept in {heads_dir} (reuse with --heads-dir)", file=sys.stderr)

    pool_smiles = _read_smiles(args.data_dir / "pretrain" / "moses_test.csv.gz")
    pool = workdir / "pool.txt"
    pool.write_text("\n".join(pool_smiles))

    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLFUSION_")}
    env.update(
        {
            "MOLFUSION_DEVICE": args.device,
            "MOLFUSION_LOG_LEVEL": "WARNING",
            "MOLFUSION_CACHE_MAX_ITEMS": str(args.cache_items),
            "MOLFUSION_MEMO_ITEMS": str(args.memo_items),
        }
    )
    if encoders:
        env.update(
            {
                "MOLFUSION_SMILES_ENCODER_DIR": str(encoders["smiles"]),
                "MOLFUSION_GRAPH_ENCODER_DIR": str(encoders["graph"]),
            }
        )
    if heads_dir:
        env["MOLFUSION_HEADS_DIR"] = str(heads_dir)
    if args.redis_url:
        env["MOLFUSION_REDIS_URL"] = args.redis_url
        env["MOLFUSION_CACHE_NAMESPACE"] = f"bench:{os.getpid()}:"

    peers = {
        name: Server(
            name,
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "serve-bare",
                "--kind",
                kind,
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            env,
            port,
            "/ready",
            workdir,
        )
        for name, kind, port in (("bare", "fastapi", free_port()), ("bare-asgi", "asgi", free_port()))
        if name in args.peers.split(",")
    }
    port_svc = free_port()
    svc = Server(
        "molfusion",
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port_svc),
            "--workers",
            str(args.workers),
        ],
        env,
        port_svc,
        "/v1/health/ready",
        workdir,
    )
    results: dict = {
        "machine": _machine_info(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cells": [],
    }
    clients = [int(c) for c in args.clients.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    try:
        failures = []
        for server in (*peers.values(), svc):  # all of them: one failing says nothing of the others
            try:
                server.wait_ready()
            except RuntimeError as exc:
                failures.append(str(exc))
        if failures:
            raise RuntimeError("\n\n".join(failures))
        info = json.loads(svc.get("/v1/info"))
        results["service"] = {
            "encoders": info["encoders"],
            "device": info["device"],
            "cache": info["cache"]["backend"],
            "properties": info["properties"],
        }
        print(f"service: {results['service']}", file=sys.stderr)
        if not info["properties"]:
            raise SystemExit("the service serves no heads (none match these encoders): use --train-heads")
        for name, peer in peers.items():
            for c in clients:
                cell = run_client(peer.url + "/bare", "bare", c, 1, args, pool, 0)
                cell.update({"target": name, "clients": c, "molecules": 1, "cache": "-"})
                results["cells"].append(cell)
                print(_row(cell), file=sys.stderr)
        offset = HIT_POOL
        _warm(svc, pool_smiles[:HIT_POOL])  # every hot molecule embedded (and cached) once
        for size in sizes:
            for cache in args.caches.split(","):
                for c in clients:
                    before = _server_counters(svc)
                    cell = run_client(svc.url + "/v1/predict", cache, c, size, args, pool, offset)
                    after = _server_counters(svc)
                    if cache == "miss":
                        offset += cell["pool_used"]
                    delta = {k: after[k] - before[k] for k in after}
                    lookups = delta["cache_hits_total"] + delta["cache_misses_total"]
                    cell.update(
                        {
                            "target": "predict",
                            "clients": c,
                            "molecules": size,
                            "cache": cache,
                            "server_hit_ratio": delta["cache_hits_total"] / lookups if lookups else None,
                            "mean_batch_molecules": (
                                delta["batch_molecules_sum"] / delta["batch_molecules_count"]
                                if delta["batch_molecules_count"]
                                else None
                            ),
                            "mean_batch_requests": (
                                delta["batch_requests_sum"] / delta["batch_molecules_count"]
                                if delta["batch_molecules_count"]
                                else None
                            ),
                        }
                    )
                    results["cells"].append(cell)
                    print(_row(cell), file=sys.stderr)
    finally:
        svc.stop()
        for peer in peers.values():
            peer.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["goals"] = goals(results["cells"])
    return results


def _machine_info() -> dict[str, str]:
    if str(REPO) not in sys.path:  # run as a script: make `bench` importable
        sys.path.insert(0, str(REPO))
    from bench.machine_info import machine_info

    info = machine_info()
    info["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def _warm(server: Server, smiles: list[str]) -> None:
    import urllib.request

    for start in range(0, len(smiles), 64):
        body = json.dumps({"smiles": smiles[start : start + 64]}).encode()
        request = urllib.request.Request(
            server.url + "/v1/predict", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=300) as r:
            r.read()


def goals(cells: list[dict]) -> dict:
    def find(**kw):
        return next((c for c in cells if all(c.get(k) == v for k, v in kw.items())), None)

    def hit_ratios(peer_target: str) -> dict[int, float]:
        """Cache-hit single-molecule predict req/s over ``peer_target``'s, per client count."""
        ratios = {}
        for c in sorted({c["clients"] for c in cells}):
            peer = find(target=peer_target, clients=c)
            hit = find(target="predict", clients=c, molecules=1, cache="hit")
            if peer and hit and peer["req_per_s"]:
                ratios[c] = hit["req_per_s"] / peer["req_per_s"]
        return ratios

    out = {}
    ratios = hit_ratios("bare")
    out["hit_single_vs_bare_req_ratio"] = ratios
    out["hit_single_vs_bare_ok"] = bool(ratios) and min(ratios.values()) >= 0.5
    out["hit_single_vs_bare_asgi_req_ratio"] = hit_ratios("bare-asgi")
    p99 = find(target="predict", clients=32, molecules=1, cache="hit")
    out["p99_ms_hit_single_32_clients"] = p99["p99_ms"] if p99 else None
    out["p99_ok"] = p99 is not None and p99["p99_ms"] is not None and p99["p99_ms"] <= 50.0
    out["errors"] = sum(c["errors"] for c in cells)
    return out


def _row(cell: dict) -> str:
    p = {k: (f"{cell[k]:.1f}" if cell.get(k) is not None else "-") for k in ("p50_ms", "p95_ms", "p99_ms")}
    return (
        f"| {cell['target']} | {cell['molecules']} | {cell['cache']} | {cell['clients']} | "
        f"{cell['req_per_s']:.0f} | {cell['mol_per_s']:.0f} | {p['p50_ms']} | {p['p95_ms']} | "
        f"{p['p99_ms']} | {cell['errors']} |"
    )


def markdown(results: dict) -> str:
    lines = [
        "| endpoint | mol/req | cache | clients | req/s | mol/s | p50 ms | p95 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_row(c) for c in results["cells"]]
    g = results["goals"]
    asgi = ", ".join(f"{c} clients: {r:.2f}" for c, r in g["hit_single_vs_bare_asgi_req_ratio"].items())
    ratios = ", ".join(f"{c} clients: {r:.2f}" for c, r in g["hit_single_vs_bare_req_ratio"].items())
    lines += [
        "",
        f"cache-hit single-molecule predict / bare req/s: {ratios} "
        f"(goal >= 0.50: {'met' if g['hit_single_vs_bare_ok'] else 'NOT met'})",
        f"the same against the raw ASGI peer (no framework): {asgi or '-'}",
        f"p99 at 32 clients (hit, 1 molecule): {g['p99_ms_hit_single_32_clients']} ms "
        f"(goal <= 50 ms: {'met' if g['p99_ok'] else 'NOT met'}); errors: {g['errors']}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    client = sub.add_parser("client", help="(internal) run the load generator")
    client.add_argument("--url", required=True)
    client.add_argument("--kind", choices=["bare", "hit", "miss"], required=True)
    client.add_argument("--clients", type=int, required=True)
    client.add_argument("--molecules", type=int, default=1)
    client.add_argument("--duration", type=float, default=5.0)
    client.add_argument("--warmup", type=float, default=1.0)
    client.add_argument("--pool", default=None)
    client.add_argument("--offset", type=int, default=0)
    bare = sub.add_parser("serve-bare", help="(internal) run a bare peer server")
    bare.add_argument("--kind", choices=["fastapi", "asgi"], required=True)
    bare.add_argument("--host", default="127.0.0.1")
    bare.add_argument("--port", type=int, required=True)
    bare.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--encoders",
        choices=["default", "random", "tiny"],
        default="default",
        help="packaged pretrained encoders, or random-init default-size / tiny ones",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (MOLFUSION_DEVICE)")
    parser.add_argument(
        "--data-dir", type=Path, default=DATA, help="folder with moleculenet/ and pretrain/moses_test.csv.gz"
    )
    parser.add_argument("--heads-dir", default=None, help="served heads (default: packaged, or demo heads)")
    parser.add_argument(
        "--train-heads", action="store_true", help="train demo heads even for the packaged encoders"
    )
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--sizes", default="1,64", help="molecules per request")
    parser.add_argument("--caches", default="hit,miss")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of every server")
    parser.add_argument(
        "--peers",
        default="bare,bare-asgi",
        help="bare peers: 'bare' (FastAPI, the goal's peer) and/or 'bare-asgi' (raw ASGI, reference)",
    )
    parser.add_argument("--cache-items", type=int, default=2_000_000, help="in-process LRU capacity")
    parser.add_argument(
        "--memo-items", type=int, default=100_000, help="service memos (0 = off: hits go through the cache)"
    )
    parser.add_argument("--redis-url", default=None, help="use this Redis as the embedding cache")
    parser.add_argument("--out", default=None, help="write all results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, encoders, heads)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.command == "client":
        client_main(args)
        return
    if args.command == "serve-bare":
        serve_bare(args)
        return
    results = main_bench(args)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"machine": results["machine"], "service": results.get("service")}, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
