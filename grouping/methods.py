"""Grouping methods behind one interface: ``molgroup`` (learned routing), and the baselines
``structure`` (fingerprint similarity, top-k), ``all`` and ``none``.

Structure similarity of an auxiliary set ``A`` to the target ``T`` is the mean nearest-neighbour
Tanimoto similarity of ECFP4 bit vectors, ``S(T, A) = mean_{t∈T} max_{a∈A} |t∧a| / |t∨a|``, over
deterministic subsamples (``NN_TARGET_ROWS`` target rows, ``NN_AUX_ROWS`` auxiliary rows). Every method
reports it, so the candidate tables of different methods can be compared; ``molgroup`` reports its
learned affinities and gate instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from grouping.features import SetFeatures
from grouping.routing import MolGroupConfig, route

METHODS = ("molgroup", "structure", "all", "none")
NN_TARGET_ROWS = 1000
NN_AUX_ROWS = 3000


def nearest_neighbour_tanimoto(target_fp: np.ndarray, aux_fp: np.ndarray, seed: int = 0) -> float:
    """Mean over target molecules of the best Tanimoto similarity to any auxiliary molecule."""
    rng = np.random.default_rng(seed)
    t = (
        target_fp
        if len(target_fp) <= NN_TARGET_ROWS
        else target_fp[rng.choice(len(target_fp), NN_TARGET_ROWS, replace=False)]
    )
    a = (
        aux_fp
        if len(aux_fp) <= NN_AUX_ROWS
        else aux_fp[rng.choice(len(aux_fp), NN_AUX_ROWS, replace=False)]
    )
    if not len(t) or not len(a):
        return 0.0
    t32, a32 = t.astype(np.float32), a.astype(np.float32)
    inter = t32 @ a32.T
    union = t32.sum(1, keepdims=True) + a32.sum(1)[None, :] - inter
    sim = np.where(union > 0, inter / np.maximum(union, 1.0), 1.0)
    return float(sim.max(axis=1).mean())


def score_candidates(
    method: str,
    target: SetFeatures,
    candidates: dict[str, SetFeatures],
    top_k: int = 3,
    config: MolGroupConfig | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> list[dict]:
    """One row per candidate: ``dataset, task_affinity, structure_affinity, score, selected`` (+ extras)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} not in {list(METHODS)}")
    similarity = {
        n: nearest_neighbour_tanimoto(target.fingerprints, c.fingerprints) for n, c in candidates.items()
    }
    if method == "molgroup":
        scores = route(target, candidates, config or MolGroupConfig(), progress)
        rows = [
            {
                "dataset": s.dataset,
                "task_affinity": s.task_affinity,
                "structure_affinity": s.structure_affinity,
                "score": s.score,
                "selected": s.selected,
                "pruned_in_round": s.pruned_in_round,
                "votes": s.votes,
                "tanimoto_nn": similarity[s.dataset],
            }
            for s in scores
        ]
    else:
        ranked = sorted(similarity, key=lambda n: -similarity[n])
        chosen = {"structure": set(ranked[:top_k]), "all": set(ranked), "none": set()}[method]
        rows = [
            {
                "dataset": n,
                "task_affinity": None,
                "structure_affinity": similarity[n],
                "score": similarity[n],
                "selected": n in chosen,
                "tanimoto_nn": similarity[n],
            }
            for n in candidates
        ]
        if progress is not None:
            progress(1.0, f"{method} scores computed")
    return sorted(rows, key=lambda r: -r["score"])
