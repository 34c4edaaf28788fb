"""How stable is the learned routing's group? Same input twice, and the catalog features perturbed.

For one target and each seed: route the target's training rows (scaffold split) against the catalog
twice with identical inputs, then once with every catalog feature multiplied by ``1 + noise·N(0, 1)``
(the size of bf16 rounding is ~4e-3), and print the three groups. This is done for each routing
``--repeats`` value (``MolGroupConfig.repeats``: runs whose gates are averaged), with the same perturbed
features, and the overlap (Jaccard index) of each pair of groups is summarised. Catalog embeddings come
from (and go to) ``--cache`` like ``molfusion recommend``'s.

    python bench/routing_stability.py --target bace --exclude hiv,muv,qm8,qm9,aqsoldb --seeds 3 \\
        --repeats 1,5 --cache runs/rec/cache
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.factory import build_embedder  # noqa: E402
from app.settings import get_settings  # noqa: E402
from bench.machine_info import machine_info  # noqa: E402
from fusion.training import scaffold_split  # noqa: E402
from grouping.catalog import load_catalog  # noqa: E402
from grouping.features import SetFeatures, load_catalog_features  # noqa: E402
from grouping.routing import MolGroupConfig, route  # noqa: E402


def routed_group(
    target: SetFeatures, candidates: dict[str, SetFeatures], seed: int, repeats: int
) -> list[str]:
    scores = route(target, candidates, MolGroupConfig(seed=seed, repeats=repeats))
    return [s.dataset for s in sorted(scores, key=lambda s: -s.score) if s.selected]


def jaccard(a: list[str], b: list[str]) -> float:
    """|A ∩ B| / |A ∪ B| (1 when both groups are empty)."""
    union = set(a) | set(b)
    return len(set(a) & set(b)) / len(union) if union else 1.0


def perturbed(feats: dict[str, SetFeatures], noise: float, rng: np.random.Generator) -> dict:
    """Every set with its fused features multiplied by ``1 + noise·N(0, 1)`` (the rest shared)."""
    return {
        name: dataclasses.replace(
            f, fused=(f.fused * (1 + noise * rng.standard_normal(f.fused.shape))).astype(np.float32)
        )
        for name, f in feats.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default="bace")
    parser.add_argument("--exclude", default="", help="catalog sets left out of the candidates")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", default="1", help="comma-separated MolGroupConfig.repeats to compare")
    parser.add_argument("--noise", type=float, default=1e-3)
    parser.add_argument("--max-rows", type=int, default=2000, help="catalog subsample (recommend's default)")
    parser.add_argument("--cache", type=Path, default=Path("runs/rec/cache"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skip = {s.strip() for s in args.exclude.split(",") if s.strip()}
    entries = [e for e in load_catalog() if e.name not in skip]
    feats = load_catalog_features(
        entries, get_settings().data_dir, build_embedder(), args.cache, args.max_rows
    )
    target = feats.pop(args.target)
    repeats = [int(r) for r in args.repeats.split(",")]
    noise_key = f"features_noise_{args.noise:g}"
    rows = []
    for seed in range(args.seeds):
        train, _val, _test = scaffold_split(target.smiles, seed)
        tr = target.subset(train)
        noisy_feats = perturbed(feats, args.noise, np.random.default_rng(1000 + seed))
        for r in repeats:
            started = time.perf_counter()
            first = routed_group(tr, feats, seed, r)
            seconds = time.perf_counter() - started
            again = routed_group(tr, feats, seed, r)
            noisy = routed_group(tr, noisy_feats, seed, r)
            rows.append(
                {
                    "seed": seed,
                    "repeats": r,
                    "group": first,
                    "same_input_again": again,
                    noise_key: noisy,
                    "jaccard_noise": jaccard(first, noisy),
                    "route_seconds": round(seconds, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    for r in repeats:
        mine = [row for row in rows if row["repeats"] == r]
        across = [jaccard(a["group"], b["group"]) for a, b in itertools.combinations(mine, 2)]
        print(
            json.dumps(
                {
                    "repeats": r,
                    "same_input_identical": sum(m["group"] == m["same_input_again"] for m in mine),
                    "noise_identical": sum(m["group"] == m[noise_key] for m in mine),
                    "noise_jaccard_mean": float(np.mean([m["jaccard_noise"] for m in mine])),
                    "across_seeds_jaccard_mean": float(np.mean(across)) if across else None,
                    "of": len(mine),
                    "route_seconds_mean": float(np.mean([m["route_seconds"] for m in mine])),
                }
            ),
            flush=True,
        )
    print(json.dumps({"machine": machine_info(), "target": args.target, "candidates": sorted(feats)}))


if __name__ == "__main__":
    main()
