"""Reproduce the packaged default heads in ``fusion/default_heads/<name>/``.

    .venv/bin/python -m fusion.train_defaults [--datasets bbbp,esol] [--data-dir DIR] [--cache DIR]

One head per MoleculeNet set (name = the set, lower case; tasks = its label columns), trained on the
default encoders' embeddings (``models/checkpoints``, cached as ``.npy`` under ``--cache`` and shared
with ``bench/heads_benchmark.py``): a compact multi-task MLP on the standardised concatenation of both
views (one hidden layer of 64 units, so the nine heads together stay a few MB), three seeds on
Bemis–Murcko scaffold splits, the seed with the best validation metric served; every seed's metrics
are in the card. HIV is trained on a deterministic 5,000-molecule subsample (stated in its card).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fusion.datasets import cached_views, load_dataset
from fusion.predictors.base import WEIGHTS_FILE
from fusion.registry import DEFAULT_HEADS_DIR
from fusion.training import seed_runs_card, train_seeds
from models.checkpoint import file_sha256

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SETS = ("bbbp", "bace", "clintox", "sider", "tox21", "hiv", "esol", "freesolv", "lipophilicity")
HEAD, FUSION = "mlp", "concat"
HPARAMS = {"hidden": 64, "layers": 1, "dropout": 0.2}
MAX_ROWS = {"hiv": 5000}
SEEDS = 3


def to_fp16(weights: Path) -> None:
    """Store a shipped head's network weights in float16 (the repo's weight budget); loading casts back
    to float32 (``load_state_dict`` copies into the float32 parameters)."""
    state = load_file(str(weights))
    save_file(
        {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}, str(weights)
    )


def train_default(name: str, data_dir: Path, cache: Path, out_root: Path, embedder) -> dict:
    ds = load_dataset(name, data_dir, max_rows=MAX_ROWS.get(name))
    views = cached_views(ds, embedder, cache)
    runs = train_seeds(
        views, ds.y, ds.smiles, ds.tasks, ds.task_types, HEAD, FUSION, "scaffold", SEEDS, HPARAMS
    )
    training_data = {
        "file": ds.spec.file,
        "sha256": file_sha256(data_dir / ds.spec.file),
        "smiles_column": ds.spec.smiles_column,
        "n_rows": ds.n_csv_rows,
        "n_invalid_smiles": ds.n_invalid,
        "n_usable": ds.n_usable,
        "n_used": len(ds.smiles),
    }
    if len(ds.smiles) < ds.n_usable:
        training_data["subsample"] = (
            f"{len(ds.smiles)} of {ds.n_usable} usable rows, numpy permutation seed 0"
        )
    card = seed_runs_card(
        runs,
        name=name,
        units=ds.units,
        encoder_versions=dict(embedder.versions),
        vector_versions=dict(embedder.vector_versions),
        training_data=training_data,
        split="scaffold",
    )
    card["reproduce"] = f"python -m fusion.train_defaults --datasets {name}"
    runs.models[runs.selected_seed].save(out_root / name, card)
    to_fp16(out_root / name / WEIGHTS_FILE)
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the packaged default heads.")
    parser.add_argument("--datasets", default=",".join(DEFAULT_SETS))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MOLFUSION_DATA_DIR", REPO.parent / "shared" / "datasets")),
    )
    parser.add_argument("--cache", type=Path, default=REPO / ".carry" / "bench" / "embeddings")
    parser.add_argument("--out", type=Path, default=DEFAULT_HEADS_DIR)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from models.embedder import Embedder

    embedder = Embedder(device="cpu", batch_size=128, featurize_workers=1)
    for name in [n for n in args.datasets.split(",") if n]:
        card = train_default(name, args.data_dir, args.cache, args.out, embedder)
        test = card["metrics"]["test"]
        metric = card["primary_metric"]
        print(
            f"{name}: test {metric} {test['mean'][metric]:.3f} ± {test['std'][metric]:.3f}, "
            f"seed {card['selected_seed']} served",
            flush=True,
        )


if __name__ == "__main__":
    main()
