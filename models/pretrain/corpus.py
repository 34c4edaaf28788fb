"""Pretraining corpus: canonicalise, de-duplicate and remove every benchmark molecule.

A corpus molecule is removed when its canonical SMILES (stereo kept, :func:`models.chemistry.parse_smiles`
with the default policy) *or* its stereo-free canonical SMILES equals that of any molecule in any
data set listed in the data folder's ``MANIFEST.tsv`` outside ``pretrain/``. Comparing the
stereo-free forms as well catches benchmark molecules whose stereo-annotated SMILES would otherwise
slip past an exact match (MOSES itself carries no stereo).

The filtered corpus is written as a gzipped one-column CSV (``SMILES``) of canonical SMILES, the
form the encoders see at inference time.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from rdkit import Chem

from models.chemistry import parse_smiles

log = logging.getLogger(__name__)

PRETRAIN_FOLDER = "pretrain"
CORPUS_COLUMN = "SMILES"
_CHUNK = 4096
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MoleculeKeys:
    """Canonical SMILES with and without stereo; ``None`` for unparsable input."""

    canonical: str | None
    flat: str | None


@dataclass
class FilterReport:
    """Counts of one filtering run (written beside the corpus as JSON by the CLI)."""

    corpus_rows: int
    invalid: int
    duplicates: int
    removed_exact: int
    removed_stereo_free: int
    kept: int
    reference_molecules: int
    reference_files: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def molecule_keys(smiles: object) -> MoleculeKeys:
    parsed = parse_smiles(smiles)
    if parsed.mol is None:
        return MoleculeKeys(None, None)
    return MoleculeKeys(parsed.canonical, Chem.MolToSmiles(parsed.mol, isomericSmiles=False))


def _keys_chunk(chunk: list[object]) -> list[MoleculeKeys]:
    return [molecule_keys(s) for s in chunk]


def map_chunks(
    fn: Callable[[list], T], items: Sequence, workers: int = 0, chunk_size: int = _CHUNK
) -> list[T]:
    """``fn`` of every consecutive chunk of ``items``, in order, over ``workers`` processes (0 = all
    cores); inputs shorter than two chunks stay in the calling process, as one chunk."""
    n_workers = workers or (os.cpu_count() or 1)
    if n_workers <= 1 or len(items) < 2 * chunk_size:
        return [fn(list(items))]
    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    with ProcessPoolExecutor(max_workers=n_workers) as pool:
        return list(pool.map(fn, chunks))


def keys_for(smiles: Sequence[object], workers: int = 0) -> list[MoleculeKeys]:
    """Row-aligned :class:`MoleculeKeys`, computed in ``workers`` processes (0 = all cores)."""
    return [keys for part in map_chunks(_keys_chunk, smiles, workers) for keys in part]


def reference_tables(data_dir: Path) -> list[tuple[Path, str]]:
    """``(file, smiles column)`` of every data set in ``MANIFEST.tsv`` outside the pretraining folder."""
    import pandas as pd

    manifest = pd.read_csv(data_dir / "MANIFEST.tsv", sep="\t")
    tables = []
    for row in manifest.itertuples(index=False):
        if str(row.file).split("/")[0] == PRETRAIN_FOLDER:
            continue
        tables.append((data_dir / str(row.file), str(row.smiles_col)))
    return tables


def reference_smiles(data_dir: Path) -> tuple[list[str], int]:
    """Unique SMILES of every benchmark data set (see :func:`reference_tables`) and the file count."""
    import pandas as pd

    tables = reference_tables(data_dir)
    smiles: list[str] = []
    for path, column in tables:
        frame = pd.read_csv(path, usecols=[column], dtype={column: str})
        smiles.extend(frame[column].dropna().tolist())
    return list(dict.fromkeys(smiles)), len(tables)


def reference_keys(smiles: Sequence[str], workers: int = 0) -> tuple[set[str], set[str]]:
    """Canonical and stereo-free canonical SMILES of the reference (benchmark) molecules."""
    keys = keys_for(smiles, workers)
    return {k.canonical for k in keys if k.canonical}, {k.flat for k in keys if k.flat}


def read_corpus(path: Path, column: str = CORPUS_COLUMN, limit: int | None = None) -> list[str]:
    """Non-empty values of ``column`` from a (gzipped) CSV, at most ``limit`` rows (csv module only, so
    the GPU host needs no pandas). Header names and cells are read without surrounding spaces, and a
    UTF-8 byte-order mark (Excel's "CSV UTF-8") is not part of the first name."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path} is empty")
            names = [name.strip() for name in header]
            if column.strip() not in names:
                raise ValueError(f"{path}: no column {column!r} (columns: {names})")
            j = names.index(column.strip())
            out: list[str] = []
            for row in reader:
                if limit is not None and len(out) >= limit:
                    break
                value = row[j].strip() if len(row) > j else ""
                if value:
                    out.append(value)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:  # a folder, bad gzip, binary data
        hint = " (is it gzip-compressed? name it .gz)" if isinstance(exc, UnicodeDecodeError) else ""
        raise ValueError(f"{path} is not a readable CSV{hint}: {exc}") from exc
    if not out:
        raise ValueError(f"{path}: no SMILES in column {column!r}")
    return out


def write_corpus(smiles: Iterable[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([CORPUS_COLUMN])
        writer.writerows([s] for s in smiles)


def filter_corpus(
    corpus: Sequence[str], exact: set[str], flat: set[str], workers: int = 0
) -> tuple[list[str], FilterReport]:
    """Canonicalise ``corpus``; drop invalid rows, duplicates and molecules found in the references."""
    keys = keys_for(corpus, workers)
    kept: list[str] = []
    seen: set[str] = set()
    invalid = duplicates = removed_exact = removed_flat = 0
    for key in keys:
        if key.canonical is None or key.flat is None:
            invalid += 1
        elif key.canonical in exact:
            removed_exact += 1
        elif key.flat in flat:
            removed_flat += 1
        elif key.canonical in seen:
            duplicates += 1
        else:
            seen.add(key.canonical)
            kept.append(key.canonical)
    report = FilterReport(
        corpus_rows=len(corpus), invalid=invalid, duplicates=duplicates, removed_exact=removed_exact,
        removed_stereo_free=removed_flat, kept=len(kept), reference_molecules=len(exact), reference_files=0,
    )
    return kept, report


def build_filtered_corpus(
    corpus_path: Path, references: Sequence[str], out_path: Path, workers: int = 0, limit: int | None = None,
    reference_files: int = 0,
) -> FilterReport:
    """Filter ``corpus_path`` against the ``references`` SMILES and write it; returns the counts."""
    exact, flat = reference_keys(references, workers)
    log.info("benchmark molecules collected", extra={"molecules": len(exact), "files": reference_files})
    kept, report = filter_corpus(read_corpus(corpus_path, limit=limit), exact, flat, workers)
    report.reference_files = reference_files
    write_corpus(kept, out_path)
    log.info("corpus filtered", extra=report.as_dict())
    return report
