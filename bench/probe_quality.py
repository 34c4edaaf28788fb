"""Linear-probe quality of the frozen encoders on MoleculeNet (classification ROC-AUC, regression RMSE).

For every data set and every representation, the same simple head is fitted on a Bemis–Murcko scaffold
split (80/10/10, ``fusion.splits.scaffold_split``) for each seed, its regularisation chosen on the
validation part only, and scored on the test part:

* classification: L2-regularised logistic regression per task, minimising
  ``mean_i BCE(x_i w + b, y_i) + lambda / 2 * ||w||^2`` over the labelled rows of that task, for
  ``lambda`` in ``LAMBDAS_LOGISTIC``; every (task, lambda) pair is an independent problem, so all of them
  are solved together by one full-batch L-BFGS run over a separable objective. Per task the lambda with the
  best validation ROC-AUC is kept. A data set's score is the mean test ROC-AUC over the tasks whose test
  part holds both classes (and whose training part does too).
* regression: ridge, ``min_w mean_i (x_i w + b - y_i)^2 + lambda ||w||^2`` solved in closed form through one
  eigendecomposition of the training Gram matrix for all ``lambda`` in ``LAMBDAS_RIDGE``; the lambda with
  the lowest validation RMSE is kept; test RMSE and MAE in the label's units.

Features are standardised with the training part's mean and standard deviation. Representations: the
SMILES view, the graph view and the fused view (their concatenation) of the shipped pretrained encoders,
the same three with the same architectures at random initialisation (seed 0), and ECFP4 (Morgan radius 2,
2048 bits; Rogers & Hahn, 2010). Heads use torch only, so the script runs unchanged on the GPU host (no
scikit-learn or pandas there) and on a CPU (use ``--limit`` for a quick subset run).

    python bench/probe_quality.py --data-dir ../shared/datasets --out-dir runs/probe [--limit 300]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fusion.datasets import SPECS  # noqa: E402
from fusion.splits import scaffold_split  # noqa: E402
from grouping.catalog import CatalogEntry, resolve_label_columns  # noqa: E402
from models.chemistry import parse_smiles  # noqa: E402
from models.embedder import (  # noqa: E402
    DEFAULT_GRAPH_ENCODER,
    DEFAULT_SMILES_ENCODER,
    Embedder,
    GraphView,
    SmilesView,
)
from models.graph_encoder import GraphEncoder  # noqa: E402
from models.smiles_encoder import MolFormerModel  # noqa: E402

log = logging.getLogger("probe_quality")

LAMBDAS_LOGISTIC = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
LAMBDAS_RIDGE = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
ECFP_BITS = 2048
REPRESENTATIONS = ("smiles", "graph", "fused", "smiles_random", "graph_random", "fused_random", "ecfp4")


# The nine MoleculeNet sets, described once in fusion.datasets (file, SMILES column, targets, task type).
PROBE_SETS = tuple(
    SPECS[name]
    for name in ("bbbp", "bace", "clintox", "sider", "tox21", "hiv", "esol", "freesolv", "lipophilicity")
)


def load_probe_set(
    data_dir: Path, spec: CatalogEntry, limit: int | None, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """Canonical SMILES and labels ``[N, T]`` (NaN = missing) of the rows that parse and carry a label."""
    with open(data_dir / spec.file, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        targets = resolve_label_columns(spec, list(columns))
        smiles, labels = [], []
        for row in reader:
            parsed = parse_smiles(row[spec.smiles_column])
            y = [float(row[t]) if row[t] not in ("", None) else math.nan for t in targets]
            if parsed.canonical is not None and not all(math.isnan(v) for v in y):
                smiles.append(parsed.canonical)
                labels.append(y)
    y = np.asarray(labels, dtype=np.float64)
    if limit is not None and len(smiles) > limit:
        keep = np.sort(np.random.default_rng(seed).permutation(len(smiles))[:limit])
        smiles, y = [smiles[i] for i in keep], y[keep]
    return smiles, y


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann–Whitney form: P(score of a positive > score of a negative), ties counted one half."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    i = 0
    while i < len(score):  # average ranks over ties
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ecfp4(smiles: list[str]) -> np.ndarray:
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=ECFP_BITS)
    return np.stack([gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(s)).astype(np.float32) for s in smiles])


def standardise(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    mean = x[train].mean(0)
    std = x[train].std(0)
    return (x - mean) / np.where(std > 1e-8, std, 1.0)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, lambdas: tuple[float, ...], iters: int = 200) -> tuple:
    """Weights ``[d, T, L]`` and biases ``[T, L]`` of every (task, lambda) logistic regression."""
    n, d = x.shape
    t = y.shape[1]
    lam = torch.tensor(lambdas, dtype=x.dtype, device=x.device)
    labelled = ~torch.isnan(y)
    target = torch.nan_to_num(y)
    counts = labelled.sum(0).clamp(min=1).to(x.dtype)  # [T]
    w = torch.zeros(d, t * len(lambdas), dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(t * len(lambdas), dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=iters,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    lam_cols = lam.repeat(t)  # column k = task k // L, lambda k % L
    mask_cols = labelled.repeat_interleave(len(lambdas), dim=1).to(x.dtype)
    target_cols = target.repeat_interleave(len(lambdas), dim=1)
    count_cols = counts.repeat_interleave(len(lambdas))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ w + b
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target_cols, reduction="none")
        loss = ((bce * mask_cols).sum(0) / count_cols + 0.5 * lam_cols * (w * w).sum(0)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().view(d, t, len(lambdas)), b.detach().view(t, len(lambdas))


def probe_classification(x: np.ndarray, y: np.ndarray, split, device: torch.device) -> tuple[float, float]:
    """``(test ROC-AUC, validation ROC-AUC)``, each the mean over tasks at the lambda chosen on validation."""
    train, val, test = split
    xs = standardise(x, train)
    xt = torch.tensor(xs, dtype=torch.float32, device=device)
    yt = torch.tensor(y[train], dtype=torch.float32, device=device)
    w, b = fit_logistic(xt[train], yt, LAMBDAS_LOGISTIC)
    scores = torch.einsum("nd,dtl->ntl", xt, w) + b  # [N, T, L]
    scores = scores.cpu().numpy()
    aucs, val_aucs = [], []
    for task in range(y.shape[1]):

        def auc(rows: np.ndarray, lam: int, task: int = task) -> float | None:
            yt = y[rows, task]
            ok = ~np.isnan(yt)
            if len(np.unique(yt[ok])) < 2:
                return None
            return roc_auc(yt[ok], scores[rows, task, lam][ok])

        train_labels = y[train, task][~np.isnan(y[train, task])]
        if len(np.unique(train_labels)) < 2 or auc(test, 0) is None:
            continue
        val_scores = [auc(val, lam) for lam in range(len(LAMBDAS_LOGISTIC))]
        best = int(np.argmax([s if s is not None else -1.0 for s in val_scores]))
        aucs.append(auc(test, best))
        if val_scores[best] is not None:
            val_aucs.append(val_scores[best])
    return (float(np.mean(aucs)) if aucs else math.nan, float(np.mean(val_aucs)) if val_aucs else math.nan)


def probe_regression(x: np.ndarray, y: np.ndarray, split, device: torch.device) -> tuple[float, float, float]:
    """``(test RMSE, test MAE, validation RMSE)`` at the lambda chosen on validation."""
    train, val, test = split
    xs = torch.tensor(standardise(x, train), dtype=torch.float64, device=device)
    target = torch.tensor(y[:, 0], dtype=torch.float64, device=device)
    x_mean, y_mean = xs[train].mean(0), target[train].mean()
    xc, yc = xs[train] - x_mean, target[train] - y_mean
    n = xc.shape[0]
    evals, evecs = torch.linalg.eigh(xc.T @ xc / n)
    proj = evecs.T @ (xc.T @ yc / n)
    best: tuple[float, torch.Tensor] | None = None
    for lam in LAMBDAS_RIDGE:
        w = evecs @ (proj / (evals + lam))
        pred = (xs - x_mean) @ w + y_mean
        val_rmse = float(torch.sqrt(torch.mean((pred[val] - target[val]) ** 2)))
        if best is None or val_rmse < best[0]:
            best = (val_rmse, pred)
    val_rmse, pred = best
    err = (pred[test] - target[test]).cpu().numpy()
    return float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err))), val_rmse


def random_init_embedder(device: str, batch_size: int) -> Embedder:
    """The shipped architectures (and tokenizer) with seed-0 random weights."""
    shipped = SmilesView.load(DEFAULT_SMILES_ENCODER)
    torch.manual_seed(0)
    smiles = SmilesView(MolFormerModel(shipped.model.config), shipped.tokenizer, "molformer-random")
    graph_config = GraphEncoder.load(DEFAULT_GRAPH_ENCODER).config
    torch.manual_seed(0)
    graph = GraphView(GraphEncoder(graph_config).eval(), "mhg-gin-random")
    return Embedder(smiles, graph, device=device, batch_size=batch_size)


def stereo_free(smiles: list[str]) -> list[str]:
    from rdkit import Chem

    return [Chem.MolToSmiles(Chem.MolFromSmiles(s), isomericSmiles=False) for s in smiles]


def representations(
    smiles: list[str], pretrained: Embedder, random: Embedder, smiles_input: str = "canonical",
    alt_graph: GraphView | None = None,
) -> dict[str, np.ndarray]:
    """All representations; ``smiles_input="stereo-free"`` feeds the SMILES view stereo-free SMILES
    (the form of the MOSES pretraining corpus) while the graph view still sees the molecule as given."""
    reps: dict[str, np.ndarray] = {}
    text = stereo_free(smiles) if smiles_input == "stereo-free" else smiles
    for prefix, embedder in (("", pretrained), ("_random", random)):
        reps[f"smiles{prefix}"] = embedder.embed(text, views=("smiles",)).vectors["smiles"].astype(np.float64)
        reps[f"graph{prefix}"] = embedder.embed(smiles, views=("graph",)).vectors["graph"].astype(np.float64)
    if alt_graph is not None:
        alt = Embedder(pretrained.smiles, alt_graph, device=str(pretrained.device),
                       batch_size=pretrained.batch_size)
        reps["graph_alt"] = alt.embed(smiles, views=("graph",)).vectors["graph"].astype(np.float64)
    reps["ecfp4"] = ecfp4(smiles).astype(np.float64)
    return reps


def with_fused(reps: dict[str, np.ndarray], train: np.ndarray) -> dict[str, np.ndarray]:
    """Fused = concatenation of the standardised SMILES and graph views (the alternative graph encoder
    is fused with the pretrained SMILES view)."""
    out = dict(reps)
    for suffix, smiles_view in (("", "smiles"), ("_random", "smiles_random"), ("_alt", "smiles")):
        if f"graph{suffix}" in reps:
            out[f"fused{suffix}"] = np.concatenate(
                [standardise(reps[smiles_view], train), standardise(reps[f"graph{suffix}"], train)], axis=1
            )
    return out


def markdown(results: dict, seeds: int, reps: tuple[str, ...] = REPRESENTATIONS,
             key: str = "scores") -> str:
    """The results table; ``key="val_scores"`` tabulates the validation scores instead of test."""
    header = "| data set | metric | " + " | ".join(reps) + " | fused / random | fused / ECFP4 |"
    lines = [header, "|" + "---|" * (len(reps) + 4)]
    for name, entry in results.items():
        metric = entry["metric"]
        cells = []
        for rep in reps:
            vals = np.asarray(entry[key][rep], dtype=np.float64)
            cells.append(f"{np.nanmean(vals):.3f} ± {np.nanstd(vals):.3f}")
        fused = np.nanmean(entry[key]["fused"])
        ratio_r = fused / np.nanmean(entry[key]["fused_random"])
        ratio_e = fused / np.nanmean(entry[key]["ecfp4"])
        lines.append(
            f"| {name} (n={entry['n']}) | {metric} | "
            + " | ".join(cells)
            + f" | {ratio_r:.3f} | {ratio_e:.3f} |"
        )
    cls = [e for e in results.values() if e["metric"] == "ROC-AUC"]
    if cls:
        cells = []
        for rep in reps:
            per_seed = np.nanmean(np.asarray([e[key][rep] for e in cls], dtype=np.float64), axis=0)
            cells.append(f"{per_seed.mean():.3f} ± {per_seed.std():.3f}")
        lines.append("| **mean of classification sets** | ROC-AUC | " + " | ".join(cells) + " | | |")
    part = "validation" if key == "val_scores" else "test"
    lines.append(
        f"\n{part} scores; {seeds} scaffold seeds; mean ± std over seeds. Ratios: fused score / peer score "
        "(ROC-AUC: higher is better; RMSE: lower is better)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--out-dir", type=Path, default=REPO / "runs" / "probe")
    parser.add_argument("--datasets", default=",".join(s.name for s in PROBE_SETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="at most this many molecules per data set")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--smiles-input", choices=("canonical", "stereo-free"), default="canonical",
                        help="what the SMILES view reads (the graph view always gets the canonical form)")
    parser.add_argument("--graph-encoder", type=Path, default=None,
                        help="graph encoder folder for the pretrained columns (default: the shipped one)")
    parser.add_argument("--alt-graph-encoder", type=Path, default=None,
                        help="a second graph encoder, probed as extra columns graph_alt and fused_alt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    wanted = [s for s in PROBE_SETS if s.name in args.datasets.split(",")]
    if not wanted:
        parser.error(f"--datasets: none of {args.datasets!r} is one of {[s.name for s in PROBE_SETS]}")
    pretrained = Embedder(graph_encoder=args.graph_encoder, device=args.device, batch_size=args.batch_size)
    random = random_init_embedder(args.device, args.batch_size)
    alt_graph = GraphView.load(args.alt_graph_encoder) if args.alt_graph_encoder else None
    reps_names = REPRESENTATIONS + (("graph_alt", "fused_alt") if alt_graph is not None else ())
    device = pretrained.device
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    started = time.perf_counter()
    results: dict = {}
    for spec in wanted:
        t0 = time.perf_counter()
        smiles, y = load_probe_set(args.data_dir, spec, args.limit)
        reps = representations(smiles, pretrained, random, args.smiles_input, alt_graph)
        embed_s = time.perf_counter() - t0
        scores: dict[str, list] = {rep: [] for rep in reps_names}
        val_scores: dict[str, list] = {rep: [] for rep in reps_names}
        maes: dict[str, list] = {rep: [] for rep in reps_names}
        for seed in range(args.seeds):
            split = scaffold_split(smiles, seed)
            all_reps = with_fused(reps, split[0])
            for rep in reps_names:
                if spec.task_type == "classification":
                    test_auc, val_auc = probe_classification(all_reps[rep], y, split, device)
                    scores[rep].append(test_auc)
                    val_scores[rep].append(val_auc)
                else:
                    rmse, mae, val_rmse = probe_regression(all_reps[rep], y, split, device)
                    scores[rep].append(rmse)
                    maes[rep].append(mae)
                    val_scores[rep].append(val_rmse)
        metric = "ROC-AUC" if spec.task_type == "classification" else "RMSE"
        results[spec.name] = {
            "metric": metric,
            "n": len(smiles),
            "tasks": int(y.shape[1]),
            "scores": scores,
            "val_scores": val_scores,
            "mae": maes if metric == "RMSE" else None,
            "embed_s": round(embed_s, 1),
            "total_s": round(time.perf_counter() - t0, 1),
        }
        log.info("%s: %s", spec.name, {r: round(float(np.mean(v)), 4) for r, v in scores.items()})
        log.info("%s validation: %s", spec.name,
                 {r: round(float(np.mean(v)), 4) for r, v in val_scores.items()})
    table = markdown(results, args.seeds, reps_names)
    val_table = markdown(results, args.seeds, reps_names, key="val_scores")
    info = {
        "machine": machine,
        "device": str(device),
        "versions": pretrained.versions,
        "alt_graph_version": alt_graph.version if alt_graph is not None else None,
        "seconds": round(time.perf_counter() - started, 1),
        "limit": args.limit,
        "seeds": args.seeds,
        "torch": torch.__version__,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "probe_results.json").write_text(json.dumps({"info": info, "results": results}, indent=2))
    (args.out_dir / "probe_table.md").write_text(table + "\n\n" + val_table + "\n")
    print(json.dumps(info))
    print(table)
    print(val_table)


if __name__ == "__main__":
    main()
