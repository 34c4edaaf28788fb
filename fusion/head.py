"""A head as served: a trained artifact directory plus its card, with the names the service needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fusion.card import CARD_FILE
from fusion.model import TrainedModel


class Head:
    """A loaded head. ``predict`` takes encoder-view vectors and returns ``[N, T]`` floats:
    probabilities for classification tasks, label units for regression tasks, and a NaN row wherever
    an input row is NaN (an invalid molecule)."""

    def __init__(self, model: TrainedModel, card: dict, path: Path | None = None) -> None:
        self.model = model
        self.card = card
        self.path = path
        self.name: str = card.get("name") or (path.name if path is not None else model.head)
        self.tasks: list[str] = list(model.tasks)
        self.task_types: list[str] = list(model.task_types)
        units = card.get("units") or [None] * len(self.tasks)
        self.units: list[str | None] = list(units)
        self.views: tuple[str, ...] = tuple(model.views)
        self.encoder_versions: dict[str, str] = dict(card.get("encoder_versions") or {})

    def predict(self, vectors: dict[str, np.ndarray]) -> np.ndarray:
        return self.model.predict({v: vectors[v] for v in self.views if v in vectors})

    def __repr__(self) -> str:
        return f"Head(name={self.name!r}, tasks={self.tasks}, views={self.views})"


def read_card(directory: str | Path) -> dict:
    path = Path(directory) / CARD_FILE
    if not path.exists():
        raise FileNotFoundError(f"no head card at {path}")
    return json.loads(path.read_text())


def load_head(directory: str | Path) -> Head:
    directory = Path(directory)
    return Head(TrainedModel.load(directory), read_card(directory), directory)
