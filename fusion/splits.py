"""Train / validation / test splits: Bemis–Murcko scaffold split (default) and random split.

Scaffold split (Bemis & Murcko, 1996; as used by MoleculeNet, Wu et al., 2018, and in its balanced form
by Yang et al., 2019): molecules are grouped by scaffold, and whole groups are assigned so that no
scaffold occurs in two splits. Groups larger than half the validation (or test) size are placed first
(in seeded random order) so that they land in training; then the remaining groups follow in seeded
random order. Each group goes to train if it still fits, else to validation if it fits, else to test.
Acyclic molecules share the empty scaffold and form one group. Deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.chemistry import murcko_scaffold

Split = tuple[np.ndarray, np.ndarray, np.ndarray]


def _sizes(n: int, frac: Sequence[float]) -> tuple[int, int]:
    if len(frac) != 3 or any(f < 0 for f in frac) or abs(sum(frac) - 1.0) > 1e-6:
        raise ValueError(f"frac must be three non-negative fractions summing to 1, got {tuple(frac)}")
    return int(round(frac[0] * n)), int(round(frac[1] * n))


def scaffold_groups(smiles: Sequence[str]) -> list[str]:
    """The Bemis–Murcko scaffold SMILES of every molecule ('' when acyclic or unparsable)."""
    return [murcko_scaffold(s) for s in smiles]


def group_ids(smiles: Sequence[str]) -> np.ndarray:
    """Integer scaffold id per molecule (equal ids = same scaffold)."""
    _, inverse = np.unique(np.asarray(scaffold_groups(smiles), dtype=object).astype(str), return_inverse=True)
    return inverse.astype(np.int64)


def scaffold_split(smiles: Sequence[str], seed: int, frac: Sequence[float] = (0.8, 0.1, 0.1)) -> Split:
    n = len(smiles)
    n_train, n_val = _sizes(n, frac)
    n_test = n - n_train - n_val
    groups: dict[str, list[int]] = {}
    for i, scaffold in enumerate(scaffold_groups(smiles)):
        groups.setdefault(scaffold, []).append(i)
    sets = sorted(groups.values(), key=lambda g: g[0])  # stable order before shuffling
    rng = np.random.default_rng(seed)
    big = [g for g in sets if len(g) > n_val / 2 or len(g) > n_test / 2]
    small = [g for g in sets if not (len(g) > n_val / 2 or len(g) > n_test / 2)]
    order = [big[i] for i in rng.permutation(len(big))] + [small[i] for i in rng.permutation(len(small))]
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for g in order:
        if len(train) + len(g) <= n_train:
            train += g
        elif len(val) + len(g) <= n_val:
            val += g
        else:
            test += g
    return (
        np.sort(np.array(train, dtype=np.int64)),
        np.sort(np.array(val, dtype=np.int64)),
        np.sort(np.array(test, dtype=np.int64)),
    )


def random_split(n: int, seed: int, frac: Sequence[float] = (0.8, 0.1, 0.1)) -> Split:
    n_train, n_val = _sizes(n, frac)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train : n_train + n_val]), np.sort(perm[n_train + n_val :])


SPLITS = ("scaffold", "random")


def make_split(kind: str, smiles: Sequence[str], seed: int, frac: Sequence[float] = (0.8, 0.1, 0.1)) -> Split:
    if kind == "scaffold":
        return scaffold_split(smiles, seed, frac)
    if kind == "random":
        return random_split(len(smiles), seed, frac)
    raise ValueError(f"split must be one of {SPLITS}, got {kind!r}")
