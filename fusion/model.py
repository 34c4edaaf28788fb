"""A trained head: fusion preprocessor + predictor + label scaling, saved as one directory.

Directory layout (no pickle anywhere):

* ``model.json``        head kind, fusion, views and dimensions, tasks, task types, hyper-parameters;
* ``fusion.safetensors`` per-view standardisation and the fitted reduction (``concat_reduce``);
* ``weights.safetensors`` (neural heads), ``single_task``/``multi_task.safetensors`` (``fmt``) or
  ``xgb_task_<t>.ubj`` (XGBoost's native format);
* ``label_scaling.json`` per-task label mean / std (regression) — predictions are un-standardised;
* ``card.json``          the model card (:mod:`fusion.card`).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from fusion.card import CARD_FILE, base_card
from fusion.fusions import FusionPreprocessor
from fusion.predictors import PREDICTORS
from fusion.predictors.base import check_range, parse_params
from fusion.scaling import LabelScaler

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
FUSION_FILE = "fusion.safetensors"
LABELS_FILE = "label_scaling.json"
FORMAT_VERSION = 1
TASK_TYPES = ("classification", "regression")
FUSION_HPARAMS = ("n_components", "reduction")  # consumed by the fusion step, not by the predictor


class TrainedModel:
    """``predict(views) -> [N, T]``: probabilities (classification), label units (regression)."""

    def __init__(
        self,
        head: str,
        tasks: list[str],
        task_types: list[str],
        preprocessor: FusionPreprocessor,
        predictor,
        label_scaler: LabelScaler,
        hparams: dict,
        info: dict | None = None,
    ) -> None:
        self.head = head
        self.tasks = list(tasks)
        self.task_types = list(task_types)
        self.preprocessor = preprocessor
        self.predictor = predictor
        self.label_scaler = label_scaler
        self.hparams = hparams
        self.info = info or {}

    @property
    def fusion(self) -> str:
        return self.preprocessor.fusion

    @property
    def views(self) -> tuple[str, ...]:
        return self.preprocessor.views

    def predict(self, views: dict[str, np.ndarray], batch_size: int = 8192) -> np.ndarray:
        """Row-aligned predictions; a row with any non-finite value in a needed view gives a NaN row."""
        self.preprocessor.check(views)
        n = len(views[self.views[0]])
        ok = np.ones(n, dtype=bool)
        for v in self.views:
            ok &= np.isfinite(views[v]).all(axis=1)
        out = np.full((n, len(self.tasks)), np.nan, dtype=np.float32)
        idx = np.flatnonzero(ok)
        for start in range(0, len(idx), batch_size):
            part = idx[start : start + batch_size]
            data = self.preprocessor.transform(
                {v: np.asarray(views[v][part], dtype=np.float32) for v in self.views}
            )
            out[part] = self.label_scaler.inverse(self.predictor.predict(data))
        return out

    def save(self, directory: str | Path, card: dict | None = None) -> Path:
        """Write the artifact into ``directory`` (replaced atomically); ``card`` fields extend the card."""
        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        predictor_config = self.predictor.save(tmp)
        save_file(
            {k: np.ascontiguousarray(v) for k, v in self.preprocessor.arrays().items()},
            str(tmp / FUSION_FILE),
        )
        config = {
            "format_version": FORMAT_VERSION,
            "head": self.head,
            "tasks": self.tasks,
            "task_types": self.task_types,
            "hyperparameters": self.hparams,
            "preprocessor": self.preprocessor.config(),
            "predictor": predictor_config,
        }
        (tmp / MODEL_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / LABELS_FILE).write_text(
            json.dumps(self.label_scaler.to_json(self.tasks, self.task_types), indent=2) + "\n"
        )
        full_card = {**base_card(self), **(card or {})}
        (tmp / CARD_FILE).write_text(json.dumps(full_card, indent=2, default=_json_default) + "\n")
        check_replaceable(directory)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
        log.info("head saved", extra={"path": str(directory), "head": self.head, "fusion": self.fusion})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TrainedModel:
        directory = Path(directory)
        path = directory / MODEL_FILE
        if not path.exists():
            raise FileNotFoundError(f"no head artifact at {directory} (missing {MODEL_FILE})")
        config = json.loads(path.read_text())
        head = config["head"]
        if head not in PREDICTORS:
            raise ValueError(f"{path}: unknown head kind {head!r}")
        pre = FusionPreprocessor.from_saved(config["preprocessor"], load_file(str(directory / FUSION_FILE)))
        predictor_cls = PREDICTORS[head]
        params = parse_params(
            predictor_cls.params_cls,
            {k: v for k, v in config["hyperparameters"].items() if k not in FUSION_HPARAMS},
            head,
        )
        predictor = predictor_cls(pre, config["task_types"], params)
        predictor.load(directory, config["predictor"])
        scaler = LabelScaler.from_json(json.loads((directory / LABELS_FILE).read_text()), config["tasks"])
        return cls(
            head, config["tasks"], config["task_types"], pre, predictor, scaler, config["hyperparameters"]
        )


def check_replaceable(directory: Path) -> None:
    """A head is saved over ``directory`` only when it is missing, empty or a head (it holds the card):
    anything else (e.g. the folder holding the training data) raises :class:`FileExistsError`."""
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file, not a head directory; refusing to replace it")
    if directory.exists() and not (directory / CARD_FILE).exists() and any(directory.iterdir()):
        raise FileExistsError(
            f"{directory} exists and is not a head directory (no {CARD_FILE}); refusing to replace it"
        )


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def split_hparams(head: str, fusion: str, hparams: dict) -> tuple[dict, Any]:
    """``hparams`` checked and split into the fusion's arguments (``n_components`` and ``reduction`` of
    ``concat_reduce``; other fusions take none) and the head's parameter dataclass. A ``ValueError``
    names an unknown head, an unknown parameter or a value of the wrong type or range; cheap, so callers
    run it before embedding anything."""
    if head not in PREDICTORS:
        raise ValueError(f"head must be one of {list(PREDICTORS)}, got {head!r}")
    takes = FUSION_HPARAMS if fusion == "concat_reduce" else ()
    fusion_args = {k: hparams[k] for k in takes if k in hparams}
    for name, value in fusion_args.items():
        if name == "n_components" and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"hyper-parameter 'n_components' of fusion {fusion!r} must be int, "
                             f"got {value!r}")
        check_range(name, value, f"fusion {fusion!r}")
    rest = {k: v for k, v in hparams.items() if k not in takes}
    return fusion_args, parse_params(PREDICTORS[head].params_cls, rest, head)


def build_model(
    head: str,
    fusion: str,
    tasks: list[str],
    task_types: list[str],
    views: dict[str, np.ndarray],
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    seed: int,
    groups: np.ndarray | None,
    hparams: dict,
) -> TrainedModel:
    """Fit fusion (train rows only), label scaling (train rows only) and the predictor."""
    fusion_args, params = split_hparams(head, fusion, hparams)  # (also refuses an unknown head)
    predictor_cls = PREDICTORS[head]
    pre = FusionPreprocessor.fit(views, train_idx, fusion, seed=seed, **fusion_args)
    if pre.reducer is not None:
        fusion_args["n_components"] = pre.reducer.out_dim  # as used: at most the rows and columns there are
    scaler = LabelScaler.fit(y[train_idx], task_types)
    y_scaled = scaler.transform(y)
    predictor = predictor_cls(pre, task_types, params)
    info = predictor.fit(pre.transform(views), y_scaled, train_idx, val_idx, seed, groups)
    recorded = {**asdict(params), **fusion_args}
    return TrainedModel(head, tasks, task_types, pre, predictor, scaler, recorded, info)
