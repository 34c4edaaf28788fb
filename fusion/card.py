"""The model card (``card.json``) written next to every head artifact.

Fields: ``name``, ``tasks``, ``task_types``, ``units``, ``head``, ``fusion``, ``views``,
``hyperparameters``, ``encoder_versions`` (the encoders whose embeddings the head was trained on; a
served head is checked against them), ``vector_versions`` (the same, with the featurizer revision of
the graph vectors: ``Embedder.vector_versions``), ``training_data`` (file name, sha256, rows),
``split``, ``seeds``, ``selected_seed``, ``metrics`` (per split: mean ± std over seeds and every seed's
values) and ``format_version``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusion.model import TrainedModel

CARD_FILE = "card.json"


def base_card(model: TrainedModel) -> dict:
    """The fields every card has, from the model itself (callers add provenance and metrics)."""
    from fusion.model import FORMAT_VERSION

    return {
        "name": None,
        "tasks": model.tasks,
        "task_types": model.task_types,
        "units": [None] * len(model.tasks),
        "head": model.head,
        "fusion": model.fusion,
        "views": list(model.views),
        "hyperparameters": model.hparams,
        "encoder_versions": {},
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

