"""Grouping methods behind one interface: ``molgroup`` (learned routing), and the baselines
``structure`` (fingerprint similarity, top-k), ``all`` and ``none``.

Structure similarity of an auxiliary set to the target is the mean nearest-neighbour ECFP4 Tanimoto
similarity (:func:`grouping.similarity.nearest_neighbour_tanimoto`). Every method reports it, so the
candidate tables of different methods can be compared; ``molgroup`` reports its learned affinities and
gate instead.
"""

from __future__ import annotations

from collections.abc import Callable

from grouping.features import SetFeatures
from grouping.routing import MolGroupConfig, route
from grouping.similarity import nearest_neighbour_tanimoto

METHODS = ("molgroup", "structure", "all", "none")


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
        scores = route(target, candidates, config or MolGroupConfig(), progress, similarity)
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
