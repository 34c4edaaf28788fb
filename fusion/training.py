"""Training heads: ``fit_head`` on in-memory vectors, and ``train_from_table`` (CSV -> artifact).

``train_from_table`` reads the labels, embeds the molecules once with the frozen encoders, and for
each seed makes a split (Bemis–Murcko scaffold 80/10/10 by default; the seed changes the split and the
initialisation), fits the head and evaluates it on train / validation / test. The served artifact is
the seed with the best *validation* metric (ROC-AUC up, RMSE down; test is never used to choose); the
card records every seed's metrics and their mean ± std (population std over seeds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from fusion.head import read_card
from fusion.metrics import evaluate, is_better, primary_metric
from fusion.model import TASK_TYPES, TrainedModel, build_model, split_hparams
from fusion.splits import group_ids, make_split, scaffold_split
from models.checkpoint import file_sha256
from models.progress import bar_disable

log = logging.getLogger(__name__)

__all__ = [
    "fit_head",
    "fine_tune_head",
    "evaluate",
    "scaffold_split",
    "train_from_table",
    "train_seeds",
    "infer_task_types",
    "TrainedModel",
    "LabelTableError",
]

SPLIT_NAMES = ("train", "val", "test")


class LabelTableError(ValueError):
    """A problem with the training table (missing column, non-numeric label); the message names it."""


def _check_inputs(
    views: dict[str, np.ndarray], y: np.ndarray, task_types: list[str], rows: np.ndarray
) -> None:
    if not views:
        raise ValueError("at least one view is required")
    n = len(y)
    for name, arr in views.items():
        if arr.ndim != 2 or len(arr) != n:
            raise ValueError(f"view {name!r} has shape {tuple(arr.shape)}; expected [{n}, D]")
    if len(task_types) != y.shape[1]:
        raise ValueError(f"{len(task_types)} task types given for {y.shape[1]} label columns")
    for t, kind in enumerate(task_types):
        if kind not in TASK_TYPES:
            raise ValueError(f"task type {kind!r} (task {t}) must be one of {TASK_TYPES}")
        col = y[:, t][~np.isnan(y[:, t])]
        if kind == "classification" and not np.isin(col, (0.0, 1.0)).all():
            raise ValueError(f"classification task {t} has labels other than 0/1: {np.unique(col)[:5]}")
    for name, arr in views.items():
        if not np.isfinite(arr[rows]).all():
            raise ValueError(f"view {name!r} has non-finite values in training/validation rows")


def fit_head(
    views: dict[str, np.ndarray],
    y: np.ndarray,
    task_types: list[str],
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    head: str = "mlp",
    fusion: str = "concat",
    seed: int = 0,
    *,
    tasks: list[str] | None = None,
    groups: np.ndarray | None = None,
    **hparams,
) -> TrainedModel:
    """Fit a head on ``views`` (``{"smiles": [N, 256], "graph": [N, 1800]}`` or any subset / other named
    views) and labels ``y`` ``[N, T]`` (NaN = missing label); early stopping uses ``val_idx`` only.

    ``groups`` (integer scaffold id per row) feeds the experts' scaffold-alignment loss.
    ``hparams`` go to the head (see ``fusion.predictors``) or to the fusion (``n_components``, ``reduction``).
    Returns a :class:`TrainedModel` with ``predict(views)`` and ``save(dir)``.
    """
    y = np.asarray(y, dtype=np.float32)
    y = y.reshape(len(y), -1)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    views = {k: np.asarray(v, dtype=np.float32) for k, v in views.items()}
    _check_inputs(views, y, list(task_types), np.concatenate([train_idx, val_idx]))
    tasks = list(tasks) if tasks is not None else [f"task_{t}" for t in range(y.shape[1])]
    if len(tasks) != y.shape[1]:
        raise ValueError(f"{len(tasks)} task names given for {y.shape[1]} label columns")
    empty = [tasks[t] for t in range(y.shape[1]) if np.isnan(y[train_idx, t]).all()]
    if empty:
        raise ValueError(f"task(s) {empty} have no labelled training rows")
    started = time.perf_counter()
    model = build_model(
        head, fusion, tasks, list(task_types), views, y, train_idx, val_idx, seed, groups, hparams
    )
    log.info(
        "head fitted",
        extra={
            "head": head,
            "fusion": fusion,
            "seed": seed,
            "tasks": len(tasks),
            "train_rows": len(train_idx),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    return model


def fine_tune_head(
    model: TrainedModel,
    views: dict[str, np.ndarray],
    y: np.ndarray,
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    seed: int = 0,
    lr: float = 3e-4,
) -> dict:
    """Continue training a fitted neural head on ``train_idx`` only, early-stopped on ``val_idx``.

    The fusion and label scaling fitted with the model stay as they are (so rows it was first trained
    on keep their meaning); the network restarts its optimiser at ``lr`` and keeps its starting weights
    unless an epoch improves their validation loss. Returns the loop's summary (``best_epoch`` 0 = kept).
    """
    y = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
    if y.shape[1] != len(model.tasks):
        raise ValueError(f"{y.shape[1]} label columns given for a head with {len(model.tasks)} tasks")
    predictor = model.predictor
    if not hasattr(predictor, "fine_tune"):
        raise ValueError(f"head {model.head!r} cannot be fine-tuned (not a neural head)")
    data = model.preprocessor.transform({v: np.asarray(views[v], dtype=np.float32) for v in model.views})
    return predictor.fine_tune(
        data,
        model.label_scaler.transform(y),
        np.asarray(train_idx, dtype=np.int64),
        np.asarray(val_idx, dtype=np.int64),
        seed,
        lr,
    )


def infer_task_types(y: np.ndarray) -> list[str]:
    """A label column holding only 0 and 1 (ignoring missing values) is classification, else regression."""
    out = []
    for t in range(y.shape[1]):
        col = y[:, t][~np.isnan(y[:, t])]
        out.append("classification" if col.size and np.isin(col, (0.0, 1.0)).all() else "regression")
    return out


def read_label_table(
    path: Path, targets: list[str], smiles_column: str | None
) -> tuple[list[str], np.ndarray, str]:
    """SMILES and the float label matrix (NaN = an empty or ``nan`` cell) of ``targets``; errors name the
    column and the row's line in the file (the header is line 1; blank lines count)."""
    from models.tabular import (
        MAX_ABS_LABEL,
        TableError,
        choose_smiles_column,
        read_text_table,
        repeated_names,
        repeated_targets,
        text_sample,
        without_blank_rows,
    )

    repeated = repeated_targets(targets)
    if repeated:
        raise LabelTableError(f"target column(s) {repeated} named more than once (--targets)")
    try:
        names, frame = read_text_table(path)  # read once: the header as written, the sample and the rows
    except ValueError as exc:  # TableError, and pandas' other parsing and decompression errors
        raise LabelTableError(str(exc)) from exc
    doubled = repeated_names(names)
    if doubled:
        raise LabelTableError(f"column name(s) {doubled} occur more than once in the header of {path.name}")
    try:
        column = choose_smiles_column(list(frame.columns), text_sample(frame), smiles_column, path.name)
    except TableError as exc:
        raise LabelTableError(str(exc)) from exc
    missing = [t for t in targets if t not in frame.columns]
    if missing:
        raise LabelTableError(
            f"target column(s) {missing} not in {path.name} (columns: {list(frame.columns)})"
        )
    frame = without_blank_rows(frame)  # the index keeps each row's line in the file (index + 2)
    if frame.empty:
        raise LabelTableError(f"{path.name} has a header but no data rows")
    line = frame.index.to_numpy() + 2
    y = np.full((len(frame), len(targets)), np.nan, dtype=np.float32)
    for t, name in enumerate(targets):
        values = frame[name].str.strip()
        empty = (values == "") | (values.str.lower() == "nan")
        numeric = pd.to_numeric(values.where(~empty), errors="coerce")
        bad = numeric.isna() & ~empty
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise LabelTableError(
                f"column {name!r} row {line[row]} (line in file): label {values.iloc[row]!r} is not a number"
            )
        wild = (numeric.abs() > MAX_ABS_LABEL).to_numpy()  # inf and overflowing values; NaN compares False
        if wild.any():
            row = int(np.flatnonzero(wild)[0])
            raise LabelTableError(
                f"column {name!r} row {line[row]} (line in file): label {values.iloc[row]!r} is not a finite "
                f"number within ±{MAX_ABS_LABEL:g}"
            )
        y[:, t] = numeric.to_numpy(dtype=np.float64).astype(np.float32)
    return frame[column].tolist(), y, column


def check_classes(y: np.ndarray, targets: Sequence[str], task_types: Sequence[str], where: str) -> None:
    """A classification column needs both classes (ROC-AUC and a classifier are undefined otherwise)."""
    for t, kind in enumerate(task_types):
        present = np.unique(y[:, t][~np.isnan(y[:, t])])
        if kind == "classification" and len(present) < 2:
            found = f"only {present[0]:g}" if len(present) else "no label"
            raise LabelTableError(f"classification column {targets[t]!r} holds {found} {where}; need 0 and 1")


def embed_smiles(
    embedder,
    smiles: list[str],
    chunk_size: int = 2000,
    progress: bool | None = None,
    views: tuple[str, ...] = ("smiles", "graph"),
) -> tuple[dict[str, np.ndarray], list[str | None]]:
    """Encoder-view vectors of ``smiles`` (NaN rows for invalid input) and the per-row error reasons.
    ``progress``: the bar on stderr (``None``: when stderr is a terminal)."""
    parts: dict[str, list[np.ndarray]] = {v: [] for v in views}
    errors: list[str | None] = []
    with tqdm(total=len(smiles), unit="mol", desc="embedding", disable=bar_disable(progress)) as bar:
        for start in range(0, len(smiles), chunk_size):
            out = embedder.embed(smiles[start : start + chunk_size], views=views)
            for v in parts:
                parts[v].append(out.vectors[v])
            errors += out.errors
            bar.update(len(out.errors))
    return {v: np.concatenate(p) if p else np.zeros((0, 0), np.float32) for v, p in parts.items()}, errors


@dataclass
class SeedRuns:
    """Every seed's model and metrics, the seed chosen on validation, and the summary for the card."""

    models: dict[int, TrainedModel]
    metrics: dict[int, dict[str, dict]]
    selected_seed: int
    primary: str
    splits: dict[int, dict[str, int]] = field(default_factory=dict)

    def summary(self) -> dict:
        out: dict[str, dict] = {}
        for split in SPLIT_NAMES:
            per_seed = [
                {"seed": s, "mean": m[split]["mean"], "per_task": m[split]["per_task"]}
                for s, m in self.metrics.items()
            ]
            metrics = sorted({k for p in per_seed for k, v in p["mean"].items() if v is not None})
            values = {k: [p["mean"][k] for p in per_seed if p["mean"].get(k) is not None] for k in metrics}
            out[split] = {
                "mean": {k: float(np.mean(v)) for k, v in values.items()},
                "std": {k: float(np.std(v)) for k, v in values.items()},
                "per_seed": per_seed,
            }
        return out


def train_seeds(
    views: dict[str, np.ndarray],
    y: np.ndarray,
    smiles: list[str],
    tasks: list[str],
    task_types: list[str],
    head: str = "mlp",
    fusion: str = "concat",
    split: str = "scaffold",
    seeds: int | Sequence[int] = 3,
    hparams: dict | None = None,
    split_indices: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    progress: bool | None = False,
) -> SeedRuns:
    """Fit one model per seed (a fresh split per seed unless ``split_indices`` are given) and pick the
    seed with the best validation primary metric. ``progress``: a bar over the seeds on stderr (``None``:
    when stderr is a terminal)."""
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("at least one seed is required")
    groups = group_ids(smiles) if head == "experts" else None
    primary = primary_metric(task_types)
    models: dict[int, TrainedModel] = {}
    metrics: dict[int, dict[str, dict]] = {}
    sizes: dict[int, dict[str, int]] = {}
    best_seed, best_score = seed_list[0], None
    bar = tqdm(seed_list, desc=f"training {head}/{fusion}", unit="seed", disable=bar_disable(progress))
    for seed in bar:
        parts = split_indices[seed] if split_indices is not None else make_split(split, smiles, seed)
        train_idx, val_idx, test_idx = parts
        model = fit_head(
            views,
            y,
            task_types,
            train_idx,
            val_idx,
            head=head,
            fusion=fusion,
            seed=seed,
            tasks=tasks,
            groups=groups,
            **(hparams or {}),
        )
        pred = model.predict(views)
        metrics[seed] = {
            name: evaluate(y[idx], pred[idx], task_types, tasks)
            for name, idx in zip(SPLIT_NAMES, parts, strict=True)
        }
        sizes[seed] = {name: int(len(idx)) for name, idx in zip(SPLIT_NAMES, parts, strict=True)}
        models[seed] = model
        score = metrics[seed]["val"]["mean"].get(primary)
        if best_score is None or is_better(score, best_score, primary):
            best_seed, best_score = seed, score
        log.info(
            "seed done",
            extra={"seed": seed, "val": metrics[seed]["val"]["mean"], "test": metrics[seed]["test"]["mean"]},
        )
    return SeedRuns(models, metrics, best_seed, primary, sizes)


def train_from_table(
    data_csv: str | Path,
    targets: Sequence[str],
    out: str | Path,
    embedder,
    task: str | None = None,
    head: str = "mlp",
    fusion: str = "concat",
    split: str = "scaffold",
    seeds: int = 3,
    smiles_column: str | None = None,
    hparams: dict | None = None,
    name: str | None = None,
    units: Sequence[str | None] | None = None,
    progress: bool | None = None,
) -> dict:
    """CSV -> embeddings -> a model per seed -> the best-on-val artifact in ``out``; returns the card.
    ``progress``: the embedding and seed bars on stderr (``None``: when stderr is a terminal)."""
    path = Path(data_csv)
    targets = list(targets)
    if not targets:
        raise LabelTableError("at least one target column is required (--targets)")
    smiles, y, column = read_label_table(path, targets, smiles_column)
    if task is not None and task not in TASK_TYPES:
        raise LabelTableError(f"--task must be one of {TASK_TYPES}, got {task!r}")
    task_types = [task] * len(targets) if task else infer_task_types(y)
    for t, kind in enumerate(task_types):
        col = y[:, t][~np.isnan(y[:, t])]
        if kind == "classification" and not np.isin(col, (0.0, 1.0)).all():
            raise LabelTableError(
                f"column {targets[t]!r} is declared classification but holds values other "
                f"than 0/1 (e.g. {col[~np.isin(col, (0.0, 1.0))][0]})"
            )
    if units is not None and len(units) != len(targets):
        raise LabelTableError(f"{len(units)} units given for {len(targets)} targets")
    unlabelled = [t for j, t in enumerate(targets) if np.isnan(y[:, j]).all()]
    if unlabelled:
        raise LabelTableError(f"target column(s) {unlabelled} hold no label")
    check_classes(y, targets, task_types, "in the file")
    split_hparams(head, fusion, hparams or {})  # a bad hyper-parameter fails before any embedding
    vectors, errors = embed_smiles(embedder, smiles, progress=progress)
    valid = np.array([e is None for e in errors]) & ~np.isnan(y).all(axis=1)
    if valid.sum() < 10:
        raise LabelTableError(
            f"only {int(valid.sum())} rows have a valid SMILES and a label; need at least 10"
        )
    keep = np.flatnonzero(valid)
    check_classes(y[keep], targets, task_types, "in the rows with a valid SMILES")
    views = {v: a[keep] for v, a in vectors.items()}
    kept_smiles = [smiles[i] for i in keep]
    runs = train_seeds(
        views,
        y[keep],
        kept_smiles,
        targets,
        task_types,
        head,
        fusion,
        split,
        seeds,
        hparams,
        progress=progress,
    )
    card = seed_runs_card(
        runs,
        name=name or Path(out).name,
        units=list(units) if units is not None else [None] * len(targets),
        encoder_versions=dict(embedder.versions),
        vector_versions=dict(embedder.vector_versions),
        training_data={
            "file": path.name,
            "sha256": file_sha256(path),
            "smiles_column": column,
            "n_rows": len(smiles),
            "n_used": int(valid.sum()),
            "n_invalid_smiles": int(sum(e is not None for e in errors)),
            "n_unlabelled": int(np.isnan(y).all(axis=1).sum()),
        },
        split=split,
    )
    best = runs.models[runs.selected_seed]
    best.save(out, card)
    return read_card(out)


def seed_runs_card(
    runs: SeedRuns,
    name: str,
    units: list[str | None],
    encoder_versions: dict[str, str],
    vector_versions: dict[str, str],
    training_data: dict,
    split: str,
) -> dict:
    """The card fields that describe provenance, the seeds and their metrics (the model adds the rest)."""
    return {
        "name": name,
        "units": units,
        "encoder_versions": encoder_versions,
        "vector_versions": vector_versions,
        "training_data": training_data,
        "split": {"method": split, "fractions": [0.8, 0.1, 0.1], "sizes_per_seed": runs.splits},
        "seeds": list(runs.models),
        "selected_seed": runs.selected_seed,
        "primary_metric": runs.primary,
        "selection": f"best validation {runs.primary} over seeds (test never used for selection)",
        "metrics": runs.summary(),
        "training_info": _jsonable(runs.models[runs.selected_seed].info),
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
