"""Benchmark of the fused heads against single views, ECFP4 + XGBoost and chemprop 2.x.

Usage (results are cached per data set and method under ``--work``; re-running skips finished runs)::

    .venv/bin/python bench/heads_benchmark.py splits                       # write the split files
    .venv/bin/python bench/heads_benchmark.py embed --datasets bbbp,esol    # cache embeddings (.npy)
    .venv/bin/python bench/heads_benchmark.py run --datasets bbbp --methods fused-mlp,ecfp4-xgb,chemprop
    .venv/bin/python bench/heads_benchmark.py sparse --datasets tox21       # sparse multi-task comparison
    .venv/bin/python bench/heads_benchmark.py report                       # -> docs/bench_heads.md

Protocol: Bemis–Murcko scaffold split 80/10/10 (``fusion.splits.scaffold_split``), seeds 0, 1, 2 (the
seed changes the split and the initialisation); every method reads the same split files. Model
selection and early stopping use validation only; test metrics are reported as mean ± std over seeds
(ROC-AUC for classification, RMSE and MAE for regression, averaged over tasks). chemprop runs with its
CLI defaults on CSVs written from the same splits (``-i train.csv val.csv test.csv``), in a separate
virtual environment (``--chemprop``) because its dependency pin would change this venv's RDKit.

Sparse multi-task: for Tox21, ToxCast and QM9 a fixed random 90% of each task's training and
validation labels is removed (numpy seed 0, independent of the split); test labels stay complete, so
every method is scored on the same, full test labels.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine_info import machine_info  # noqa: E402
from fusion.datasets import SPECS, Dataset, cached_views, load_dataset  # noqa: E402
from fusion.metrics import evaluate  # noqa: E402
from fusion.splits import scaffold_split  # noqa: E402
from fusion.training import fit_head  # noqa: E402

CLASSIFICATION = ["bbbp", "bace", "clintox", "sider", "tox21", "hiv"]
REGRESSION = ["esol", "freesolv", "lipophilicity"]
SPARSE = ["tox21", "toxcast", "qm9"]
SEEDS = (0, 1, 2)
# deterministic subsample (seed 0) of the largest sets, stated in the report
MAX_ROWS = {"hiv": 5000, "qm9": 5000}
SPARSE_DROP = 0.9

# The MLP configuration of the packaged default heads (fusion/train_defaults.py): one hidden layer of 64.
COMPACT = {"hidden": 64, "layers": 1, "dropout": 0.2}
# method -> (head, fusion, views, extra hyper-parameters)
METHODS: dict[str, tuple[str, str, tuple[str, ...], dict]] = {
    "fused-mlp": ("mlp", "concat", ("smiles", "graph"), COMPACT),
    "fused-mlp-reduce": ("mlp", "concat_reduce", ("smiles", "graph"), COMPACT),
    "fused-mlp-gated": ("mlp", "gated", ("smiles", "graph"), COMPACT),
    "fused-xgb": ("xgb", "concat_reduce", ("smiles", "graph"), {"n_jobs": 1}),
    "fused-experts": ("experts", "concat", ("smiles", "graph"), {}),
    "fused-fmt": ("fmt", "concat", ("smiles", "graph"), {}),
    "smiles-mlp": ("mlp", "concat", ("smiles",), COMPACT),
    "graph-mlp": ("mlp", "concat", ("graph",), COMPACT),
    "ecfp4-xgb": ("xgb", "concat", ("ecfp4",), {"n_jobs": 1}),
}
SPARSE_METHODS = {"sparse-fmt": "fmt", "sparse-mlp": "mlp", "sparse-single": "single_task"}
SPARSE_HPARAMS = {"n_components": 256}  # same reduced fused input (PCA on train rows) for all three


def dataset(name: str, data_dir: Path) -> Dataset:
    return load_dataset(name, data_dir, max_rows=MAX_ROWS.get(name))


def split_path(work: Path, ds: Dataset) -> Path:
    return work / "splits" / f"{ds.name}.json"


def splits(work: Path, ds: Dataset) -> list[dict[str, list[int]]]:
    path = split_path(work, ds)
    if path.exists():
        return json.loads(path.read_text())
    out = []
    for seed in SEEDS:
        tr, va, te = scaffold_split(ds.smiles, seed)
        out.append({"train": tr.tolist(), "val": va.tolist(), "test": te.tolist()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def ecfp4(smiles: list[str], n_bits: int = 2048) -> np.ndarray:
    """Morgan fingerprints, radius 2 (ECFP4), as 0/1 floats."""
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=n_bits)
    out = np.zeros((len(smiles), n_bits), dtype=np.float32)
    for i, s in enumerate(smiles):
        out[i] = gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(s))
    return out


@functools.lru_cache(maxsize=1)
def build_embedder():
    """The configured encoders (``MOLFUSION_*`` settings) on CPU, with an in-process float32 cache so
    molecules shared between data sets (Tox21 / ToxCast) are encoded once per process."""
    from app.factory import build_embedder as embedder_from_settings
    from app.settings import Settings
    from models.embedding_cache import LRUVectorCache

    settings = Settings(device="cpu", batch_size=128, featurize_workers=1)
    return embedder_from_settings(settings, cache=LRUVectorCache(max_items=400_000, dtype="float32"))


def result_path(work: Path, ds: Dataset, method: str) -> Path:
    return work / "results" / ds.name / f"{method}.json"


def summarise(per_seed: list[dict]) -> dict:
    metrics = sorted({k for r in per_seed for k, v in r["test"]["mean"].items() if v is not None})
    out = {}
    for k in metrics:
        vals = [r["test"]["mean"][k] for r in per_seed if r["test"]["mean"].get(k) is not None]
        out[k] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}
    return out


def run_head_method(ds: Dataset, method: str, views: dict[str, np.ndarray], parts: list[dict]) -> dict:
    head, fusion, view_names, extra = METHODS[method]
    per_seed = []
    for seed, part in zip(SEEDS, parts, strict=True):
        tr, va, te = (np.array(part[k]) for k in ("train", "val", "test"))
        x = {v: views[v] for v in view_names}
        t0 = time.perf_counter()
        model = fit_head(
            x,
            ds.y,
            ds.task_types,
            tr,
            va,
            head=head,
            fusion=fusion,
            seed=seed,
            tasks=ds.tasks,
            groups=_groups(ds) if head == "experts" else None,
            **extra,
        )
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = model.predict(x)
        predict_s = time.perf_counter() - t0
        per_seed.append(
            {
                "seed": seed,
                "train_s": train_s,
                "predict_s": predict_s,
                "n_train": len(tr),
                "n_predict": len(ds.smiles),
                "val": evaluate(ds.y[va], pred[va], ds.task_types, ds.tasks),
                "test": evaluate(ds.y[te], pred[te], ds.task_types, ds.tasks),
            }
        )
        print(
            f"  {ds.name} {method} seed {seed}: test {per_seed[-1]['test']['mean']} ({train_s:.1f}s)",
            flush=True,
        )
    return {"method": method, "dataset": ds.name, "per_seed": per_seed, "test": summarise(per_seed)}


_GROUPS: dict[str, np.ndarray] = {}


def _groups(ds: Dataset) -> np.ndarray:
    from fusion.splits import group_ids

    if ds.name not in _GROUPS:
        _GROUPS[ds.name] = group_ids(ds.smiles)
    return _GROUPS[ds.name]


def _chemprop(chemprop: Path, args: list[str], log_file: Path, env: dict) -> float:
    """Run one chemprop CLI command; returns its wall seconds (process start included)."""
    t0 = time.perf_counter()
    with log_file.open("w") as log:
        subprocess.run([str(chemprop), *args], check=True, stdout=subprocess.DEVNULL, stderr=log, env=env)
    return time.perf_counter() - t0


def _chemprop_seed(
    ds: Dataset,
    frame: pd.DataFrame,
    seed: int,
    part: dict,
    work: Path,
    chemprop: Path,
    device: list[str],
    env: dict,
    trained_only: bool,
) -> dict | None:
    """Train (unless ``train_seconds.json`` shows a finished run) and predict one chemprop seed."""
    folder = work / "chemprop" / ds.name / f"seed{seed}"
    timing = folder / "train_seconds.json"
    if trained_only and not timing.exists():  # report the seeds that finished training, no new ones
        return None
    if not timing.exists():
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        files = []
        for k in ("train", "val", "test"):
            path = folder / f"{k}.csv"
            frame.iloc[part[k]].to_csv(path, index=False)
            files.append(str(path))
        task_type = "classification" if ds.spec.task_type == "classification" else "regression"
        train_s = _chemprop(
            chemprop,
            [
                "train",
                "-i",
                *files,
                "-s",
                "smiles",
                "--target-columns",
                *ds.tasks,
                "-t",
                task_type,
                "-o",
                str(folder / "out"),
                "--data-seed",
                str(seed),
                "--pytorch-seed",
                str(seed),
                *device,
            ],
            folder / "train.log",
            env,
        )
        timing.write_text(json.dumps({"train_s": train_s, "device": device}))
    train_s = json.loads(timing.read_text())["train_s"]
    model = next((folder / "out").rglob("best*.pt"))
    everything = folder / "all.csv"
    frame[["smiles"]].to_csv(everything, index=False)
    preds = folder / "all_preds.csv"
    predict_s = _chemprop(
        chemprop,
        ["predict", "-i", str(everything), "-s", "smiles", "--model-paths", str(model), "-o", str(preds)]
        + device,
        folder / "predict.log",
        env,
    )
    out = pd.read_csv(preds)
    te = np.array(part["test"])
    pred = out[list(ds.tasks)].to_numpy(dtype=np.float64)[te]
    result = {
        "seed": seed,
        "train_s": train_s,
        "predict_s": predict_s,
        "n_train": len(part["train"]),
        "n_predict": len(ds.smiles),
        "test": evaluate(ds.y[te], pred, ds.task_types, ds.tasks),
    }
    print(f"  {ds.name} chemprop seed {seed}: test {result['test']['mean']} ({train_s:.1f}s)", flush=True)
    return result


def run_chemprop(
    ds: Dataset,
    parts: list[dict],
    work: Path,
    chemprop: Path,
    threads: int,
    trained_only: bool = False,
    accelerator: str = "cpu",
    jobs: int = 1,
) -> dict:
    """chemprop with its CLI defaults on the same split CSVs; a trained seed (``train_seconds.json``
    present) is reused, so only prediction re-runs. Prediction covers every molecule of the set (as the
    heads' prediction timing does); metrics use the test rows. ``jobs`` seeds run at once (separate
    processes; on a GPU they share it)."""
    from concurrent.futures import ThreadPoolExecutor

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    frame = pd.DataFrame(ds.y, columns=ds.tasks)
    frame.insert(0, "smiles", ds.smiles)
    device = ["-n", "0", "--accelerator", accelerator, "--devices", "1"]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = list(
            pool.map(
                lambda sp: _chemprop_seed(ds, frame, sp[0], sp[1], work, chemprop, device, env, trained_only),
                zip(SEEDS, parts, strict=True),
            )
        )
    per_seed = [r for r in done if r is not None]
    return {
        "method": "chemprop",
        "dataset": ds.name,
        "per_seed": per_seed,
        "test": summarise(per_seed),
        "accelerator": accelerator,
        "parallel_seeds": jobs,
        "note": "chemprop CLI defaults; timings include process start and featurisation",
    }


def sparse_labels(y: np.ndarray, rows: np.ndarray, drop: float = SPARSE_DROP, seed: int = 0) -> np.ndarray:
    """Remove a fixed random ``drop`` fraction of each task's labels among ``rows`` (NaN)."""
    rng = np.random.default_rng(seed)
    out = y.copy()
    for t in range(y.shape[1]):
        labelled = rows[~np.isnan(y[rows, t])]
        out[rng.permutation(labelled)[: int(round(drop * len(labelled)))], t] = np.nan
    return out


def run_sparse(ds: Dataset, method: str, views: dict[str, np.ndarray], parts: list[dict]) -> dict:
    head = SPARSE_METHODS[method]
    per_seed = []
    for seed, part in zip(SEEDS, parts, strict=True):
        tr, va, te = (np.array(part[k]) for k in ("train", "val", "test"))
        y = sparse_labels(ds.y, np.concatenate([tr, va]))
        keep = [
            t
            for t in range(y.shape[1])
            if (~np.isnan(y[tr, t])).sum() >= 10
            and (ds.spec.task_type == "regression" or np.unique(y[tr, t][~np.isnan(y[tr, t])]).size == 2)
        ]
        tasks = [ds.tasks[t] for t in keep]
        types = [ds.task_types[t] for t in keep]
        t0 = time.perf_counter()
        model = fit_head(
            views,
            y[:, keep],
            types,
            tr,
            va,
            head=head,
            fusion="concat_reduce",
            seed=seed,
            tasks=tasks,
            **SPARSE_HPARAMS,
        )
        train_s = time.perf_counter() - t0
        pred = model.predict(views)
        per_seed.append(
            {
                "seed": seed,
                "train_s": train_s,
                "n_tasks": len(keep),
                "n_train": len(tr),
                "train_labels": int((~np.isnan(y[tr][:, keep])).sum()),
                "test": evaluate(ds.y[te][:, keep], pred[te], types, tasks),
            }
        )
        print(
            f"  {ds.name} {method} seed {seed}: {len(keep)} tasks, test {per_seed[-1]['test']['mean']} "
            f"({train_s:.1f}s)",
            flush=True,
        )
    return {"method": method, "dataset": ds.name, "per_seed": per_seed, "test": summarise(per_seed)}


def _load_results(work: Path) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for path in sorted((work / "results").glob("*/*.json")):
        result = json.loads(path.read_text())
        out.setdefault(path.parent.name, {})[path.stem] = result
    return out


def _cell(result: dict | None, metric: str) -> str:
    if result is None or metric not in result["test"]:
        return "not run"
    m = result["test"][metric]
    seeds = "" if m["n"] == 3 else f" ({m['n']} seeds)"
    return f"{m['mean']:.3f} ± {m['std']:.3f}{seeds}"


def _group_mean(results: dict, names: list[str], method: str, metric: str) -> float | None:
    vals = [
        results[n][method]["test"][metric]["mean"]
        for n in names
        if method in results.get(n, {}) and metric in results[n][method]["test"]
    ]
    return float(np.mean(vals)) if len(vals) == len(names) and vals else None


def _table(
    results: dict, names: list[str], methods: list[str], metric: str, higher: bool, vs_chemprop: bool = True
) -> list[str]:
    lines = ["| data set | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for n in names:
        label = n
        lines.append(
            f"| {label} | " + " | ".join(_cell(results.get(n, {}).get(m), metric) for m in methods) + " |"
        )
    means = [_group_mean(results, names, m, metric) for m in methods]
    lines.append("| **mean** | " + " | ".join("—" if v is None else f"**{v:.3f}**" for v in means) + " |")
    paired = [
        n for n in names if "chemprop" in results.get(n, {}) and metric in results[n]["chemprop"]["test"]
    ]
    if paired and vs_chemprop:
        ref = _group_mean(results, paired, "chemprop", metric)
        cells = []
        for m in methods:
            v = _group_mean(results, paired, m, metric)
            cells.append("—" if v is None or ref is None else f"{(v / ref if higher else ref / v):.3f}")
        lines.append(
            f"| ratio vs chemprop on {', '.join(paired)} (>1 = better) | " + " | ".join(cells) + " |"
        )
    return lines


def _rates(result: dict) -> tuple[float, float]:
    """Mean over seeds of training and prediction molecules per second."""
    seeds = result["per_seed"]
    return (
        float(np.mean([s["n_train"] / s["train_s"] for s in seeds])),
        float(np.mean([s["n_predict"] / s["predict_s"] for s in seeds])),
    )


def _embedding_runs(work: Path) -> list[tuple[str, dict]]:
    """(data set, meta) of every cached embedding run under ``work`` (one meta per run, not per view)."""
    runs = []
    for path in sorted((work / "embeddings").glob("*/meta-*.json")):
        meta = json.loads(path.read_text())
        if meta["view"] == meta["views_embedded"][0]:
            runs.append((path.parent.name, meta))
    return runs


def _cpu_peer_lines(results: dict, work: Path, peer_work: Path | None) -> list[str]:
    """chemprop trained on *this* CPU machine (``run --methods chemprop --work PEER``), beside our heads'
    CPU timings on the same sets: the same-machine throughput comparison."""
    if peer_work is None:
        return []
    peer = _load_results(peer_work)
    names = [n for n in peer if "chemprop" in peer[n] and n in results]
    if not names:
        return []
    lines = [
        "",
        "Same machine (this CPU, 1 thread per process): chemprop trained and predicted here too, on the same"
        " split files (`run --methods chemprop --work .carry/bench_cpu_cp`). Our heads' training starts from"
        " cached embeddings; encoding the set once from SMILES is listed as its own column.",
        "",
        "| data set | method | train mol/s | predict mol/s | encode mol/s (ours, once) | test metric |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        rows = [("chemprop (CPU)", peer[n]["chemprop"])] + [
            (m, results[n][m])
            for m in ("fused-mlp", "fused-xgb", "fused-experts", "fused-fmt")
            if m in results[n]
        ]
        enc = next((f"{m['rows'] / m['seconds']:.0f}" for d, m in _embedding_runs(work) if d == n), "—")
        for label, r in rows:
            tr, pr = _rates(r)
            metric = "roc_auc" if "roc_auc" in r["test"] else "rmse"
            lines.append(
                f"| {n} | {label} | {tr:.0f} | {pr:.0f} | {'—' if label.startswith('chemprop') else enc} |"
                f" {r['test'][metric]['mean']:.3f} |"
            )
    return lines


def write_report(work: Path, report: Path, machine_text: str, cpu_peer: Path | None = None) -> None:
    """Render every cached result into the markdown report."""
    results = _load_results(work)
    by_name = {n.split("_sub")[0]: n for n in results}
    cls = [by_name[n] for n in CLASSIFICATION if n in by_name]
    reg = [by_name[n] for n in REGRESSION if n in by_name]
    sparse = [by_name[n] for n in SPARSE if n in by_name]
    methods = [m for m in [*METHODS, "chemprop"] if any(m in results.get(n, {}) for n in cls + reg)]
    machines = sorted({r.get("machine", "?") for n in results for r in results[n].values() if "machine" in r})
    used = [r for n in results for r in results[n].values() if r.get("encoder_versions")]
    smiles_versions = sorted(
        {
            r["encoder_versions"]["smiles"]
            for r in used
            if r["method"].startswith(("fused", "smiles", "sparse"))
        }
    )
    graph_versions = sorted(
        {r["encoder_versions"]["graph"] for r in used if r["method"].startswith(("fused", "graph", "sparse"))}
    )
    versions = f"SMILES view {', '.join(smiles_versions)}; graph view {', '.join(graph_versions)}"
    lines = [
        "# Property heads benchmark",
        "",
        "Generated by `bench/heads_benchmark.py report` from the cached runs under `.carry/bench/results/`.",
        "",
        f"**Machine (this report):** {machine_text}. **Machines of the runs:** "
        + "; ".join(machines)
        + ". Heads and ECFP4 + XGBoost run on the CPU machine; chemprop ran on the GPU host"
        " (`STEPS=chemprop bash bench/run_gpu.sh`: CLI defaults on an H100, the 9 sets at once with 3"
        " seeds each in parallel, 27 processes sharing its 16 cores and the GPU).",
        f"**Encoders:** {versions}.",
        "",
        "**Protocol.** Bemis–Murcko scaffold split 80/10/10 (balanced, `fusion.splits.scaffold_split`), seeds"
        " 0, 1, 2 (each seed: its own split and initialisation); every method trains on the very same split"
        " files (`.carry/bench/splits/<set>.json`). Early stopping / model selection on validation only. Test"
        " metrics,"
        " mean ± std over seeds (population std); multi-task sets average the metric over tasks (tasks whose"
        " test split holds a single class are skipped for ROC-AUC). Heads use default hyper-parameters"
        " (`fusion/predictors/*.py`); chemprop 2.3.1 runs with its CLI defaults (D-MPNN, 50 epochs) in its"
        " own environment (its RDKit pin differs from ours) on the same split CSVs. Rows whose SMILES do"
        " not pass `models.chemistry.parse_smiles`"
        " are dropped for every method (Tox21 8 unparsable; HIV 7 unparsable + 5 over 200 atoms;"
        " SIDER 19 over 200 atoms + 8 over 1000 characters). HIV and QM9 are deterministic 5,000-molecule"
        " subsamples (numpy permutation, seed 0; `hiv_sub5000`, `qm9_sub5000`) because encoding all"
        " 41k / 131k molecules on this CPU did not fit the session.",
        "",
        "Methods: `fused-<head>` = both encoder views fused by `concat` (standardised), except `fused-xgb`"
        " which uses `concat_reduce` (PCA 128 on training rows; trees on 2,056 dense columns were too slow"
        " here); `fused-mlp-reduce` = `concat_reduce` (PCA 128); `fused-mlp-gated` = learned gate;"
        " `smiles-mlp` / `graph-mlp` = one view alone; `ecfp4-xgb` = Morgan radius 2, 2048 bits + XGBoost"
        " (same `xgb` head); `chemprop` = chemprop 2.x defaults. All `*-mlp*` methods use the compact MLP of"
        " the packaged default heads (one hidden layer of 64 units, dropout 0.2), so `fused-mlp` is exactly"
        " the served configuration; `fused-experts` (4 experts, 128 hidden) and `fused-fmt` use their"
        " defaults.",
        "",
        "## Classification (test ROC-AUC, higher is better)",
        "",
        *_table(results, cls, methods, "roc_auc", True),
        "",
        "## Regression (test RMSE, lower is better)",
        "",
        *_table(results, reg, methods, "rmse", False),
        "",
        "Test MAE:",
        "",
        *_table(results, reg, methods, "mae", False),
        "",
    ]
    if sparse:
        smethods = list(SPARSE_METHODS)
        lines += [
            "## Sparse multi-task (90% of each task's train/val labels removed)",
            "",
            "All three heads see the same input: the fused vector reduced by PCA to 256 dimensions fitted"
            " on training rows (`concat_reduce`). `sparse-single` = one independent MLP per task;"
            " `sparse-mlp` = one multi-task MLP with the masked loss; `sparse-fmt` = single-task heads'"
            " hidden representations concatenated, PCA (64) on training rows, multi-task MLP."
            " Tasks with < 10 remaining training labels (or one class) are left out for every method."
            " QM9's mean RMSE/MAE averages tasks in different units (dominated by large-valued ones such as"
            " r2 and alpha): read it as a ranking only. ToxCast keeps the tasks left with ≥ 10 training"
            " labels of both classes after the 90 % removal.",
            "",
        ]
        for metric, higher, title in (
            ("roc_auc", True, "ROC-AUC"),
            ("rmse", False, "RMSE"),
            ("mae", False, "MAE"),
        ):
            rows = [
                n
                for n in sparse
                if any(metric in r["test"] for r in results[n].values() if r["method"] in smethods)
            ]
            if rows:
                lines += [f"Test {title}:", "", *_table(results, rows, smethods, metric, higher, False), ""]
        notes = [
            f"- {n} `{m}`: {results[n][m]['note']}"
            for n in sparse
            for m in smethods
            if m in results[n] and results[n][m].get("note")
        ]
        lines += ["Notes on how these runs were made:", "", *notes, ""] if notes else []
    lines += [
        "## Throughput",
        "",
        "Training: molecules in the training split / wall seconds to train one seed (mean over seeds;"
        " heads start from cached embeddings, chemprop from SMILES, including its process start)."
        " Prediction: molecules / wall seconds over the whole set (heads: from cached embeddings; chemprop:"
        " from SMILES, process start included). Encoding cost is listed separately: predicting from SMILES"
        " with our heads is bounded by the encoders (tens of mol/s on this CPU), not by the heads.",
        "",
        "All sets, the machine each ran on (heads: this CPU; chemprop: the GPU host with 27 chemprop"
        " processes at once, so its per-process rates are not a same-machine comparison; see the next"
        " table for that):",
        "",
        "| data set | method | train mol/s | predict mol/s |",
        "|---|---|---|---|",
    ]
    for n in cls + reg:
        for m in ("fused-mlp", "fused-xgb", "fused-experts", "fused-fmt", "chemprop"):
            r = results.get(n, {}).get(m)
            if r is None:
                continue
            tr, pr = _rates(r)
            lines.append(f"| {n} | {m} | {tr:.0f} | {pr:.0f} |")
    lines += _cpu_peer_lines(results, work, cpu_peer)
    enc = _embedding_runs(work)
    if enc:
        lines += [
            "",
            "Encoding from SMILES on CPU (one process, 1 torch thread, parsing and featurisation included):",
            "",
            "| data set | view(s) embedded | encoder | molecules | mol/s |",
            "|---|---|---|---|---|",
        ]
        for name, meta in enc:
            lines.append(
                f"| {name} | {'+'.join(meta['views_embedded'])} | {meta['version']} |"
                f" {meta['rows']} | {meta['rows'] / meta['seconds']:.0f} |"
            )
    lines += ["## Summary (computed from the tables above)", ""]
    for title, names, metric, higher in (
        ("classification", cls, "roc_auc", True),
        ("regression", reg, "rmse", False),
    ):
        paired = [n for n in names if "chemprop" in results.get(n, {})]
        ref = _group_mean(results, paired, "chemprop", metric) if paired else None
        if ref is None:
            lines.append(f"- {title}: no chemprop run to compare with.")
            continue
        parts = []
        for m in ("fused-mlp",):
            v = _group_mean(results, paired, m, metric)
            if v is None:
                continue
            ok = v >= ref if higher else v <= ref
            parts.append(f"`{m}` {v:.3f} {'matches or beats' if ok else 'does NOT match'} chemprop {ref:.3f}")
        lines.append(f"- {title} ({metric}, mean over {', '.join(paired)}): " + "; ".join(parts) + ".")
    lines.append("")
    loads = [
        r["load_average_1m"]
        for n in results
        for r in results[n].values()
        if "load_average_1m" in r and r.get("machine") == machine_text
    ]
    if loads:
        lines += [
            "",
            f"Load average (1 min) on this shared 2-CPU machine when runs finished: median"
            f" {np.median(loads):.1f}, range {min(loads):.1f}–{max(loads):.1f} (other sessions' jobs ran"
            " concurrently), so absolute speeds are pessimistic and ratios are approximate.",
        ]
    lines += [
        "",
        "## Commands",
        "",
        "```bash",
        ".venv/bin/python bench/heads_benchmark.py splits",
        "OMP_NUM_THREADS=1 .venv/bin/python bench/heads_benchmark.py run --threads 1 \\",
        "    --methods " + ",".join(METHODS),
        "OMP_NUM_THREADS=1 .venv/bin/python bench/heads_benchmark.py sparse --threads 1 \\",
        "    --datasets tox21,qm9,toxcast",
        "# chemprop on the GPU host: split files and data sets carried under .carry/cp (bench/run_gpu.sh)",
        'WHEELS=.carry/cp/whl DATA=.carry/cp/data STEPS=chemprop bash bench/run_gpu.sh "$OUT"',
        "#   then unpack chemprop.tgz's results/<set>/chemprop.json into .carry/bench/results/",
        ".venv/bin/python bench/heads_benchmark.py report",
        "```",
    ]
    missing = [f"{n}: {m}" for n in cls + reg for m in methods if m not in results.get(n, {})]
    missing += [f"{n}: {m}" for n in sparse for m in SPARSE_METHODS if m not in results.get(n, {})]
    lines += ["", "## Not run", "", *(f"- {x}" for x in missing)] if missing else []
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    print(f"wrote {report}")


def machine() -> str:
    m = machine_info()
    return (
        f"{m['cpu']}, {m['cores']} logical CPUs, Python {m['python']}, "
        f"torch {m['torch']} (threads {m['torch_threads']}), {m['platform']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["splits", "embed", "run", "sparse", "report"])
    parser.add_argument("--datasets", default=",".join(CLASSIFICATION + REGRESSION))
    parser.add_argument("--methods", default=",".join([*METHODS, "chemprop"]))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MOLFUSION_DATA_DIR", REPO.parent / "shared" / "datasets")),
    )
    parser.add_argument("--work", type=Path, default=REPO / ".carry" / "bench")
    parser.add_argument(
        "--chemprop", type=Path, default=REPO / ".carry" / "chemprop-venv" / "bin" / "chemprop"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the heads")
    parser.add_argument("--force", action="store_true", help="re-run methods with cached results")
    parser.add_argument(
        "--chemprop-trained-only",
        action="store_true",
        help="chemprop: only predict with seeds already trained (report partial seeds)",
    )
    parser.add_argument("--chemprop-accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--chemprop-jobs", type=int, default=1, help="chemprop seeds run at once")
    parser.add_argument("--report", type=Path, default=REPO / "docs" / "bench_heads.md")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    names = [n for n in args.datasets.split(",") if n]
    if args.command == "report":
        peer = args.work.parent / "bench_cpu_cp"
        write_report(args.work, args.report, machine(), peer if peer.exists() else None)
        return
    for name in names:
        if name not in SPECS:
            raise SystemExit(f"unknown data set {name!r}; choose from {list(SPECS)}")
        ds = dataset(name, args.data_dir)
        parts = splits(args.work, ds)
        print(f"{ds.name}: {len(ds.smiles)} molecules, {len(ds.tasks)} task(s)", flush=True)
        if args.command == "splits":
            continue
        needs_encoders = args.command in ("embed", "sparse") or any(
            m in METHODS and METHODS[m][2] != ("ecfp4",) for m in args.methods.split(",")
        )
        views: dict[str, np.ndarray] = {}
        if needs_encoders:
            embedder = build_embedder()
            views = cached_views(ds, embedder, args.work / "embeddings")
        if args.command == "embed":
            continue
        methods = [m for m in args.methods.split(",") if m]
        if args.command == "sparse":
            methods = [m for m in methods if m in SPARSE_METHODS] or list(SPARSE_METHODS)
        for method in methods:
            out = result_path(args.work, ds, method)
            if out.exists() and not args.force:
                continue
            if method == "chemprop":
                result = run_chemprop(
                    ds,
                    parts,
                    args.work,
                    args.chemprop,
                    args.threads,
                    args.chemprop_trained_only,
                    args.chemprop_accelerator,
                    args.chemprop_jobs,
                )
            elif method in SPARSE_METHODS:
                result = run_sparse(ds, method, views, parts)
            elif method == "ecfp4-xgb":
                result = run_head_method(ds, method, {"ecfp4": ecfp4(ds.smiles)}, parts)
            elif method in METHODS:
                result = run_head_method(ds, method, views, parts)
            else:
                raise SystemExit(f"unknown method {method!r}")
            result["encoder_versions"] = embedder.versions if views else None
            result["machine"] = machine()
            result["load_average_1m"] = os.getloadavg()[0]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
