"""Embedding throughput in molecules/s: featurization (1 core, all cores), each encoder alone, and end to end.

Self-contained: random-init encoders (throughput does not depend on the weights), MOSES test SMILES,
and torch-geometric's ``from_smiles`` measured in the same run as the peer for featurization. Runs
on CPU (use ``--limit``) and on a CUDA host (bf16 autocast, like the embedder).

    python bench/embed_throughput.py --limit 2000                 # quick CPU run
    python bench/embed_throughput.py --pipeline-parts-only --limit 10000   # CPU, no forward passes
    python bench/embed_throughput.py --sizes default,xl --json out.json   # GPU host, 100k SMILES

Stages (each timed with wall clock, CUDA synchronised, best of ``--repeats`` for the short ones):

* ``parse``: RDKit ``MolFromSmiles`` alone, and our ``mol_from_smiles`` (its fast path for SMILES without
  stereo marks or hydrogen atoms, :mod:`models.chemistry`);
* ``parse + canonical``: :func:`models.chemistry.parse_smiles`;
* ``from_smiles``: torch-geometric's featurizer, 1 core (the peer);
* ``featurize_chunk, 1 core``: :func:`models.featurizer.featurize_chunk` = parse + canonical SMILES +
  graph (each repeat's ratio to ``from_smiles`` is printed, and the µs/mol of each part);
* ``featurize N cores``: :func:`models.featurizer.featurize_smiles` with N worker processes;
* ``smiles encoder`` / ``graph encoder``: forward passes on pre-tokenized / pre-featurized batches;
* ``pipeline worker``: :func:`models.pipeline.prepare_chunk` on one core (a worker's whole job);
* ``prepare_chunk on N processes at once``: the host's preparation capacity (``--capacity-workers``),
  full RDKit parse and fast parse path interleaved; an upper bound for the end-to-end pipeline;
* ``pipeline parent``: the pipeline parent's cost per molecule without forward passes (stub encoders);
* ``end to end (Embedder.embed)``: the library API, all views, one call on the whole input;
* ``end to end (pipeline)``: :class:`models.pipeline.EmbeddingPipeline`, preparation on all cores
  overlapped with encoding (plus the rate after the first chunk, start-up excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine_info import machine_info  # noqa: E402
from models.chemistry import ParsePolicy, mol_from_smiles, parse_smiles  # noqa: E402
from models.embedder import Embedder, GraphView, SmilesView  # noqa: E402
from models.featurizer import collate_graphs, featurize_chunk, featurize_smiles  # noqa: E402
from models.graph_encoder import GraphEncoder, GraphEncoderConfig  # noqa: E402
from models.pipeline import EmbeddingPipeline, prepare_chunk  # noqa: E402
from models.smiles_encoder import MolFormerConfig, MolFormerModel, count_parameters, xl_config  # noqa: E402
from models.tokenizer import build_tokenizer  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 1) -> float:
    """Best wall-clock seconds of ``repeats`` runs (CUDA synchronised)."""
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


class Report:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, stage: str, n: int, seconds: float, **extra) -> float:
        rate = n / seconds
        self.rows.append(
            {
                "stage": stage,
                "molecules": n,
                "seconds": round(seconds, 3),
                "mol_per_s": round(rate, 1),
                **extra,
            }
        )
        note = " ".join(f"{k}={v}" for k, v in extra.items())
        print(f"{stage:48s} {n:>8d} mol {seconds:9.2f} s {rate:>11,.0f} mol/s  {note}", flush=True)
        return rate


def smiles_model(kind: str, vocab_size: int) -> MolFormerModel:
    config = xl_config(vocab_size) if kind == "xl" else MolFormerConfig(vocab_size=vocab_size)
    return MolFormerModel(config).eval()


def bench_featurization(report: Report, smiles: list[str], n_one: int, workers: int, repeats: int) -> None:
    from rdkit import Chem
    from torch_geometric.utils import from_smiles

    sample = smiles[:n_one]
    stages = {
        "parse (RDKit MolFromSmiles), 1 core": lambda: [Chem.MolFromSmiles(s) for s in sample],
        "parse (molfusion mol_from_smiles, fast path), 1 core": lambda: [mol_from_smiles(s) for s in sample],
        "parse + canonical SMILES (parse_smiles), 1 core": lambda: [parse_smiles(s) for s in sample],
        "from_smiles (torch-geometric), 1 core": lambda: [from_smiles(s) for s in sample],
        "featurize_chunk (parse+canonical+graph), 1 core": lambda: featurize_chunk(sample),
    }
    # Interleaved repeats (parse, ..., peer, ours, parse, ...), best of each: load drift hits all alike.
    # Each repeat's own ratio is printed too, so the spread is visible.
    best = dict.fromkeys(stages, float("inf"))
    ratios = []
    for _ in range(repeats):
        took = {name: wall(fn) for name, fn in stages.items()}
        peer_s, ours_s = (took[name] for name in list(stages)[3:])
        ratios.append(peer_s / ours_s)
        best = {name: min(best[name], took[name]) for name in stages}
    parse, fast, canonical, peer, ours = (report.add(name, len(sample), best[name]) for name in stages)
    print(f"  -> featurize_chunk vs from_smiles: {ours / peer:.2f}x (best of {repeats}); per repeat: "
          + ", ".join(f"{r:.2f}x" for r in ratios))
    print(f"  -> parse fast path {1e6 / fast:.0f} us/mol vs MolFromSmiles {1e6 / parse:.0f} "
          f"({fast / parse:.2f}x)")
    print(f"  -> us/mol: parse {1e6 / parse:.0f}, + canonical {1e6 / canonical:.0f}, "
          f"+ graph {1e6 / ours:.0f} (graph alone {1e6 / ours - 1e6 / canonical:.0f}); "
          f"from_smiles {1e6 / peer:.0f}")
    report.rows[-1]["vs_from_smiles"] = round(ours / peer, 2)
    report.rows[-1]["vs_from_smiles_per_repeat"] = [round(r, 2) for r in ratios]
    if workers > 1:
        many = report.add(
            f"featurize_smiles, {workers} processes",
            len(smiles),
            wall(lambda: featurize_smiles(smiles, workers=workers, threshold=0)),
        )
        print(f"  -> scaling {many / ours:.1f}x on {workers} processes")
        report.rows[-1]["scaling_vs_1_core"] = round(many / ours, 2)


def wall(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_encoders(
    report: Report,
    smiles: list[str],
    tokenizer,
    size: str,
    device: torch.device,
    batch_size: int,
    repeats: int,
    workers: int,
) -> tuple[MolFormerModel, GraphEncoder]:
    torch.manual_seed(0)
    model = smiles_model(size, len(tokenizer)).to(device)
    graph = GraphEncoder(GraphEncoderConfig()).eval().to(device)
    sample = featurize_smiles(smiles, workers=workers, threshold=0)
    valid = [f for f in sample if f.graph is not None]
    order = np.argsort([len(f.canonical) for f in valid], kind="stable")  # the embedder's length buckets
    texts = [valid[i].canonical for i in order]
    token_batches = []
    for s in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[s : s + batch_size], padding=True, return_tensors="pt", return_token_type_ids=False
        )
        token_batches.append((enc["input_ids"].to(device), enc["attention_mask"].to(device)))
    graph_order = np.argsort([f.graph.x.shape[0] for f in valid], kind="stable")
    graph_batches = [
        collate_graphs([valid[i].graph for i in graph_order[s : s + batch_size]]).to(device)
        for s in range(0, len(valid), batch_size)
    ]
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    @torch.inference_mode()
    def run_smiles() -> None:
        with torch.autocast(**autocast):
            for ids, mask in token_batches:
                model.embed(ids, mask)

    @torch.inference_mode()
    def run_graph() -> None:
        with torch.autocast(**autocast):
            for batch in graph_batches:
                graph.embed(batch)

    run_smiles()  # warm-up (kernels, allocator)
    run_graph()
    n_params = count_parameters(model)
    report.add(
        f"smiles encoder [{size}, {n_params / 1e6:.1f}M params, {model.config.attention_type}]",
        len(valid),
        timed(run_smiles, device, repeats),
        size=size,
        device=device.type,
    )
    if size == "default":
        report.add(
            f"graph encoder [5x300, {count_parameters(graph) / 1e6:.1f}M params]",
            len(valid),
            timed(run_graph, device, repeats),
            device=device.type,
        )
    return model, graph


class _StubEncoder(torch.nn.Module):
    """Returns zeros of the real encoder's width: times everything around the forward pass."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def embed(self, first, *rest) -> torch.Tensor:
        n = first.shape[0] if isinstance(first, torch.Tensor) else int(first.num_graphs)
        device = first.device if isinstance(first, torch.Tensor) else first.x.device
        return torch.zeros(n, self.dim, device=device)


def _stub_views(smiles_view: SmilesView, graph_view: GraphView) -> tuple[SimpleNamespace, SimpleNamespace]:
    """The two views with encoders that return zeros of the real widths (no forward pass)."""
    return (SimpleNamespace(model=_StubEncoder(smiles_view.dim), tokenizer=smiles_view.tokenizer,
                            dim=smiles_view.dim, max_length=smiles_view.max_length),
            SimpleNamespace(model=_StubEncoder(graph_view.dim), dim=graph_view.dim))


def bench_pipeline_parts(
    report: Report,
    smiles: list[str],
    smiles_view: SmilesView,
    graph_view: GraphView,
    device: torch.device,
    batch_size: int,
    chunk_size: int,
    repeats: int,
) -> None:
    """The two halves of :class:`EmbeddingPipeline` apart: (a) one worker process's rate (parse,
    canonical, graph, tokens, collation: :func:`prepare_chunk`), (b) the parent's cost per molecule
    without the forward passes (pickling the inputs to the workers, unpickling prepared chunks, tensors,
    host-to-device copies, masks/batch vectors, scatter into the output, device-to-host copy), with stub
    encoders that return zeros of the real widths."""
    views = ("smiles", "graph", "fused")
    need = {"smiles", "graph"}
    pipe = EmbeddingPipeline(smiles_view, graph_view, device, batch_size=batch_size, workers=1,
                             chunk_size=chunk_size)
    print(f"  pipeline worker tokenizer: {type(pipe.worker_tokenizer).__name__}")
    parts = [smiles[s : s + chunk_size] for s in range(0, len(smiles), chunk_size)]
    prepared: list = []

    def prepare() -> None:
        prepared[:] = [prepare_chunk(*pipe.worker_args(i * chunk_size, part, need), pipe.worker_tokenizer)
                       for i, part in enumerate(parts)]

    cpu = torch.device("cpu")
    report.add("pipeline worker: prepare_chunk, 1 process", len(smiles), timed(prepare, cpu, repeats),
               chunk_size=chunk_size)
    stub = EmbeddingPipeline(*_stub_views(smiles_view, graph_view), device, batch_size=batch_size, workers=1,
                             chunk_size=chunk_size)
    blobs = [pickle.dumps(c, protocol=pickle.HIGHEST_PROTOCOL) for c in prepared]
    sent = [(pipe.worker_args(0, part, need), part) for part in parts]

    def parent() -> None:
        previous = None
        for (args, part), blob in zip(sent, blobs, strict=True):
            pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL)  # the chunk's inputs on their way out
            current = stub.launch(pickle.loads(blob), part, need)  # its result on its way back
            if previous is not None:
                stub.finish(previous, views)
            previous = current
        stub.finish(previous, views)

    parent()  # warm-up (pinned-memory pool, kernels)
    seconds = timed(parent, device, repeats)
    unpickle = timed(lambda: [pickle.loads(b) for b in blobs], cpu, repeats)
    report.add("pipeline parent, without forward passes", len(smiles), seconds, device=device.type,
               us_per_mol=round(1e6 * seconds / len(smiles), 2),
               unpickle_us_per_mol=round(1e6 * unpickle / len(smiles), 2),
               bytes_per_mol=round(sum(map(len, blobs)) / len(smiles)))
    n = len(smiles)
    print(f"  -> parent {1e6 * seconds / n:.2f} us/mol (unpickling {1e6 * unpickle / n:.2f}), "
          f"{sum(map(len, blobs)) / n:.0f} bytes/mol from the workers: the parent alone could feed "
          f"{n / seconds:,.0f} mol/s")


def _prepare_part(args: tuple) -> int:
    """A capacity-stage task: one chunk through the pipeline worker's whole job; only its size returns."""
    return prepare_chunk(*args).size


def _prepare_whole(args: tuple):
    """The same, returning the prepared chunk to the parent as the pipeline does."""
    return prepare_chunk(*args)


def _pool_seconds(n: int, worker_tokenizer, task: Callable[[tuple], object], parts: list[tuple]) -> float:
    """Wall seconds of ``task`` over ``parts`` on a fresh pool of ``n`` pipeline workers (results collected in
    the parent); forking the pool and one warm-up chunk per worker are not timed."""
    from models.pipeline import _init_worker

    with ProcessPoolExecutor(n, initializer=_init_worker, initargs=(worker_tokenizer,)) as pool:
        list(pool.map(_prepare_part, [parts[0]] * n))
        return wall(lambda: list(pool.map(task, parts)))


def bench_worker_capacity(report: Report, smiles: list[str], smiles_view: SmilesView, counts: list[int],
                          batch_size: int, chunk_size: int) -> None:
    """The host's preparation capacity: ``prepare_chunk`` over the input on N worker processes at once,
    without the device or the parent's tensor work, once with RDKit's full ``MolFromSmiles`` and once
    with the fast parse path (interleaved per N). The end-to-end pipeline cannot beat this rate."""
    from rdkit import Chem

    import models.chemistry as chemistry

    pipe = EmbeddingPipeline(smiles_view, SimpleNamespace(dim=0), torch.device("cpu"), batch_size=batch_size,
                             workers=1, chunk_size=chunk_size)
    need = {"smiles", "graph"}
    fast = chemistry.mol_from_smiles
    single = {}
    for n in counts:
        use = smiles[: 8 * n * chunk_size]  # eight chunks per process, at most the whole input
        parts = [pipe.worker_args(s, use[s : s + chunk_size], need) for s in range(0, len(use), chunk_size)]
        for parse, fn in (("full parse", Chem.MolFromSmiles), ("fast parse", fast)):
            chemistry.mol_from_smiles = fn  # the forked workers inherit it
            try:
                seconds = _pool_seconds(n, pipe.worker_tokenizer, _prepare_part, parts)
            finally:
                chemistry.mol_from_smiles = fast
            rate = report.add(f"prepare_chunk on {n} processes at once, no device ({parse})", len(use),
                              seconds, processes=n, parse=parse)
            single.setdefault(parse, rate)
            report.rows[-1]["scaling_vs_first"] = round(rate / single[parse], 2)
            print(f"  -> {rate / single[parse]:.1f}x the {counts[0]}-process rate")
        # fast parse, each prepared chunk crossing the pipe and unpickled here, as in the pipeline
        seconds = _pool_seconds(n, pipe.worker_tokenizer, _prepare_whole, parts)
        report.add(f"prepare_chunk on {n} processes at once, prepared chunks sent back", len(use), seconds,
                   processes=n, parse="fast parse", returned=True)


def bench_end_to_end(
    report: Report,
    smiles: list[str],
    model: MolFormerModel,
    graph: GraphEncoder,
    tokenizer,
    size: str,
    device: torch.device,
    batch_size: int,
    workers: int,
    chunk_size: int,
    variants: list[str] | None = None,
) -> None:
    """``variants``: pipeline settings timed one after the other (:func:`_pipeline_variant`)."""
    smiles_view = SmilesView(model, tokenizer, f"bench-{size}")
    graph_view = GraphView(graph, "bench-graph")
    embedder = Embedder(
        smiles_view,
        graph_view,
        device=device.type,
        batch_size=batch_size,
        policy=ParsePolicy(),
        featurize_workers=workers,
    )
    result = {}

    def via_embedder() -> None:
        result["embedder"] = embedder.embed(smiles, views=("smiles", "graph", "fused"))

    report.add(
        f"end to end, Embedder.embed [{size}], all views",
        len(smiles),
        timed(via_embedder, device),
        size=size,
        device=device.type,
    )
    # Calls of 5,000 SMILES, as `molfusion predict` makes per chunk: the embedder's featurization pool kept
    # across calls (what it does) vs a pool forked for every call (what it did before).
    calls = [smiles[s : s + 5000] for s in range(0, min(len(smiles), 50_000), 5000)]
    for kept in (True, False):
        embedder.close()
        if not kept:
            embedder._worker_pool = lambda workers: None  # featurize_smiles then forks its own pool
        seconds = timed(lambda: [embedder.embed(c) for c in calls], device)
        report.add(f"end to end, Embedder.embed in calls of 5,000 [{size}], pool "
                   + ("kept across calls" if kept else "forked per call"), sum(map(len, calls)), seconds,
                   size=size, device=device.type, pool_kept=kept)
    del embedder._worker_pool
    embedder.close()
    for variant in variants or [f"{chunk_size}"]:
        chunk, n_workers, stub = _pipeline_variant(variant, workers)
        views = _stub_views(smiles_view, graph_view) if stub else (smiles_view, graph_view)
        pipe = EmbeddingPipeline(*views, device, batch_size=batch_size, workers=n_workers, chunk_size=chunk)

        def via_pipeline(pipe: EmbeddingPipeline = pipe) -> None:
            result["pipeline"], result["first"], result["t0"] = [], None, time.perf_counter()
            for c in pipe.run(smiles):
                result["pipeline"].append(c.vectors["fused"])
                if result["first"] is None:  # pool start and pipeline fill end here
                    result["first"] = (time.perf_counter(), len(c.inputs))
            result["end"] = time.perf_counter()

        label = f"chunk {chunk}" + (", stub encoders (no forward passes)" if stub else "")
        report.add(
            f"end to end, overlapped pipeline [{size}], all views, {n_workers} workers, {label}",
            len(smiles),
            timed(via_pipeline, device),
            size=size,
            device=device.type,
            chunk_size=chunk,
            workers=n_workers,
            stub_encoders=stub,
        )
        (first_at, first_rows), end = result["first"], result["end"]
        if len(smiles) > first_rows and end > first_at:
            steady = (len(smiles) - first_rows) / (end - first_at)
            report.rows[-1]["steady_mol_per_s"] = round(steady, 1)
            report.rows[-1]["first_chunk_s"] = round(first_at - result["t0"], 3)
            print(f"  -> first chunk ({first_rows} SMILES) back after {first_at - result['t0']:.2f} s; after "
                  f"it {steady:,.0f} mol/s (overstates: the other workers' first chunks were under way)")
        if stub:
            continue
        fused = np.concatenate(result["pipeline"])
        reference = result["embedder"].vectors["fused"]
        tol = 5e-2 if device.type == "cuda" else 1e-4  # bf16 on GPU; batch composition differs
        agree = np.allclose(np.nan_to_num(fused, nan=0.0), np.nan_to_num(reference, nan=0.0), atol=tol,
                            rtol=tol)
        print(f"  -> pipeline rows agree with Embedder.embed (atol {tol}): {agree}")


def _pipeline_variant(text: str, workers: int) -> tuple[int, int, bool]:
    """``CHUNK[:wN][:stub]`` -> (chunk size, worker processes, stub encoders)."""
    chunk, *flags = text.split(":")
    n = next((int(f[1:]) for f in flags if f.startswith("w")), workers)
    return int(chunk), n, "stub" in flags


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("MOLFUSION_DATA_DIR", DEFAULT_DATA))
    )
    parser.add_argument("--limit", type=int, default=100_000, help="MOSES test SMILES to use (default 100k).")
    parser.add_argument("--one-core", type=int, default=5000, help="SMILES for the 1-core featurizer stages.")
    parser.add_argument("--sizes", default="default,xl", help="SMILES-encoder sizes: default, xl.")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda.")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="Encoder batch (default: 1024 cuda, 256 cpu)."
    )
    parser.add_argument("--workers", type=int, default=0, help="Featurization processes (0 = all cores).")
    parser.add_argument("--chunk-size", type=int, default=2048, help="SMILES per pipeline chunk.")
    parser.add_argument("--parts-limit", type=int, default=10_000,
                        help="SMILES for the pipeline's worker/parent stages (default 10k).")
    parser.add_argument(
        "--repeats", type=int, default=3, help="Best-of repeats for the 1-core/encoder stages."
    )
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--pipeline-parts-only", action="store_true",
                        help="Per size, only the pipeline's worker and parent stages (no forward passes).")
    parser.add_argument("--pipeline-variants", default="",
                        help="End-to-end pipeline settings to compare, comma-separated CHUNK[:wN][:stub] "
                             "(N worker processes; stub = encoders returning zeros); default: --chunk-size.")
    parser.add_argument("--capacity-workers", default="",
                        help="Process counts for the preparation-capacity stage, comma-separated "
                             "(e.g. 1,8,16); empty skips it.")
    parser.add_argument("--json", type=Path, help="Also write the results as JSON here.")
    args = parser.parse_args(argv)

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    batch_size = args.batch_size or (1024 if device.type == "cuda" else 256)
    workers = args.workers or (os.cpu_count() or 1)
    info = machine_info()
    print("machine:", json.dumps(info))
    print(
        f"device={device} batch_size={batch_size} workers={workers} torch_threads={torch.get_num_threads()}"
    )
    frame = pd.read_csv(args.data_dir / "pretrain" / "moses_test.csv.gz", nrows=args.limit)
    smiles = frame["SMILES"].tolist()
    print(f"{len(smiles)} MOSES test SMILES from {args.data_dir}")
    tokenizer = build_tokenizer(smiles[:20_000])
    report = Report()
    bench_featurization(report, smiles, min(args.one_core, len(smiles)), workers, args.repeats)
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        if args.pipeline_parts_only:  # no encoder forward passes at all: quick on a CPU
            torch.manual_seed(0)
            model = smiles_model(size, len(tokenizer)).to(device)
            graph = GraphEncoder(GraphEncoderConfig()).eval().to(device)
        else:
            model, graph = bench_encoders(
                report, smiles, tokenizer, size, device, batch_size, args.repeats, workers
            )
        if not args.skip_end_to_end:
            parts = smiles[: args.parts_limit]
            bench_pipeline_parts(report, parts, SmilesView(model, tokenizer, size), GraphView(graph, "graph"),
                                 device, batch_size, args.chunk_size, args.repeats)
        counts = [int(c) for c in args.capacity_workers.split(",") if c.strip()]
        if counts and size == "default":
            bench_worker_capacity(report, smiles, SmilesView(model, tokenizer, size), counts, batch_size,
                                  args.chunk_size)
        if not (args.skip_end_to_end or args.pipeline_parts_only):
            bench_end_to_end(
                report, smiles, model, graph, tokenizer, size, device, batch_size, workers, args.chunk_size,
                [v.strip() for v in args.pipeline_variants.split(",") if v.strip()],
            )
        del model, graph
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "device": str(device),
                    "batch_size": batch_size,
                    "workers": workers,
                    "n_smiles": len(smiles),
                    "results": report.rows,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
