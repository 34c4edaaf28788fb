"""Fingerprint similarity between data sets.

Similarity of an auxiliary set ``A`` to the target ``T``: the mean nearest-neighbour Tanimoto similarity of
ECFP4 bit vectors, ``S(T, A) = mean_{t∈T} max_{a∈A} |t∧a| / |t∨a|``, over deterministic subsamples
(``NN_TARGET_ROWS`` target rows, ``NN_AUX_ROWS`` auxiliary rows). It ranks candidates for the ``structure``
baseline and is the routing's optional structure prior (:func:`similarity_prior`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def similarity_prior(similarities: Sequence[float]) -> np.ndarray:
    """The candidates' :func:`nearest_neighbour_tanimoto` to the target, standardised over the candidates
    (z-scores; zeros when there are fewer than two candidates or all are equally similar)."""
    sims = np.asarray(similarities, dtype=np.float64)
    if len(sims) < 2 or sims.std() < 1e-12:
        return np.zeros(len(sims), dtype=np.float32)
    return ((sims - sims.mean()) / sims.std()).astype(np.float32)
