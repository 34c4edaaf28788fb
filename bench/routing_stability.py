"""How stable is the learned routing's group? Same input twice, and the catalog features perturbed.

For one target and each seed: route the target's training rows (scaffold split) against the catalog
twice with identical inputs, then once with every catalog feature multiplied by ``1 + noise·N(0, 1)``
(the size of bf16 rounding is ~4e-3), and print the three groups. This is done for each routed
configuration given with ``--routing`` (``NAME=KEY:VALUE;...`` of ``MolGroupConfig`` fields, as in
``bench/grouping_eval.py``), with the same perturbed features, and the overlap (Jaccard index) of the
groups is summarised: perturbed vs not, and between the seeds' groups. Catalog embeddings come from
(and go to) ``--cache`` like ``molfusion recommend``'s.

    python bench/routing_stability.py --target bace --exclude hiv,muv,qm8,qm9,aqsoldb --seeds 3 \\
        --routing molgroup --routing molgroup_ens=repeats:5 --cache runs/rec/cache
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
from bench.grouping_eval import parse_routing, routed  # noqa: E402
from bench.machine_info import machine_info  # noqa: E402
from fusion.training import scaffold_split  # noqa: E402
from grouping.catalog import load_catalog  # noqa: E402
from grouping.features import SetFeatures, load_catalog_features  # noqa: E402
from grouping.routing import MolGroupConfig, route  # noqa: E402


def routed_group(
    target: SetFeatures, candidates: dict[str, SetFeatures], seed: int, cfg: MolGroupConfig
) -> list[str]:
    return routed(route(target, candidates, dataclasses.replace(cfg, seed=seed)))


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
    parser.add_argument(
        "--routing",
        action="append",
        default=None,
        help="routed configuration NAME[=KEY:VALUE;...] (repeatable; default: molgroup)",
    )
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
    try:
        routings = {n: MolGroupConfig(**o) for n, o in map(parse_routing, args.routing or ["molgroup"])}
    except (TypeError, ValueError) as exc:
        parser.error(f"--routing: {exc}")
    noise_key = f"features_noise_{args.noise:g}"
    rows = []
    for seed in range(args.seeds):
        train, _val, _test = scaffold_split(target.smiles, seed)
        tr = target.subset(train)
        noisy_feats = perturbed(feats, args.noise, np.random.default_rng(1000 + seed))
        for name, cfg in routings.items():
            started = time.perf_counter()
            first = routed_group(tr, feats, seed, cfg)
            seconds = time.perf_counter() - started
            again = routed_group(tr, feats, seed, cfg)
            noisy = routed_group(tr, noisy_feats, seed, cfg)
            rows.append(
                {
                    "seed": seed,
                    "routing": name,
                    "group": first,
                    "same_input_again": again,
                    noise_key: noisy,
                    "jaccard_noise": jaccard(first, noisy),
                    "route_seconds": round(seconds, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    defaults = MolGroupConfig().to_json()
    for name, cfg in routings.items():
        mine = [row for row in rows if row["routing"] == name]
        across = [jaccard(a["group"], b["group"]) for a, b in itertools.combinations(mine, 2)]
        print(
            json.dumps(
                {
                    "routing": name,
                    "config": {k: v for k, v in cfg.to_json().items() if v != defaults[k]},
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
