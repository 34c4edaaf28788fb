"""Benchmark of auxiliary-data grouping: does training with the recommended group beat the target alone?

For each target set of the catalog (the target itself removed from its candidates), for each seed
(a Bemis–Murcko scaffold split 80/10/10 and the head's initialisation): the same fused head
(``fusion.training.fit_head``, head ``mlp``, fusion ``concat``) is trained on

- ``none``: the target's training rows alone;
- ``all``: + every other catalog set;
- ``structure``: + the 3 sets with the highest nearest-neighbour ECFP4 Tanimoto similarity to the
  target's training molecules;
- ``molgroup``: + the group recommended by :func:`grouping.routing.route`, which sees only the
  target's training rows;
- further routed configurations named by ``--routing NAME=KEY:VALUE;...`` (``MolGroupConfig`` fields),
  e.g. ``molgroup_ens=repeats:5`` (the routing repeated with 5 seeds, gates averaged) or
  ``molgroup_prior=structure_prior:0.5`` (a fingerprint-similarity prior on the gate);
- ``molgroup_checked``: ``molgroup``'s group if its *validation* metric beats ``none``'s for that seed,
  else no group (model selection on validation, never on test); ``structure_checked`` and every
  routed configuration's ``*_checked`` likewise;
- with ``--nested-check``, ``*_nested``: the group if it beats ``none`` on an inner scaffold split of the
  training rows (80 / 20), so that the validation rows stay unseen by the check and can judge the rule.

With ``--model-seeds K`` every configuration is trained with K model seeds on each split (the split's
seed, then + 1000, + 2000, ...) and its validation and test metrics are the means over them; the checks
then compare mean validation metrics, which is what ``molfusion recommend``'s evidence does
(``MOLFUSION_RECOMMEND_EVIDENCE_SEEDS``, default 3). K = 1 (the default) is the earlier protocol.

With ``--aux-weights`` and ``--transfers`` every group configuration is trained in each (loss share,
transfer scheme) setting, and each configuration's setting is chosen on the mean validation improvement.

Every head is early-stopped on the target's validation rows, and the test metric (ROC-AUC mean over
tasks, or RMSE) is reported on the target's tasks only. Auxiliary rows whose canonical SMILES occur in
the target's validation or test rows are removed before training (counted in the output), so
near-duplicate sets (Tox21/ToxCast, CYP1A2/CYP2C19, AqSolDB/ESOL) cannot leak test labels; the table
also marks when a selected set is a documented near-duplicate of the target.

All sets (targets included) are subsampled deterministically (seed 0) to ``--max-rows`` molecules so
the embeddings fit the CPU time; embeddings are cached under ``--cache``. With ``--aux-catalog`` /
``--aux-read-rows`` the candidates are read from their own folder and row cap (targets keep
``--catalog`` and ``--max-rows``): e.g. the targets' 1,000-row protocol with candidates of up to
2,000 rows, as ``molfusion recommend`` reads them (``MOLFUSION_RECOMMEND_MAX_AUX_ROWS``).

    python bench/grouping_eval.py --targets bbbp,bace,clintox,esol,freesolv,lipophilicity,pampa,ppbr \\
        --seeds 3 --max-rows 1000 --max-aux-rows 500 --threads 1 --out .carry/grouping_eval.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO))

from app.factory import build_embedder  # noqa: E402
from app.settings import get_settings  # noqa: E402
from bench.machine_info import machine_info  # noqa: E402
from fusion.training import scaffold_split  # noqa: E402
from grouping.catalog import load_catalog  # noqa: E402
from grouping.evidence import TRANSFERS, fit_and_score, primary, relative_improvement  # noqa: E402
from grouping.features import load_catalog_features  # noqa: E402
from grouping.recommend import passes_check  # noqa: E402
from grouping.routing import MolGroupConfig, route  # noqa: E402
from grouping.similarity import nearest_neighbour_tanimoto  # noqa: E402

DEFAULT_ROUTINGS = ("molgroup",)
# the configurations of result files written before they were listed in each result ("configs")
LEGACY_CONFIGS = (
    "none",
    "all",
    "structure",
    "molgroup",
    "molgroup_checked",
    "structure_checked",
    "molgroup_ens",
    "molgroup_ens_checked",
)


CHECK_SUFFIXES = ("_checked", "_nested")


def configurations(routed: list[str], nested: bool = False) -> list[str]:
    """Result columns before (loss share, transfer) variants: ``none``, ``all``, ``structure`` and its
    checked (and with ``nested``, nested-checked) variant, then each routed configuration and its."""
    suffixes = CHECK_SUFFIXES if nested else CHECK_SUFFIXES[:1]
    return ["none", "all"] + [c for r in ("structure", *routed) for c in (r, *(r + x for x in suffixes))]


def inner_split(smiles: list[str], train: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A scaffold split of the training rows (80 / 20) for a check that never sees the validation rows."""
    inner_train, inner_val, rest = scaffold_split([smiles[i] for i in train], seed, (0.8, 0.2, 0.0))
    return train[inner_train], np.sort(train[np.concatenate([inner_val, rest])])


def parse_routing(text: str) -> tuple[str, dict]:
    """``NAME`` or ``NAME=KEY:VALUE;KEY:VALUE`` -> (name, ``MolGroupConfig`` overrides), values typed by
    the field's default (``molgroup_ens=repeats:5``)."""
    name, _, spec = text.partition("=")
    name = name.strip()
    if not name.replace("_", "").isalnum() or name.endswith(CHECK_SUFFIXES):
        raise ValueError(f"routing name {name!r}: letters, digits and '_', not ending in {CHECK_SUFFIXES}")
    defaults = MolGroupConfig().to_json()
    overrides: dict = {}
    for item in filter(None, (i.strip() for i in spec.split(";"))):
        key, sep, value = item.partition(":")
        if not sep or key not in defaults or key == "seed":
            raise ValueError(f"routing {name!r}: {item!r} is not KEY:VALUE with KEY a MolGroupConfig field")
        overrides[key] = type(defaults[key])(value)
    return name, overrides


DEFAULT_TARGETS = "bbbp,bace,clintox,esol,freesolv,lipophilicity,pampa,ppbr"


def _gain(value: float | None, baseline: float | None, metric: str) -> float | None:
    return None if value is None or baseline is None else relative_improvement(value, baseline, metric)


MODEL_SEED_STRIDE = 1000  # model seeds of one split: seed, seed + 1000, ... (k = 0 is the 1-seed protocol)


def fit_model_seeds(
    target,
    group: list,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    seed: int,
    model_seeds: int,
    **kw,
) -> dict:
    """:func:`fit_and_score` with ``model_seeds`` model seeds on one split; the val and test metrics are
    their means (``None`` where no seed scored), the other fields those of the first seed."""
    fits = [
        fit_and_score(target, group, train, val, test, seed=seed + MODEL_SEED_STRIDE * k, **kw)
        for k in range(model_seeds)
    ]
    out = dict(fits[0])
    if model_seeds > 1:
        for part in ("val", "test"):
            out[part] = {m: _mean_scored([f[part].get(m) for f in fits]) for m in fits[0][part]}
    return out


def _mean_scored(values: list[float | None]) -> float | None:
    arr = np.array([_num(v) for v in values], dtype=float)
    return None if np.isnan(arr).all() else float(np.nanmean(arr))


class _CachedOnly:
    """Stands in for the embedder when every feature must come from the cache of given vector versions
    (``Embedder.vector_versions``)."""

    device = "cpu (features from cache)"

    def __init__(self, versions: dict[str, str]) -> None:
        self.versions = self.vector_versions = versions

    def embed(self, smiles, views=()):
        raise RuntimeError(f"catalog features for encoders {self.versions} are not in the cache")


def _num(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def inner_gains(
    target,
    groups: dict[str, list],
    inner: tuple[np.ndarray, np.ndarray],
    held_out: np.ndarray,
    alone: float,
    fit,
) -> dict[str, float | None]:
    """Each group's relative gain over target alone (validation metric ``alone``) on ``inner``, a scaffold
    split of the training rows (:func:`inner_split`; ``None`` for an empty group), so that a check on it
    leaves the split's validation rows unseen and free to judge the rule. ``groups`` maps a
    configuration to its candidate sets; ``fit(group, train, val, held_out)`` trains and scores (auxiliary
    rows found in ``held_out``, the validation and test rows, are still removed). The routing itself saw
    every training row; the fingerprint top-3 sees no labels."""
    metric = primary(target.task_types)
    scored: dict[tuple[str, ...], float] = {}  # configurations often share a group: train it once
    gains: dict[str, float | None] = {}
    for config, group in groups.items():
        key = tuple(g.name for g in group)
        if key and key not in scored:
            scored[key] = _num(fit(group, *inner, held_out)["val"][metric])
        grouped = scored.get(key, np.nan)
        bad = np.isnan(alone) or np.isnan(grouped)
        gains[config] = None if bad else relative_improvement(grouped, alone, metric)
    return gains


def evaluate_target(
    name: str,
    feats: dict,
    entries: dict,
    seeds: int,
    hparams: dict,
    routings: dict[str, MolGroupConfig],
    log: logging.Logger,
    max_aux_rows: int | None = None,
    aux_weights: tuple[float | None, ...] = (None,),
    transfers: tuple[str, ...] = ("joint",),
    first_seed: int = 0,
    aux_feats: dict | None = None,
    model_seeds: int = 1,
    nested: bool = False,
) -> dict:
    """``aux_feats``: the candidates' features when read apart from the targets' (default ``feats``).
    ``nested``: also the ``*_nested`` columns, groups checked on an inner split of the training rows."""
    target = feats[name]
    pool = feats if aux_feats is None else aux_feats
    candidates = {k: v.capped(max_aux_rows) for k, v in pool.items() if k != name}
    metric = primary(target.task_types)
    configs = configurations(list(routings), nested)
    per_seed: list[dict] = []
    for seed in range(first_seed, first_seed + seeds):
        train, val, test = scaffold_split(target.smiles, seed)
        tr = target.subset(train)
        sims = {
            k: nearest_neighbour_tanimoto(tr.fingerprints, c.fingerprints) for k, c in candidates.items()
        }
        scores: dict[str, list] = {}
        seconds: dict[str, float] = {}
        for rname, rcfg in routings.items():
            started = time.perf_counter()
            scores[rname] = route(tr, candidates, replace(rcfg, seed=seed), similarity=sims)
            seconds[rname] = time.perf_counter() - started
        groups = {
            "none": [],
            "all": sorted(candidates),
            "structure": sorted(sims, key=lambda k: -sims[k])[:3],
            **{rname: routed(sc) for rname, sc in scores.items()},
        }
        runs: dict[str, dict] = {
            "none": fit_model_seeds(target, [], train, val, test, seed, model_seeds, **hparams)
        }
        gains: dict[str, float | None] = {}
        if nested:  # the inner split and its target-alone head serve every (loss share, transfer) setting
            inner = inner_split(target.smiles, train, seed)
            held_out = np.concatenate([val, test])
            inner_alone = fit_model_seeds(target, [], *inner, held_out, seed, model_seeds, **hparams)
            alone = _num(inner_alone["val"][metric])
        for weight, transfer in weight_transfer_pairs(aux_weights, transfers):
            for config in ("all", "structure", *routings):
                col = variant(config, weight, transfer)
                if not groups[config]:
                    runs[col] = runs["none"]
                    continue
                runs[col] = fit_model_seeds(
                    target,
                    [candidates[g] for g in groups[config]],
                    train,
                    val,
                    test,
                    seed,
                    model_seeds,
                    aux_weight=weight,
                    transfer=transfer,
                    **hparams,
                )
            for config in ("structure", *routings):  # the group if it beats none on validation
                checked = variant(config, weight, transfer)
                if not passes_check(_gain(runs[checked]["val"][metric], runs["none"]["val"][metric], metric)):
                    checked = "none"  # the product's rule (grouping.recommend.apply_validation_check)
                col = variant(f"{config}_checked", weight, transfer)
                runs[col] = runs[checked]
                groups[col] = groups[config if checked != "none" else "none"]
            if nested:
                fit = partial(
                    fit_model_seeds,
                    target,
                    seed=seed,
                    model_seeds=model_seeds,
                    aux_weight=weight,
                    transfer=transfer,
                    **hparams,
                )
                checked_sets = {c: [candidates[g] for g in groups[c]] for c in ("structure", *routings)}
                for config, gain in inner_gains(target, checked_sets, inner, held_out, alone, fit).items():
                    col = variant(f"{config}_nested", weight, transfer)
                    keep = passes_check(gain)
                    gains[col] = gain
                    runs[col] = runs[variant(config, weight, transfer)] if keep else runs["none"]
                    groups[col] = groups[config] if keep else []
        columns = variants(aux_weights, transfers, configs)
        first = next(iter(routings))
        row = {
            "seed": seed,
            "route_seconds": seconds[first],
            "routing_seconds": seconds,
            "groups": groups,
            **({"inner_gains": gains} if nested else {}),
            "scores": {s.dataset: round(s.score, 4) for s in scores[first]},
            "routing_scores": {
                rname: {s.dataset: [round(s.score, 4), s.votes] for s in sc} for rname, sc in scores.items()
            },
            "val": {c: _num(runs[c]["val"][metric]) for c in columns},
            "test": {c: _num(runs[c]["test"][metric]) for c in columns},
            "aux_rows_removed_all": runs[variant("all", aux_weights[0], transfers[0])]["aux_rows_removed"],
            "finetune_best_epoch": {
                c: epoch for c in columns if (epoch := runs[c].get("finetune_best_epoch")) is not None
            },
        }
        per_seed.append(row)
        log.info(
            "seed done",
            extra={
                "target": name,
                "seed": seed,
                "test": row["test"],
                "groups": groups,
                "routing_seconds": {k: round(v, 1) for k, v in seconds.items()},
            },
        )
        print(
            f"  {name} seed {seed}: "
            + ", ".join(f"{c}={row['test'][c]:.4f}" for c in columns)
            + "".join(f" | {k}={groups[k]} ({seconds[k]:.0f} s)" for k in routings)
            + f" | structure={groups['structure']}",
            flush=True,
        )
    summary = summarise_seeds(per_seed, variants(aux_weights, transfers, configs), metric)
    overlaps = set(entries[name].overlaps)
    near_dup = sorted(
        {g for r in per_seed for c in ("structure", *routings) for g in r["groups"][c]} & overlaps
    )
    return {
        "target": name,
        "metric": metric,
        "rows": len(target),
        "rows_total": target.total_rows,
        "tasks": len(target.task_types),
        "summary": summary,
        "seeds": per_seed,
        "near_duplicates_selected": near_dup,
        "configs": configs,
        "model_seeds": model_seeds,
        "routings": {k: v.to_json() for k, v in routings.items()},
        "route_seconds_mean": float(np.mean([r["route_seconds"] for r in per_seed])),
    }


def routed(scores: list) -> list[str]:
    """The routing's group, best first."""
    return [s.dataset for s in sorted(scores, key=lambda s: -s.score) if s.selected]


def summarise_seeds(per_seed: list[dict], columns: list[str], metric: str) -> dict:
    """Per column and part (test, val): mean, population std over the seeds, and the relative improvement
    of the mean over ``none``'s mean."""
    summary: dict[str, dict] = {}
    for c in columns:
        summary[c] = {}
        for part in ("test", "val"):
            vals = np.array([r[part][c] for r in per_seed], dtype=float)
            base = np.array([r[part]["none"] for r in per_seed], dtype=float)
            summary[c][part] = {
                "mean": float(np.nanmean(vals)),
                "std": float(np.nanstd(vals)),
                "relative_improvement": relative_improvement(
                    float(np.nanmean(vals)), float(np.nanmean(base)), metric
                ),
            }
    return summary


def merge_results(results: list[dict]) -> list[dict]:
    """One result per target: runs of the same target over different seeds (``--first-seed``) are joined
    and summarised again over all their seeds (a seed run twice is an error)."""
    merged: dict[str, dict] = {}
    for r in results:
        if r["target"] not in merged:
            merged[r["target"]] = {**r, "seeds": list(r["seeds"])}
            continue
        m = merged[r["target"]]
        if m.get("model_seeds", 1) != r.get("model_seeds", 1):
            raise ValueError(f"{r['target']}: results with different --model-seeds cannot be merged")
        seen = {s["seed"] for s in m["seeds"]}
        again = sorted(seen & {s["seed"] for s in r["seeds"]})
        if again:
            raise ValueError(f"{r['target']}: seed(s) {again} appear in more than one result file")
        m["seeds"] += r["seeds"]
        m["near_duplicates_selected"] = sorted(
            set(m["near_duplicates_selected"]) | set(r["near_duplicates_selected"])
        )
    for m in merged.values():
        m["seeds"].sort(key=lambda s: s["seed"])
        m["summary"] = summarise_seeds(m["seeds"], list(m["summary"]), m["metric"])
        m["route_seconds_mean"] = float(np.mean([s["route_seconds"] for s in m["seeds"]]))
    return list(merged.values())


TRANSFER_SUFFIX = {"joint": "", "finetune": "+ft", "stack": "+stack"}


def variant(config: str, weight: float | None, transfer: str = "joint") -> str:
    """Result column of a group configuration trained with auxiliary loss share ``weight`` and the
    ``transfer`` scheme (``grouping.evidence``; ``+ft`` marks ``finetune``, ``+stack`` ``stack``)."""
    if config == "none":
        return config
    name = config if weight is None else f"{config}@{weight:g}"
    return name + TRANSFER_SUFFIX[transfer]


def weight_transfer_pairs(
    weights: tuple[float | None, ...], transfers: tuple[str, ...]
) -> list[tuple[float | None, str]]:
    return [(w, t) for t in transfers for w in weights]


def variants(
    weights: tuple[float | None, ...], transfers: tuple[str, ...], configs: list[str] | tuple[str, ...]
) -> list[str]:
    pairs = weight_transfer_pairs(weights, transfers)
    return ["none"] + [variant(c, w, t) for w, t in pairs for c in configs if c != "none"]


def result_configs(results: list[dict]) -> list[str]:
    """The configurations every result has (those of files written before results listed them are
    :data:`LEGACY_CONFIGS` whose columns are present)."""
    per_result = [r.get("configs") or [c for c in LEGACY_CONFIGS if _has_config(r, c)] for r in results]
    return [c for c in per_result[0] if all(c in p for p in per_result)]


def _has_config(result: dict, config: str) -> bool:
    return config == "none" or any(
        col == config or col.startswith(f"{config}@") or col.startswith(f"{config}+")
        for col in result["summary"]
    )


def choose_on_validation(
    results: list[dict], weights: tuple[float | None, ...], transfers: tuple[str, ...] = ("joint",)
) -> dict[str, str]:
    """Per configuration, the (auxiliary weight, transfer) setting with the best mean *validation*
    relative improvement over target alone across all targets (test numbers are never looked at)."""
    chosen = {}
    for config in result_configs(results)[1:]:
        options = [variant(config, w, t) for w, t in weight_transfer_pairs(weights, transfers)]
        chosen[config] = max(
            options,
            key=lambda v: np.mean([r["summary"][v]["val"]["relative_improvement"] for r in results]),
        )
    return chosen


def first_routed(results: list[dict]) -> str | None:
    """The first routed configuration of the results (its group is the table's last column)."""
    fixed = {"none", "all", "structure"}
    return next(
        (c for c in result_configs(results) if c not in fixed and not c.endswith(CHECK_SUFFIXES)), None
    )


def markdown(results: list[dict], columns: list[str], part: str = "test") -> str:
    routed_config = first_routed(results)
    lines = [
        "| target | metric | " + " | ".join(columns) + f" | {routed_config or 'routed'} group (per seed) |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for r in results:
        cells = []
        for c in columns:
            cell = r["summary"][c][part]
            text = f"{cell['mean']:.4f} ± {cell['std']:.4f}"
            cells.append(text if c == "none" else f"{text} ({100 * cell['relative_improvement']:+.1f}%)")
        groups = "; ".join(
            (",".join(s["groups"][routed_config]) if routed_config else "") or "—" for s in r["seeds"]
        )
        dup = (
            f" (near-dup: {','.join(r['near_duplicates_selected'])})"
            if r["near_duplicates_selected"]
            else ""
        )
        lines.append(f"| {r['target']} | {r['metric']} | " + " | ".join(cells) + f" | {groups}{dup} |")
    avg = {
        c: float(np.mean([r["summary"][c][part]["relative_improvement"] for r in results])) for c in columns
    }
    lines.append(
        "| **average relative improvement** | | "
        + " | ".join(f"**{100 * avg[c]:+.2f}%**" for c in columns)
        + " | |"
    )
    return "\n".join(lines)


def bootstrap_interval(
    results: list[dict], column: str, part: str = "test", draws: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """95 % bootstrap interval of the average relative improvement of ``column`` over ``none``: each
    draw resamples every target's seeds with replacement (paired: the same seeds for both columns)."""
    rng = np.random.default_rng(seed)
    averages = np.empty(draws)
    for d in range(draws):
        gains = []
        for r in results:
            picks = rng.integers(0, len(r["seeds"]), len(r["seeds"]))
            value = np.nanmean([r["seeds"][i][part][column] for i in picks])
            base = np.nanmean([r["seeds"][i][part]["none"] for i in picks])
            gains.append(relative_improvement(float(value), float(base), r["metric"]))
        averages[d] = np.mean(gains)
    low, high = np.percentile(averages, [2.5, 97.5])
    return float(low), float(high)


def report(
    results: list[dict], weights: tuple[float | None, ...], transfers: tuple[str, ...] = ("joint",)
) -> str:
    """Validation table of every variant, the settings chosen on it, the chosen variants' test table and
    their bootstrap intervals."""
    chosen = choose_on_validation(results, weights, transfers)
    intervals = {c: bootstrap_interval(results, c) for c in chosen.values()}
    return "\n\n".join(
        [
            "validation (selection):\n"
            + markdown(results, variants(weights, transfers, result_configs(results)), "val"),
            "chosen on validation: " + ", ".join(f"{k} -> {v}" for k, v in chosen.items()),
            "test (chosen variants):\n" + markdown(results, ["none", *chosen.values()], "test"),
            "test average, 95 % bootstrap interval (seeds resampled within each target, 4,000 draws): "
            + ", ".join(f"{c} [{100 * lo:+.2f}, {100 * hi:+.2f}] %" for c, (lo, hi) in intervals.items()),
        ]
    )


def export_subsample(entries: list, catalog_dir: Path, out: Path, max_rows: int | None) -> None:
    """Write each set's ``max_rows`` subsample (seed 0, as :func:`grouping.catalog.load_dataset` draws it)
    to ``out`` under the catalog's own relative path, with its SMILES and label columns (and the row
    filter's column), so ``--catalog out`` sees exactly the same molecules and labels."""
    import pandas as pd

    from grouping.catalog import load_dataset

    for entry in entries:
        data = load_dataset(entry, catalog_dir, max_rows=max_rows)
        frame = pd.DataFrame(data.labels, columns=data.label_columns)
        frame.insert(0, entry.smiles_column, data.smiles)
        if entry.row_filter is not None:
            frame[entry.row_filter.column] = entry.row_filter.equals
        path = entry.path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        print(f"{entry.name}: {len(frame)} of {data.total_rows} rows -> {path}")


def _weights(text: str) -> tuple[float | None, ...]:
    return tuple(None if w.strip() in ("", "none") else float(w) for w in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default=DEFAULT_TARGETS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds run first..first+seeds-1 (split runs, then --merge)"
    )
    parser.add_argument("--max-rows", type=int, default=1000, help="rows per set (targets and cache)")
    parser.add_argument("--max-aux-rows", type=int, default=500, help="rows per auxiliary set (subsample)")
    parser.add_argument(
        "--model-seeds",
        type=int,
        default=1,
        help="model seeds per split whose metrics are averaged; checks compare the mean validation metric",
    )
    parser.add_argument(
        "--nested-check",
        action="store_true",
        help="also *_nested columns: groups checked on an inner scaffold split of the training rows",
    )
    parser.add_argument(
        "--aux-catalog",
        type=Path,
        default=None,
        help="data folder the candidates are read from (default --catalog)",
    )
    parser.add_argument(
        "--aux-read-rows",
        type=int,
        default=None,
        help="rows read per candidate set (seed-0 subsample, cached; default --max-rows), then capped "
        "by --max-aux-rows",
    )
    parser.add_argument(
        "--catalog", type=Path, default=None, help="data folder (default MOLFUSION_DATA_DIR)"
    )
    parser.add_argument("--cache", type=Path, default=Path(".carry/grouping-cache"))
    parser.add_argument("--epochs", type=int, default=30, help="head epochs (early stopping on validation)")
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--out", type=Path, default=Path(".carry/grouping_eval.json"))
    parser.add_argument(
        "--aux-weights",
        default="none",
        help="comma-separated auxiliary loss shares to compare (grouping.evidence; 'none' = every label "
        "counts the same); each configuration's share is then chosen on validation",
    )
    parser.add_argument(
        "--transfers",
        default="joint",
        help="comma-separated ways to train with a group (grouping.evidence.TRANSFERS: joint, finetune), "
        "crossed with --aux-weights and chosen on validation the same way",
    )
    parser.add_argument(
        "--routing",
        action="append",
        default=None,
        help="a routed configuration, NAME or NAME=KEY:VALUE;KEY:VALUE of MolGroupConfig fields "
        "(repeatable; default: molgroup with the default routing), e.g. molgroup_ens=repeats:5",
    )
    parser.add_argument(
        "--reverse-features",
        action="store_true",
        help="embed catalog sets in reverse order (two runs sharing --cache then split the embedding work)",
    )
    parser.add_argument(
        "--cached-versions",
        default=None,
        help='JSON {"smiles": V, "graph": V}: use catalog features cached for these vector versions only '
        "(Embedder.vector_versions: the graph one ends in .f<featurizer revision>)",
    )
    parser.add_argument(
        "--export-subsample",
        type=Path,
        default=None,
        help="write every catalog set's --max-rows subsample (the exact rows a run uses) as a catalog "
        "folder here and stop: a small copy of the catalog to carry to another machine",
    )
    parser.add_argument(
        "--embed-only", action="store_true", help="embed the catalog into --cache and stop"
    )
    parser.add_argument(
        "--merge",
        default=None,
        help="comma-separated result JSONs of earlier runs: print their joint table",
    )
    args = parser.parse_args()
    if args.model_seeds < 1:
        parser.error("--model-seeds must be at least 1")
    weights = _weights(args.aux_weights)
    transfers = tuple(t.strip() for t in args.transfers.split(",") if t.strip())
    unknown = sorted(set(transfers) - set(TRANSFERS))
    if unknown:
        parser.error(f"--transfers: unknown {unknown}; choose from {list(TRANSFERS)}")
    try:
        routings = dict(parse_routing(r) for r in (args.routing or DEFAULT_ROUTINGS))
        routings = {name: MolGroupConfig(**over) for name, over in routings.items()}
    except (TypeError, ValueError) as exc:
        parser.error(f"--routing: {exc}")
    if len(routings) != len(args.routing or DEFAULT_ROUTINGS):
        parser.error("--routing: a name is given twice")
    if args.merge is not None:
        paths = [p.strip() for p in args.merge.split(",") if p.strip()]
        if not paths:
            parser.error("--merge: no result files given")
        docs = [json.loads(Path(p).read_text()) for p in paths]
        print(report(merge_results([r for d in docs for r in d["results"]]), weights, transfers))
        for d in docs:
            print(f"machine: {d.get('machine')}; total {d.get('total_seconds', float('nan')):.0f} s")
        return
    logging.basicConfig(level=logging.WARNING)
    log = logging.getLogger("grouping_eval")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = get_settings()
    catalog_dir = args.catalog or settings.data_dir
    entries = {e.name: e for e in load_catalog()}
    if args.export_subsample:
        export_subsample(list(entries.values()), catalog_dir, args.export_subsample, args.max_rows)
        return
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    embedder = _CachedOnly(json.loads(args.cached_versions)) if args.cached_versions else build_embedder()
    started = time.perf_counter()
    order = list(entries.values())[:: -1 if args.reverse_features else 1]
    separate = args.aux_catalog is not None or args.aux_read_rows is not None

    def features(folder: Path, rows: int, names: set[str], label: str) -> dict:
        loaded = load_catalog_features(
            [e for e in order if e.name in names],
            folder,
            embedder,
            args.cache,
            rows,
            progress=lambda n, i, k: i == int(i) and print(f"{label} {n} ({int(i)}/{k})", flush=True),
        )
        return {name: loaded[name] for name in entries if name in loaded}  # catalog order

    # with candidates read apart, the targets' own rows are all that is needed from --catalog
    feats = features(catalog_dir, args.max_rows, set(targets) if separate else set(entries), "features")
    aux_feats = None
    if separate:
        aux_dir, aux_rows = args.aux_catalog or catalog_dir, args.aux_read_rows or args.max_rows
        aux_feats = features(aux_dir, aux_rows, set(entries), "candidate features")
    embed_s = time.perf_counter() - started
    if args.embed_only:
        print(f"catalog embedded in {embed_s:.0f} s on {embedder.device}")
        return
    hparams = {"epochs": args.epochs, "patience": args.patience}
    results = []
    for name in targets:
        print(f"target {name}", flush=True)
        results.append(
            evaluate_target(
                name,
                feats,
                entries,
                args.seeds,
                hparams,
                routings,
                log,
                args.max_aux_rows,
                weights,
                transfers,
                args.first_seed,
                aux_feats,
                args.model_seeds,
                args.nested_check,
            )
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"results": results}, indent=2))
    machine = {
        **machine_info(),
        "device": str(embedder.device),
        "encoders": embedder.versions,
    }
    doc = {
        "results": results,
        "machine": machine,
        "args": {k: str(v) for k, v in vars(args).items()},
        "routings": {k: v.to_json() for k, v in routings.items()},
        "embed_seconds": embed_s,
        "total_seconds": time.perf_counter() - started,
    }
    args.out.write_text(json.dumps(doc, indent=2))
    print(report(results, weights, transfers))
    print(f"machine: {machine}; catalog features {embed_s:.0f} s; total {doc['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
