"""The benchmark / default-head data sets (files in the shared data folder) and cached embeddings.

Each set's definition (:data:`SPECS`: a CSV in ``MOLFUSION_DATA_DIR``, its SMILES column, label
columns, task type and label units) is its entry in the shipped catalog
(:class:`grouping.catalog.CatalogEntry`), the one place data sets are described.
:func:`load_dataset` returns the rows whose SMILES parse (and that carry at least one label),
optionally a deterministic subsample (``max_rows``, seeded permutation) for the largest sets.
:func:`cached_views` embeds them once per encoder version into ``.npy`` files.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from grouping.catalog import CatalogEntry, load_catalog, resolve_label_columns
from models.chemistry import parse_smiles

log = logging.getLogger(__name__)


# The MoleculeNet sets the heads are trained and benchmarked on; their definitions (file, SMILES column,
# labels, task type, units) are the shipped catalog's entries (grouping/catalog/catalog.json), so each
# set is described once.
HEAD_SETS = (
    "bbbp", "bace", "clintox", "sider", "tox21", "hiv", "esol", "freesolv", "lipophilicity", "toxcast", "qm9"
)
SPECS: dict[str, CatalogEntry] = {e.name: e for e in load_catalog(extra=None) if e.name in HEAD_SETS}


@dataclass
class Dataset:
    name: str  # the spec name, or ``<name>_sub<N>`` for a subsample
    spec: CatalogEntry
    smiles: list[str]
    y: np.ndarray  # [N, T], NaN = missing
    tasks: list[str]
    source_rows: np.ndarray  # row index in the CSV of every kept molecule
    n_csv_rows: int
    n_invalid: int  # SMILES that do not parse (dropped)
    n_usable: int  # parseable, labelled rows before any subsampling

    @property
    def task_types(self) -> list[str]:
        return [self.spec.task_type] * len(self.tasks)

    @property
    def units(self) -> list[str | None]:
        return [self.spec.unit_of(t) for t in self.tasks]


def load_dataset(name: str, data_dir: Path, max_rows: int | None = None, seed: int = 0) -> Dataset:
    spec = SPECS[name]
    frame = pd.read_csv(data_dir / spec.file)
    tasks = resolve_label_columns(spec, list(frame.columns))
    y = frame[tasks].to_numpy(dtype=np.float32)
    smiles = frame[spec.smiles_column].astype(str).tolist()
    parses = np.array([parse_smiles(s).ok for s in smiles])
    keep = np.flatnonzero(parses & ~np.isnan(y).all(axis=1))
    n_usable = len(keep)
    label = name
    if max_rows is not None and len(keep) > max_rows:
        keep = np.sort(np.random.default_rng(seed).permutation(keep)[:max_rows])
        label = f"{name}_sub{max_rows}"
    return Dataset(
        label,
        spec,
        [smiles[i] for i in keep],
        y[keep],
        tasks,
        keep,
        len(frame),
        int((~parses).sum()),
        n_usable,
    )


def cached_views(dataset: Dataset, embedder, cache_dir: Path, progress: bool = True) -> dict[str, np.ndarray]:
    """``{"smiles": [N, d_s], "graph": [N, d_g]}`` for the dataset's molecules, embedded once per vector
    version (``Embedder.vector_versions``) and stored as ``<cache_dir>/<dataset>/<view>-<version>.npy``
    (only missing views are computed; ``meta-<view>-<version>.json`` records the rows and the seconds it
    took)."""
    from fusion.training import embed_smiles

    folder = cache_dir / dataset.name
    paths = {v: folder / f"{v}-{embedder.vector_versions[v]}.npy" for v in ("smiles", "graph")}
    views = {v: np.load(p) for v, p in paths.items() if p.exists()}
    views = {v: a for v, a in views.items() if len(a) == len(dataset.smiles)}
    missing = tuple(v for v in paths if v not in views)
    if not missing:
        return views
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    fresh, errors = embed_smiles(embedder, dataset.smiles, chunk_size=1000, progress=progress, views=missing)
    seconds = time.perf_counter() - started
    bad = [i for i, e in enumerate(errors) if e is not None]
    if bad:
        raise ValueError(
            f"{dataset.name}: {len(bad)} molecules failed to embed (first: {dataset.smiles[bad[0]]!r})"
        )
    for v in missing:
        np.save(paths[v], fresh[v])
        meta = {
            "view": v,
            "version": embedder.vector_versions[v],
            "rows": len(dataset.smiles),
            "views_embedded": missing,
            "seconds": seconds,
            "device": str(embedder.device),
        }
        (folder / f"meta-{v}-{embedder.vector_versions[v]}.json").write_text(json.dumps(meta))
    return {**views, **fresh}
