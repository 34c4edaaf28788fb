"""Do the recommended groups help when the graph encoder itself is trained? (#6 diagnostic)

`bench/grouping_eval.py` trains the served fused head on *frozen* embeddings, and there the auxiliary
sets add about nothing. MolGroup's published +4.41 % comes from a GIN trained on target + group. This
script re-uses the very groups that `grouping_eval.py` recorded (its result JSON: the routing's
`molgroup` group and the `structure` top-3 per target and seed), the same rows (the 1,000-row catalog
subsample, auxiliaries capped at 500 with seed 0), the same scaffold splits and the same removal of
auxiliary molecules found in the target's validation/test rows (`grouping.evidence.stack`), and trains
our GINE graph encoder (5 × 300, per-layer sum readout) + an MLP head end to end:

- ``--inits scratch``: random initialisation (MolGroup's setting);
- ``--inits pretrained``: our shipped graph checkpoint, fine-tuned.

Loss: masked multi-task BCE / MSE (regression labels standardised on the training rows), the target's
labels weight 1 and each auxiliary set ``aux_weight / |group|`` (`StackedTable.task_weights`, the share
`molfusion recommend` uses). Early stopping on the target's validation metric; test is reported at the
best validation epoch. Nothing is chosen on test.

    # CPU here: graphs, labels, splits' inputs and the recorded groups into one file to carry
    python bench/grouping_finetune.py prepare --catalog .carry/grp/data \\
        --groups bench/results/grouping_h100.json --out .carry/gft/data.pkl.gz
    # or the shipped routing (kappa = 1) of a later run, whose JSON is one file per target and seed range:
    python bench/grouping_finetune.py prepare --catalog .carry/grp/data --molgroup-key molgroup_prior1 \\
        --groups "$(ls bench/results/grouping_stereo_h200/*.json | paste -sd,)" --out .carry/gft/data.pkl.gz
    # GPU host: one process per target
    python bench/grouping_finetune.py run --data .carry/gft/data.pkl.gz --targets bbbp --out OUT/bbbp.json
    python bench/grouping_finetune.py report OUT/*.json
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fusion.loop import masked_task_loss  # noqa: E402
from fusion.metrics import evaluate  # noqa: E402
from fusion.splits import scaffold_split  # noqa: E402
from grouping.evidence import primary, relative_improvement, stack  # noqa: E402
from grouping.features import SetFeatures  # noqa: E402
from models.featurizer import PackedGraphs, collate_packed  # noqa: E402
from models.graph_encoder import CONFIG_FILE, GraphEncoder, GraphEncoderConfig  # noqa: E402

CONFIGS = ("none", "all", "structure", "molgroup")
GRAPH_CHECKPOINT = REPO / "models" / "checkpoints" / "graph"


# --- prepare (CPU) ---------------------------------------------------------------------------------
def prepare(catalog_dir: Path, groups_files: list[Path], out: Path, max_rows: int, molgroup_key: str) -> None:
    from grouping.catalog import load_catalog, load_dataset
    from models.chemistry import ParsePolicy
    from models.featurizer import featurize_packed

    sets = {}
    for entry in load_catalog():
        data = load_dataset(entry, catalog_dir, max_rows=max_rows, seed=0)
        canonical, errors, packed = featurize_packed(data.smiles, ParsePolicy())
        ok = np.array([e is None for e in errors], dtype=bool)
        keep = np.flatnonzero(ok)
        sets[entry.name] = {
            "smiles": [canonical[i] for i in keep],
            "labels": data.labels[ok],
            "task_types": list(data.task_types),
            "label_columns": list(data.label_columns),
            # the valid rows' graphs, in compact dtypes (feature indices < 256, local atom numbers)
            "graphs": PackedGraphs(
                packed.num_atoms,
                packed.num_edges,
                packed.x.astype(np.uint8),
                packed.edge_index.astype(np.int16),
                packed.edge_attr.astype(np.uint8),
            ),
        }
        print(f"{entry.name}: {len(keep)} molecules", flush=True)
    # one or several result files of grouping_eval (e.g. one per target and seed range); the routing
    # whose group is "molgroup" here is --molgroup-key (a routing name of grouping_eval --routing)
    recorded_files = [json.loads(f.read_text()) for f in groups_files]
    key = {c: c for c in CONFIGS} | {"molgroup": molgroup_key}
    groups: dict[str, dict[int, dict[str, list[str]]]] = {}
    for source, recorded in zip(groups_files, recorded_files, strict=True):
        for r in recorded["results"]:
            here = len(sets[r["target"]]["smiles"])
            if here != r["rows"]:
                raise SystemExit(f"{r['target']}: {here} rows here, {r['rows']} in {source}")
            for s in r["seeds"]:
                groups.setdefault(r["target"], {})[s["seed"]] = {c: s["groups"][key[c]] for c in CONFIGS}
    caps = {int(r["args"].get("max_aux_rows", 500)) for r in recorded_files}
    if len(caps) != 1:
        raise SystemExit(f"the group files used different auxiliary caps: {sorted(caps)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wb") as f:
        pickle.dump(
            {
                "sets": sets,
                "groups": groups,
                "source": ",".join(str(f) for f in groups_files) + f" (molgroup = {molgroup_key})",
                "max_aux_rows": caps.pop(),
            },
            f,
        )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


# --- run (GPU) -------------------------------------------------------------------------------------
def _features(name: str, s: dict, offset: int) -> SetFeatures:
    """A stand-in whose single 'view' is each row's global graph number, so `stack` keeps rows aligned."""
    n = len(s["smiles"])
    gid = (offset + np.arange(n, dtype=np.float64)).astype(np.float32)[:, None]
    return SetFeatures(
        name,
        s["smiles"],
        s["labels"],
        s["task_types"],
        s["label_columns"],
        np.concatenate([gid, gid], axis=1),
        np.zeros((n, 1), np.uint8),
        n,
        1,
    )


class GraphModel(nn.Module):
    def __init__(self, encoder: GraphEncoder, tasks: int, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(
            nn.LayerNorm(encoder.embedding_size),
            nn.Linear(encoder.embedding_size, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, tasks),
        )

    def forward(self, batch) -> torch.Tensor:
        return self.head(self.encoder.embed(batch))


def _batch(graphs: PackedGraphs, gids: np.ndarray, device: torch.device):
    b = collate_packed(graphs, gids).to_batch()
    return b.to(device)


def train_one(
    graphs: PackedGraphs,
    gid: np.ndarray,
    y: np.ndarray,
    task_types: list[str],
    weights: list[float],
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    n_target_tasks: int,
    target: dict,
    init: str,
    seed: int,
    device: torch.device,
    epochs: int,
    patience: int,
    batch_size: int,
) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if init == "pretrained":
        encoder = GraphEncoder.load(GRAPH_CHECKPOINT)
    else:  # the checkpoint's architecture, random weights
        encoder = GraphEncoder(GraphEncoderConfig.from_json((GRAPH_CHECKPOINT / CONFIG_FILE).read_text()))
    model = GraphModel(encoder, y.shape[1]).to(device)
    lr_encoder = 1e-3 if init == "scratch" else 3e-4
    opt = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": lr_encoder},
            {"params": model.head.parameters(), "lr": 1e-3},
        ],
        weight_decay=1e-5,
    )
    is_cls = torch.tensor([t == "classification" for t in task_types], device=device)
    reg = ~is_cls.cpu().numpy()
    mean = np.zeros(y.shape[1], np.float32)
    std = np.ones(y.shape[1], np.float32)
    for t in np.flatnonzero(reg):
        col = y[train, t]
        col = col[~np.isnan(col)]
        mean[t], std[t] = col.mean(), max(float(col.std()), 1e-6)
    ys = (y - mean) / std
    w = torch.tensor(weights, device=device)
    metric = primary(target["task_types"])

    def predict(rows: np.ndarray) -> np.ndarray:
        model.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(rows), 512):
                out.append(
                    model(_batch(graphs, gid[rows[s : s + 512]], device))[:, :n_target_tasks].float().cpu()
                )
        pred = torch.cat(out).numpy()
        t_reg = reg[:n_target_tasks]
        pred[:, t_reg] = pred[:, t_reg] * std[:n_target_tasks][t_reg] + mean[:n_target_tasks][t_reg]
        pred[:, ~t_reg] = 1 / (1 + np.exp(-pred[:, ~t_reg]))
        return pred

    def score(rows: np.ndarray) -> float | None:
        return evaluate(target["labels"][rows], predict(rows), target["task_types"], target["label_columns"])[
            "mean"
        ].get(metric)

    best, best_state, best_epoch, waited = None, None, 0, 0
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(train)
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            if len(rows) < 2:  # BatchNorm needs two graphs
                continue
            yb = torch.from_numpy(ys[rows]).to(device)
            mask = ~torch.isnan(yb)
            out = model(_batch(graphs, gid[rows], device))
            loss = masked_task_loss(out, torch.nan_to_num(yb), mask, is_cls, weights=w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        v = score(val)
        better = v is not None and (best is None or (v > best if metric == "roc_auc" else v < best))
        if better:
            best, best_epoch, waited = v, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {
        "val": best,
        "test": score(test),
        "best_epoch": best_epoch,
        "epochs_run": epoch + 1,
        "train_rows": int(len(train)),
    }


def run(
    data_file: Path,
    targets: list[str],
    seeds: list[int],
    inits: list[str],
    aux_weight: float,
    epochs: int,
    patience: int,
    batch_size: int,
    out: Path,
) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with gzip.open(data_file, "rb") as f:
        data = pickle.load(f)
    sets, groups_by_target, max_aux = data["sets"], data["groups"], data["max_aux_rows"]
    names = list(sets)
    offsets = np.cumsum([0] + [len(sets[n]["smiles"]) for n in names])[:-1]
    parts = [sets[n]["graphs"] for n in names]
    graphs = PackedGraphs(
        *(
            np.concatenate([getattr(p, f) for p in parts], axis=1 if f == "edge_index" else 0)
            for f in ("num_atoms", "num_edges", "x", "edge_index", "edge_attr")
        )
    )
    feats = {n: _features(n, sets[n], int(o)) for n, o in zip(names, offsets, strict=True)}
    results = []
    for name in targets:
        target = sets[name]
        metric = primary(target["task_types"])
        candidates = {k: v.capped(max_aux) for k, v in feats.items() if k != name}
        per_seed = []
        for seed in seeds:
            split = scaffold_split(target["smiles"], seed)
            train, val, test = (np.asarray(p) for p in split)
            exclude = {target["smiles"][i] for i in np.concatenate([val, test])}
            row = {"seed": seed, "groups": groups_by_target[name][seed], "val": {}, "test": {}, "detail": {}}
            for init in inits:
                for config in CONFIGS:
                    group = groups_by_target[name][seed][config]
                    table = stack(feats[name], [candidates[g] for g in group], exclude)
                    gid = table.views["smiles"][:, 0].astype(np.int64)
                    aux_rows = np.arange(table.n_target, len(table.y))
                    rows = np.concatenate([train, aux_rows])
                    weights = table.task_weights(train, aux_weight) if group else [1.0] * table.y.shape[1]
                    started = time.perf_counter()
                    r = train_one(
                        graphs,
                        gid,
                        table.y,
                        table.task_types,
                        weights,
                        rows,
                        val,
                        test,
                        len(target["task_types"]),
                        target,
                        init,
                        seed,
                        device,
                        epochs,
                        patience,
                        batch_size,
                    )
                    key = f"{init}:{config}"
                    row["val"][key], row["test"][key] = r["val"], r["test"]
                    row["detail"][key] = {
                        **r,
                        "seconds": round(time.perf_counter() - started, 1),
                        "aux_rows_removed": table.aux_rows_removed,
                    }
                    print(
                        f"{name} seed {seed} {key}: val {r['val']:.4f} test {r['test']:.4f} "
                        f"(epoch {r['best_epoch']}/{r['epochs_run']}, {time.perf_counter() - started:.0f} s)",
                        flush=True,
                    )
            per_seed.append(row)
            done = [*results, {"target": name, "metric": metric, "seeds": per_seed}]
            _write(out, done, device, inits, aux_weight, epochs, patience, batch_size, data["source"])
        results.append({"target": name, "metric": metric, "seeds": per_seed})


def _write(
    out: Path,
    results: list[dict],
    device: torch.device,
    inits: list[str],
    aux_weight: float,
    epochs: int,
    patience: int,
    batch_size: int,
    source: str,
) -> None:
    """After every seed: a run cut short by a time limit still leaves its finished seeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "results": results,
                "device": str(device),
                "inits": inits,
                "aux_weight": aux_weight,
                "epochs": epochs,
                "patience": patience,
                "batch_size": batch_size,
                "groups_from": source,
            },
            indent=2,
        )
    )


# --- report ----------------------------------------------------------------------------------------
def report(files: list[Path]) -> str:
    """Tables from one or more result files; seeds of the same target in different files are merged."""
    by_target: dict[str, dict] = {}
    inits: list[str] = []
    for f in files:
        doc = json.loads(f.read_text())
        inits = inits or doc["inits"]
        for r in doc["results"]:
            entry = by_target.setdefault(
                r["target"], {"target": r["target"], "metric": r["metric"], "seeds": {}}
            )
            entry["seeds"].update({s["seed"]: s for s in r["seeds"]})
    results = [{**r, "seeds": [r["seeds"][k] for k in sorted(r["seeds"])]} for r in by_target.values()]
    lines = []
    for part in ("val", "test"):
        for init in inits:
            cols = [f"{init}:{c}" for c in CONFIGS]
            lines += [
                f"\n{part}, init {init} (mean ± std over seeds; relative improvement over none)",
                "| target | metric | " + " | ".join(CONFIGS) + " |",
                "|---|---|" + "---|" * len(CONFIGS),
            ]
            avg = {c: [] for c in cols}
            for r in results:
                cells = []
                base = float(np.mean([s[part][cols[0]] for s in r["seeds"]]))
                for c in cols:
                    vals = np.array([s[part][c] for s in r["seeds"]], dtype=float)
                    rel = relative_improvement(float(vals.mean()), base, r["metric"])
                    avg[c].append(rel)
                    cells.append(
                        f"{vals.mean():.4f} ± {vals.std():.4f}" + ("" if c == cols[0] else f" ({rel:+.1%})")
                    )
                lines.append(f"| {r['target']} | {r['metric']} | " + " | ".join(cells) + " |")
            lines.append(
                "| **average relative improvement** | | "
                + " | ".join(f"**{np.mean(avg[c]):+.2%}**" for c in cols)
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--catalog", type=Path, required=True, help="the subsampled catalog folder")
    p.add_argument("--groups", default=str(REPO / "bench" / "results" / "grouping_h100.json"),
                   help="grouping_eval result JSON file(s), comma-separated")
    p.add_argument("--molgroup-key", default="molgroup",
                   help="the recorded routing taken as `molgroup` (molgroup_prior1: the shipped kappa = 1)")
    p.add_argument("--max-rows", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path(".carry/gft/data.pkl.gz"))
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, default=Path(".carry/gft/data.pkl.gz"))
    r.add_argument("--targets", required=True)
    r.add_argument("--seeds", default="0,1,2", help="comma-separated split/initialisation seeds")
    r.add_argument("--inits", default="scratch,pretrained")
    r.add_argument("--aux-weight", type=float, default=1.0)
    r.add_argument("--epochs", type=int, default=40)
    r.add_argument("--patience", type=int, default=8)
    r.add_argument("--batch-size", type=int, default=128)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("report")
    s.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    if args.cmd == "prepare":
        files = [Path(f) for f in args.groups.split(",") if f]
        prepare(args.catalog, files, args.out, args.max_rows, args.molgroup_key)
    elif args.cmd == "run":
        torch.set_num_threads(args.threads)
        run(
            args.data,
            [t.strip() for t in args.targets.split(",")],
            [int(x) for x in args.seeds.split(",")],
            [i.strip() for i in args.inits.split(",")],
            args.aux_weight,
            args.epochs,
            args.patience,
            args.batch_size,
            args.out,
        )
    else:
        print(report(args.files))


if __name__ == "__main__":
    main()
