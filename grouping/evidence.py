"""Evidence for a group: the same fused head trained on the target alone vs. target + auxiliary sets.

Group training stacks the rows of the target and of each auxiliary set into one multi-task table
``y = [target tasks | aux tasks]`` with NaN wherever a molecule has no label for a task, so the head's
masked loss trains every task on the rows that have it (:func:`fusion.training.fit_head`). By default
every observed label counts the same, so a large or many-task auxiliary set outweighs the target; with
``aux_weight = α`` the loss is re-weighted per task column so that the target's training labels carry
weight 1 and each auxiliary set ``α / |group|`` (each set's labels equally within it):
``L ≈ (L_target + α · mean_a L_a) / (1 + α)``. Early stopping and all reported numbers use the target's
validation rows and the target's tasks only.

Two ways to train with the group (``transfer``): ``joint`` trains the head once on target + group;
``finetune`` then continues training that head on the target's rows alone (fresh optimiser, learning
rate × ``FINETUNE_LR_SCALE``, early-stopped on the target's validation loss, the joint weights kept if
no epoch beats them), the usual pre-train / fine-tune transfer on the shared trunk; ``stack`` trains
one head per auxiliary set on that set alone (early-stopped on a random ``STACK_VAL_FRACTION`` of its
rows) and gives the target's head their predictions for the target's molecules as a third input view
(``aux``), so the target's head trains on the target's rows only.
Auxiliary rows whose canonical SMILES occur in the target's validation or test rows are removed first
(and counted), so a near-duplicate auxiliary set cannot leak those labels.

Relative improvement of a metric ``m`` over target alone ``m_0``: ``(m − m_0)/m_0`` for ROC-AUC and
``(m_0 − m)/m_0`` for RMSE, so positive is better in both cases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fusion.training import TrainedModel, evaluate, fine_tune_head, fit_head, scaffold_split
from grouping.features import SetFeatures

log = logging.getLogger(__name__)

TRANSFERS = ("joint", "finetune", "stack")
STACK_VAL_FRACTION = 0.1  # random validation rows of each auxiliary set for its own head (``stack``)
FINETUNE_LR_SCALE = 0.3  # fixed before any run; the stage-2 learning rate is the head's lr times this


@dataclass
class StackedTable:
    views: dict[str, np.ndarray]
    y: np.ndarray
    task_types: list[str]
    tasks: list[str]
    n_target: int  # rows [0, n_target) are the target's, in its order
    aux_rows_removed: int  # auxiliary rows dropped because their molecule is in the target's eval rows
    set_of_task: list[int]  # per task column: 0 = the target, k = the k-th auxiliary set of the group

    def task_weights(self, train: np.ndarray, aux_weight: float) -> list[float]:
        """Per-task loss weights giving the target's labels on ``train`` rows total weight 1 and each
        auxiliary set's labels ``aux_weight / n_sets`` (see the module docstring)."""
        sets = np.asarray(self.set_of_task)
        n_aux = int(sets.max()) if sets.size else 0
        rows = np.concatenate([train, np.arange(self.n_target, len(self.y))])
        counts = (~np.isnan(self.y[rows])).sum(axis=0).astype(np.float64)
        weights = np.zeros(len(sets))
        for k in range(n_aux + 1):
            cols = sets == k
            share = 1.0 if k == 0 else aux_weight / n_aux
            weights[cols] = share / max(counts[cols].sum(), 1.0)
        return (weights / weights.max()).tolist()


def primary(task_types: Sequence[str]) -> str:
    return "roc_auc" if all(t == "classification" for t in task_types) else "rmse"


def relative_improvement(value: float, baseline: float, metric: str) -> float:
    if baseline == 0:
        return 0.0
    return (value - baseline) / abs(baseline) if metric == "roc_auc" else (baseline - value) / abs(baseline)


def _value(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def summarise(values: Sequence[float]) -> dict:
    """Mean and population std over the defined values (NaN = metric undefined for that seed)."""
    arr = np.asarray(values, dtype=np.float64)
    ok = arr[~np.isnan(arr)]
    return {
        "mean": float(ok.mean()) if ok.size else None,
        "std": float(ok.std()) if ok.size else None,
        "values": [None if np.isnan(x) else float(x) for x in arr],
    }


def stack(target: SetFeatures, group: Sequence[SetFeatures], exclude: set[str]) -> StackedTable:
    """Target rows first, then each auxiliary set's rows (minus molecules in ``exclude``)."""
    views = {k: [v] for k, v in target.views().items()}
    t_tasks = len(target.task_types)
    blocks: list[np.ndarray] = []
    types = list(target.task_types)
    tasks = list(target.label_columns)
    removed = 0
    set_of_task = [0] * t_tasks
    for set_no, aux in enumerate(group, start=1):
        keep = np.array([s not in exclude for s in aux.smiles], dtype=bool)
        removed += int((~keep).sum())
        labels = aux.labels[keep]
        cols = np.flatnonzero(~np.isnan(labels).all(axis=0))  # tasks with at least one label left
        blocks.append(labels[:, cols])
        types += [aux.task_types[c] for c in cols]
        tasks += [f"{aux.name}:{aux.label_columns[c]}" for c in cols]
        set_of_task += [set_no] * len(cols)
        for k, v in aux.views().items():
            views[k].append(v[keep])
    n_rows = len(target) + sum(len(b) for b in blocks)
    y = np.full((n_rows, len(tasks)), np.nan, dtype=np.float32)
    y[: len(target), :t_tasks] = target.labels
    row, col = len(target), t_tasks
    for b in blocks:
        y[row : row + len(b), col : col + b.shape[1]] = b
        row += len(b)
        col += b.shape[1]
    return StackedTable(
        {k: np.concatenate(v) for k, v in views.items()}, y, types, tasks, len(target), removed, set_of_task
    )


def auxiliary_predictions(
    target: SetFeatures,
    group: Sequence[SetFeatures],
    exclude: set[str],
    seed: int,
    head: str,
    fusion: str,
    hparams: dict,
) -> tuple[np.ndarray, int]:
    """``[len(target), Σ tasks]`` predictions for the target's molecules of one head per auxiliary set,
    each trained on that set alone (minus molecules in ``exclude``, ``hparams`` passed to
    :func:`fusion.training.fit_head`); and the auxiliary rows used."""
    cols: list[np.ndarray] = []
    used = 0
    for aux in group:
        keep = np.array([i for i, s in enumerate(aux.smiles) if s not in exclude], dtype=np.int64)
        order = np.random.default_rng(seed).permutation(keep)
        n_val = max(1, int(round(len(order) * STACK_VAL_FRACTION)))
        val, train = order[:n_val], order[n_val:]
        tasks = np.flatnonzero((~np.isnan(aux.labels[train])).any(axis=0))
        if not len(tasks) or not len(train):
            continue
        model = fit_head(
            aux.views(),
            aux.labels[:, tasks],
            [aux.task_types[t] for t in tasks],
            train,
            val,
            head=head,
            fusion=fusion,
            seed=seed,
            **hparams,
        )
        cols.append(model.predict(target.views()))
        used += len(keep)
    return (np.concatenate(cols, axis=1) if cols else np.zeros((len(target), 0), np.float32)), used


def fit_and_score(
    target: SetFeatures,
    group: Sequence[SetFeatures],
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray | None,
    seed: int,
    head: str = "mlp",
    fusion: str = "concat",
    aux_weight: float | None = None,
    transfer: str = "joint",
    **hparams,
) -> dict:
    """Fit the head on target train rows (+ all rows of ``group``), early-stopped on target ``val``.

    ``aux_weight`` (``None`` = every label counts the same) sets the auxiliary sets' share of the loss;
    ``transfer`` is one of ``TRANSFERS`` (module docstring; no effect without a group).
    Returns the target-task metrics on ``val`` (and ``test`` when given) and the rows used.
    """
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer must be one of {list(TRANSFERS)}, got {transfer!r}")
    exclude = {target.smiles[i] for i in np.concatenate([val, test if test is not None else val])}
    if transfer == "stack" and group:
        return _fit_stacked(target, group, exclude, train, val, test, seed, head, fusion, hparams)
    table = stack(target, group, exclude)
    aux_rows = np.arange(table.n_target, len(table.y))
    if aux_weight is not None and group:
        hparams = {**hparams, "task_weights": table.task_weights(train, aux_weight)}
    model = fit_head(
        table.views,
        table.y,
        table.task_types,
        np.concatenate([train, aux_rows]),
        val,
        head=head,
        fusion=fusion,
        seed=seed,
        tasks=table.tasks,
        **hparams,
    )
    finetune_epoch = None
    if transfer == "finetune" and group:
        lr = float(hparams.get("lr", 1e-3)) * FINETUNE_LR_SCALE
        info = fine_tune_head(model, table.views, table.y, train, val, seed=seed, lr=lr)
        finetune_epoch = info["best_epoch"]
    return {
        **_target_scores(model, table.views, target, val, test),
        "train_rows": int(len(train) + len(aux_rows)),
        "aux_rows_removed": table.aux_rows_removed,
        "finetune_best_epoch": finetune_epoch,
    }


def _target_scores(
    model: TrainedModel,
    views: dict[str, np.ndarray],
    target: SetFeatures,
    val: np.ndarray,
    test: np.ndarray | None,
) -> dict:
    """The target-task metrics of ``model`` (its first columns are the target's tasks) on ``val`` and
    ``test`` (when given) rows of ``views``."""
    n_t = len(target.task_types)

    def score(rows: np.ndarray) -> dict:
        pred = model.predict({k: v[rows] for k, v in views.items()})[:, :n_t]
        return evaluate(target.labels[rows], pred, list(target.task_types), list(target.label_columns))[
            "mean"
        ]

    return {"val": score(val), **({"test": score(test)} if test is not None else {})}


def _fit_stacked(
    target: SetFeatures,
    group: Sequence[SetFeatures],
    exclude: set[str],
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray | None,
    seed: int,
    head: str,
    fusion: str,
    hparams: dict,
) -> dict:
    """``transfer="stack"``: the target's head on its own rows, with the auxiliary heads' predictions as
    a third view."""
    params = {k: v for k, v in hparams.items() if k != "task_weights"}  # every head has its own tasks
    preds, used = auxiliary_predictions(target, group, exclude, seed, head, fusion, params)
    views = {**target.views(), "aux": preds} if preds.shape[1] else target.views()
    model = fit_head(
        views,
        target.labels,
        list(target.task_types),
        train,
        val,
        head=head,
        fusion=fusion,
        seed=seed,
        tasks=list(target.label_columns),
        **params,
    )
    return {
        **_target_scores(model, views, target, val, test),
        "train_rows": int(len(train) + used),
        "aux_rows_removed": int(sum(s in exclude for aux in group for s in aux.smiles)),
        "finetune_best_epoch": None,
        "stacked_features": int(preds.shape[1]),
    }


def group_evidence(
    target: SetFeatures,
    group: Sequence[SetFeatures],
    seeds: int = 3,
    split_seed: int = 0,
    head: str = "mlp",
    fusion: str = "concat",
    progress: Callable[[float, str], None] | None = None,
    aux_weight: float | None = None,
    transfer: str = "joint",
    **hparams,
) -> dict:
    """Validation metric of target alone vs. target + ``group`` over ``seeds`` model seeds on one scaffold
    split (``split_seed``, 80/10/10; its test rows are not used), mean ± population std."""
    train, val, _test = scaffold_split(target.smiles, split_seed)
    metric = primary(target.task_types)
    runs: dict[str, list[float]] = {"target_alone": [], "target_plus_group": []}
    removed = 0
    for s in range(seeds):
        alone = fit_and_score(target, [], train, val, None, seed=s, head=head, fusion=fusion, **hparams)
        runs["target_alone"].append(_value(alone["val"][metric]))
        if group:
            grouped = fit_and_score(
                target,
                group,
                train,
                val,
                None,
                seed=s,
                head=head,
                fusion=fusion,
                aux_weight=aux_weight,
                transfer=transfer,
                **hparams,
            )
            runs["target_plus_group"].append(_value(grouped["val"][metric]))
            removed = grouped["aux_rows_removed"]
        else:
            runs["target_plus_group"].append(_value(alone["val"][metric]))
        if progress is not None:
            progress((s + 1) / seeds, f"evidence seed {s + 1}/{seeds}")
    summary = {k: summarise(v) for k, v in runs.items()}
    return {
        "metric": metric,
        "split": "scaffold",
        "split_seed": split_seed,
        "seeds": seeds,
        "rows": {"train": int(len(train)), "val": int(len(val))},
        "head": head,
        "fusion": fusion,
        "aux_weight": aux_weight,
        "transfer": transfer,
        **summary,
        "relative_improvement": None
        if None in (summary["target_plus_group"]["mean"], summary["target_alone"]["mean"])
        else relative_improvement(
            summary["target_plus_group"]["mean"], summary["target_alone"]["mean"], metric
        ),
        "aux_rows_removed": removed,
        "group": [g.name for g in group],
    }
