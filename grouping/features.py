"""Per-molecule features for grouping: fused embeddings (the service's :class:`~models.embedder.Embedder`)
and Morgan fingerprints, with an on-disk cache for catalog sets.

Catalog sets are embedded once per vector version pair and subsample: ``<cache>/<name>-<key>.npz``
holds canonical SMILES, labels, the fused embedding matrix and packed fingerprint bits, where ``key``
hashes ``Embedder.vector_versions`` (encoder versions and featurizer revision), the file's size and
mtime, the subsample size and its seed. Rows whose SMILES the embedder rejects are dropped before
caching.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from grouping.catalog import CatalogEntry, CatalogError, check_entry, load_dataset
from models.tabular import MAX_ABS_LABEL

log = logging.getLogger(__name__)

FP_BITS = 1024
FP_RADIUS = 2


@dataclass
class SetFeatures:
    """One data set's valid molecules with labels and features, rows aligned."""

    name: str
    smiles: list[str]  # canonical
    labels: np.ndarray  # float32 [N, T], NaN = missing
    task_types: list[str]
    label_columns: list[str]
    fused: np.ndarray  # float32 [N, D_smiles + D_graph], the embedder's fused view
    fingerprints: np.ndarray  # uint8 [N, FP_BITS] of 0/1
    total_rows: int  # rows in the source before subsampling
    smiles_dim: int  # fused[:, :smiles_dim] is the SMILES view, the rest the graph view

    def views(self) -> dict[str, np.ndarray]:
        """The two encoder views, as the fusion heads take them."""
        return {"smiles": self.fused[:, : self.smiles_dim], "graph": self.fused[:, self.smiles_dim :]}

    def __len__(self) -> int:
        return len(self.smiles)

    def capped(self, max_rows: int | None) -> SetFeatures:
        """A deterministic uniform subsample (seed 0) of at most ``max_rows`` rows, in row order."""
        if max_rows is None or len(self) <= max_rows:
            return self
        return self.subset(np.sort(np.random.default_rng(0).choice(len(self), max_rows, replace=False)))

    def subset(self, idx: np.ndarray) -> SetFeatures:
        return SetFeatures(
            self.name,
            [self.smiles[i] for i in idx],
            self.labels[idx],
            self.task_types,
            self.label_columns,
            self.fused[idx],
            self.fingerprints[idx],
            self.total_rows,
            self.smiles_dim,
        )


def morgan_bits(smiles: list[str]) -> np.ndarray:
    """Morgan (ECFP4-like, radius 2) bit vectors of length ``FP_BITS`` as uint8 0/1."""
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=FP_RADIUS, fpSize=FP_BITS)
    out = np.zeros((len(smiles), FP_BITS), dtype=np.uint8)
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is not None:
            out[i] = gen.GetFingerprintAsNumPy(mol).astype(np.uint8)
    return out


def featurize(
    name: str,
    smiles: list[str],
    labels: np.ndarray,
    task_types: list[str],
    label_columns: list[str],
    embedder,
    total_rows: int | None = None,
    progress: Callable[[float], None] | None = None,
    chunk: int = 1024,
) -> SetFeatures:
    """Embed (fused view) and fingerprint ``smiles``; rows the embedder rejects (or that come out
    non-finite) are dropped. With ``progress``, the rows are embedded ``chunk`` at a time and
    ``progress(fraction done)`` is called after each chunk (it may raise to abort, e.g. on cancel)."""
    n = len(smiles)
    step = chunk if progress is not None else max(n, 1)
    # chunks of similar length, as the encoders' own batches are, so chunking costs no extra padding
    order = np.argsort([len(s) for s in smiles], kind="stable") if step < n else np.arange(n)
    fused = np.empty((n, embedder.dims["fused"]), dtype=np.float32)
    is_valid = np.zeros(n, dtype=bool)
    canonical_all: list[str | None] = [None] * n
    for start in range(0, n, step):
        rows = order[start : start + step]
        out = embedder.embed([smiles[i] for i in rows], views=("fused",))
        fused[rows] = out.vectors["fused"]
        is_valid[rows] = out.valid
        for i, c in zip(rows, out.canonical, strict=True):
            canonical_all[i] = c
        if progress is not None:
            progress(min(start + step, n) / n)
    ok = is_valid & np.isfinite(fused).all(axis=1)
    if (is_valid & ~ok).any():
        log.warning(
            "non-finite embeddings dropped", extra={"dataset": name, "rows": int((is_valid & ~ok).sum())}
        )
    canonical = [c for c, v in zip(canonical_all, ok, strict=True) if v]
    return SetFeatures(
        name,
        canonical,
        labels[ok],
        list(task_types),
        list(label_columns),
        fused[ok],
        morgan_bits(canonical),
        total_rows if total_rows is not None else len(smiles),
        embedder.dims["smiles"],
    )


def cache_key(
    entry: CatalogEntry, catalog_dir: Path, versions: dict[str, str], max_rows: int | None, seed: int
) -> str:
    path = entry.path(catalog_dir)
    stat = path.stat()
    payload = json.dumps(
        {
            "entry": entry.to_json(),
            "size": stat.st_size,
            "mtime": int(stat.st_mtime),
            "versions": versions,
            "max_rows": max_rows,
            "seed": seed,
            "fp": [FP_RADIUS, FP_BITS],
        },
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def _usable(entry: CatalogEntry, feats: SetFeatures) -> SetFeatures:
    """``feats``, checked as :func:`~grouping.catalog.load_dataset` checks a file (also for features cached
    before those checks existed): at least one molecule, classification labels 0/1."""
    if not len(feats):
        raise CatalogError(f"{entry.name}: none of its rows has a valid SMILES and a label")
    out_of_range = np.abs(feats.labels) > MAX_ABS_LABEL  # as load_dataset does (caches from before it)
    feats.labels = np.where(out_of_range, np.nan, feats.labels).astype(np.float32, copy=False)
    present = feats.labels[~np.isnan(feats.labels)]
    if entry.task_type == "classification" and not np.isin(present, (0.0, 1.0)).all():
        raise CatalogError(f"{entry.name}: classification labels must be 0/1")
    return feats


def catalog_features(
    entry: CatalogEntry,
    catalog_dir: Path,
    embedder,
    cache_dir: Path | None,
    max_rows: int | None,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> SetFeatures:
    """Features of one catalog set (subsampled to ``max_rows`` with ``seed``), cached on disk;
    ``progress`` as in :func:`featurize` while a set is embedded (not called on a cache hit)."""
    check_entry(entry, catalog_dir)  # missing file or columns: a CatalogError, before the cache is read
    file = None
    if cache_dir is not None:
        key = cache_key(entry, catalog_dir, embedder.vector_versions, max_rows, seed)
        file = cache_dir / f"{entry.name}-{key}.npz"
        if file.exists():
            with np.load(file, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                cached = SetFeatures(
                    entry.name,
                    z["smiles"].tolist(),
                    z["labels"],
                    meta["task_types"],
                    meta["label_columns"],
                    z["fused"],
                    np.unpackbits(z["fp"], axis=1)[:, :FP_BITS],
                    meta["total_rows"],
                    meta["smiles_dim"],
                )
            return _usable(entry, cached)
    data = load_dataset(entry, catalog_dir, max_rows=max_rows, seed=seed)
    feats = featurize(
        entry.name,
        data.smiles,
        data.labels,
        data.task_types,
        data.label_columns,
        embedder,
        data.total_rows,
        progress=progress,
    )
    _usable(entry, feats)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.name}.{os.getpid()}.{threading.get_ident()}.tmp.npz")  # per writer
        meta = json.dumps(
            {
                "task_types": feats.task_types,
                "label_columns": feats.label_columns,
                "total_rows": feats.total_rows,
                "versions": embedder.vector_versions,
                "smiles_dim": feats.smiles_dim,
            }
        )
        np.savez(
            tmp,
            smiles=np.array(feats.smiles, dtype=str),
            labels=feats.labels,
            fused=feats.fused,
            fp=np.packbits(feats.fingerprints, axis=1),
            meta=np.array(meta),
        )
        tmp.replace(file)
        log.info(
            "catalog features cached", extra={"dataset": entry.name, "rows": len(feats), "file": str(file)}
        )
    return feats


def _within_set(
    progress: Callable[[str, float, int], None], name: str, index: int, total: int
) -> Callable[[float], None]:
    """Progress inside one set as ``progress(name, index + fraction, total)``; its end is reported by the
    caller once the set is done."""

    def report(fraction: float) -> None:
        if fraction < 1.0:
            progress(name, index + fraction, total)

    return report


def load_catalog_features(
    entries: list[CatalogEntry],
    catalog_dir: Path,
    embedder,
    cache_dir: Path | None,
    max_rows: int | None,
    seed: int = 0,
    progress: Callable[[str, float, int], None] | None = None,
    skipped: dict[str, str] | None = None,
) -> dict[str, SetFeatures]:
    """Features for every entry, in order; ``progress(name, done, total)`` after each set, and with a
    fractional ``done`` while a set is being embedded (it may raise to abort).

    A set whose file is missing or unreadable raises :class:`~grouping.catalog.CatalogError`, unless
    ``skipped`` is given: then the set is left out and ``skipped[name]`` says why.
    """
    out: dict[str, SetFeatures] = {}
    for i, entry in enumerate(entries):
        try:
            within = _within_set(progress, entry.name, i, len(entries)) if progress is not None else None
            out[entry.name] = catalog_features(
                entry, catalog_dir, embedder, cache_dir, max_rows, seed, progress=within
            )
        except CatalogError as exc:
            if skipped is None:
                raise
            skipped[entry.name] = str(exc)
            log.warning("catalog set skipped", extra={"dataset": entry.name, "reason": str(exc)})
        if progress is not None:
            progress(entry.name, i + 1, len(entries))
    return out
