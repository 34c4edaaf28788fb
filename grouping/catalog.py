"""The auxiliary-data catalog: which labelled data sets a recommendation may draw from.

A catalog entry names a CSV (relative to the catalog folder, or absolute for user-registered sets),
its SMILES column, its label columns and one task type for all of them, plus an optional row filter
(``{"column": "Species", "equals": "Homo sapiens"}``). The shipped definition lives in
``grouping/catalog/catalog.json``; users add their own sets to a JSON file of the same shape
(:func:`register_dataset`), which is merged over the shipped one (a user name may not shadow a shipped
name).

>>> entries = load_catalog(extra=None)
>>> [e.name for e in entries][:3]
['bbbp', 'bace', 'clintox']
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from models.tabular import MAX_ABS_LABEL

log = logging.getLogger(__name__)

SHIPPED_CATALOG = Path(__file__).resolve().parent / "catalog" / "catalog.json"
TaskType = Literal["classification", "regression"]
TASK_TYPES: tuple[str, ...] = ("classification", "regression")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
UNNAMED_COLUMN = re.compile(r"^Unnamed: \d+(\.\d+)*$")  # pandas' names for columns with an empty header
MIN_USABLE_ROWS = 50  # a registered set needs this many rows with a valid SMILES and a label (as a target)


class CatalogError(ValueError):
    """A malformed catalog entry or a data file that does not match its entry; the message names it."""


class NameTakenError(CatalogError):
    """A registration under a name the catalog already holds."""


@dataclass(frozen=True)
class RowFilter:
    """Keep only rows whose ``column`` equals ``equals`` (compared as text)."""

    column: str
    equals: str


@dataclass(frozen=True)
class CatalogEntry:
    """One auxiliary data set: a CSV, its SMILES column, label columns and their task type."""

    name: str
    file: str
    smiles_column: str
    label_columns: tuple[str, ...] | None  # None: every column but the SMILES column and exclude_columns
    task_type: TaskType
    exclude_columns: tuple[str, ...] = ()
    row_filter: RowFilter | None = None
    notes: str = ""
    overlaps: dict[str, str] = field(default_factory=dict)
    source: str = "shipped"  # "shipped" or "user"
    units: str | dict[str, str] | None = None  # one unit for every label, or one per label column

    def unit_of(self, column: str) -> str | None:
        return self.units.get(column) if isinstance(self.units, dict) else self.units

    def path(self, catalog_dir: Path) -> Path:
        p = Path(self.file)
        return p if p.is_absolute() else catalog_dir / p

    def to_json(self) -> dict:
        out = asdict(self)
        out["label_columns"] = list(self.label_columns) if self.label_columns is not None else None
        out["exclude_columns"] = list(self.exclude_columns)
        return out


@dataclass
class LoadedDataset:
    """A catalog set read into memory: SMILES and a float label matrix (NaN = missing label)."""

    name: str
    smiles: list[str]
    labels: np.ndarray  # float32 [N, T]
    label_columns: list[str]
    task_type: TaskType
    total_rows: int  # rows after the row filter, before subsampling

    @property
    def task_types(self) -> list[str]:
        return [self.task_type] * len(self.label_columns)


def parse_entry(raw: dict, source: str = "shipped") -> CatalogEntry:
    """Validate one JSON entry (names the offending field in the error)."""
    try:
        name = str(raw["name"])
        file = str(raw["file"])
        smiles_column = str(raw["smiles_column"])
        task_type = str(raw["task_type"])
    except KeyError as exc:
        raise CatalogError(f"catalog entry {raw.get('name', raw)!r} lacks field {exc.args[0]!r}") from exc
    if not _NAME.match(name):
        raise CatalogError(
            f"catalog name {name!r} must be lower-case letters, digits, '_', '-', '.' (<= 64)"
        )
    if task_type not in TASK_TYPES:
        raise CatalogError(f"catalog entry {name!r}: task_type {task_type!r} not in {list(TASK_TYPES)}")
    labels = raw.get("label_columns")
    if labels is not None and (not isinstance(labels, list) or not labels):
        raise CatalogError(f"catalog entry {name!r}: label_columns must be a non-empty list or null")
    flt = raw.get("row_filter")
    row_filter = None
    if flt is not None:
        if not isinstance(flt, dict) or "column" not in flt or "equals" not in flt:
            raise CatalogError(f"catalog entry {name!r}: row_filter needs 'column' and 'equals'")
        row_filter = RowFilter(str(flt["column"]), str(flt["equals"]))
    units = raw.get("units")
    if units is not None and not isinstance(units, str | dict):
        raise CatalogError(f"catalog entry {name!r}: units must be a string, an object or null")
    return CatalogEntry(
        name=name,
        file=file,
        smiles_column=smiles_column,
        label_columns=tuple(str(c) for c in labels) if labels is not None else None,
        task_type=task_type,  # type: ignore[arg-type]
        exclude_columns=tuple(str(c) for c in raw.get("exclude_columns", [])),
        row_filter=row_filter,
        notes=str(raw.get("notes", "")),
        overlaps={str(k): str(v) for k, v in (raw.get("overlaps") or {}).items()},
        source=source,
        units={str(k): str(v) for k, v in units.items()} if isinstance(units, dict) else units,
    )


def _read_entries(path: Path, source: str) -> list[CatalogEntry]:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CatalogError(f"catalog file {path} is not valid JSON: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"catalog file {path} is not readable: {exc}") from exc
    datasets = doc.get("datasets", []) if isinstance(doc, dict) else None
    if not isinstance(datasets, list) or not all(isinstance(raw, dict) for raw in datasets):
        raise CatalogError(f"catalog file {path} must be a JSON object whose 'datasets' is a list of objects")
    return [parse_entry(raw, source) for raw in datasets]


def load_catalog(extra: Path | None = None, shipped: Path = SHIPPED_CATALOG) -> list[CatalogEntry]:
    """Shipped entries followed by the user-registered ones in ``extra`` (when that file exists)."""
    entries = _read_entries(shipped, "shipped")
    names = {e.name for e in entries}
    if extra is not None and extra.exists():
        for entry in _read_entries(extra, "user"):
            if entry.name in names:
                raise CatalogError(f"user catalog {extra} redefines data set {entry.name!r}")
            names.add(entry.name)
            entries.append(entry)
    return entries


def without(entries: list[CatalogEntry], exclude: Sequence[str]) -> list[CatalogEntry]:
    """``entries`` minus the named sets; :class:`CatalogError` for a name that is not in the catalog, or
    when nothing is left."""
    names = [e.name for e in entries]
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise CatalogError(f"cannot exclude {unknown}: not in the catalog (data sets: {names})")
    left = [e for e in entries if e.name not in set(exclude)]
    if not left:
        raise CatalogError("the exclusions leave no auxiliary data set to recommend from")
    return left


@contextlib.contextmanager
def _locked(extra: Path) -> Iterator[None]:
    """An exclusive lock on the user catalog (a ``.lock`` file beside it), across processes of a host."""
    extra.parent.mkdir(parents=True, exist_ok=True)
    with open(extra.with_name(extra.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def register_dataset(extra: Path, entry: CatalogEntry, catalog_dir: Path) -> CatalogEntry:
    """Validate ``entry`` against its file and add it to the user catalog JSON ``extra``.

    The file is checked first (it is read whole); the name check, read and atomic rewrite of ``extra``
    happen under a lock, so concurrent registrations neither lose entries nor register a name twice.
    """
    if any(e.name == entry.name for e in load_catalog(extra)):  # fail fast, before reading the file
        raise NameTakenError(f"a data set named {entry.name!r} is already in the catalog")
    check_usable(entry, catalog_dir)  # reads the file through load_dataset, which checks its columns too
    with _locked(extra):
        if any(e.name == entry.name for e in load_catalog(extra)):
            raise NameTakenError(f"a data set named {entry.name!r} is already in the catalog")
        user = _read_entries(extra, "user") if extra.exists() else []
        user.append(entry)
        tmp = extra.with_name(f"{extra.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        doc = {
            "version": 1,
            "datasets": [{k: v for k, v in e.to_json().items() if k != "source"} for e in user],
        }
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(extra)
    log.info("catalog set registered", extra={"dataset": entry.name, "file": entry.file})
    return entry


def _header(path: Path) -> list[str]:
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise CatalogError(f"{path} is not a readable CSV: {exc}") from exc


def resolve_label_columns(entry: CatalogEntry, columns: list[str]) -> list[str]:
    if entry.label_columns is not None:
        return list(entry.label_columns)
    skip = {entry.smiles_column, *entry.exclude_columns}
    if entry.row_filter is not None:
        skip.add(entry.row_filter.column)
    return [c for c in columns if c not in skip and not UNNAMED_COLUMN.match(c)]


def existing_file(entry: CatalogEntry, catalog_dir: Path) -> Path:
    """The entry's file under ``catalog_dir``; :class:`CatalogError` when it is not there."""
    path = entry.path(catalog_dir)
    if not path.exists():
        raise CatalogError(f"{entry.name}: file not found: {path}")
    return path


def _checked_columns(entry: CatalogEntry, catalog_dir: Path) -> tuple[Path, list[str]]:
    """The entry's file and its header, checked to hold the named columns (:class:`CatalogError`)."""
    path = existing_file(entry, catalog_dir)
    columns = _header(path)
    wanted = [entry.smiles_column, *(entry.label_columns or [])]
    if entry.row_filter is not None:
        wanted.append(entry.row_filter.column)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise CatalogError(f"{entry.name}: columns {missing} not in {path.name} (columns: {columns[:20]})")
    labels = resolve_label_columns(entry, columns)
    if not labels:
        raise CatalogError(f"{entry.name}: no label columns in {path.name}")
    if entry.smiles_column in labels:
        raise CatalogError(f"{entry.name}: the SMILES column {entry.smiles_column!r} cannot be a label")
    return path, columns


def check_entry(entry: CatalogEntry, catalog_dir: Path) -> dict:
    """Check that the file exists and holds the named columns; returns a status dict (raises on error)."""
    path, columns = _checked_columns(entry, catalog_dir)
    return {
        "dataset": entry.name,
        "file": str(path),
        "tasks": len(resolve_label_columns(entry, columns)),
        "task_type": entry.task_type,
        "bytes": path.stat().st_size,
    }


def check_usable(entry: CatalogEntry, catalog_dir: Path, min_rows: int = MIN_USABLE_ROWS) -> int:
    """Read the whole set and parse its SMILES: the number of usable rows (valid SMILES + a label).

    :class:`CatalogError` when fewer than ``min_rows`` are usable (or :func:`load_dataset` refuses it).
    """
    from models.chemistry import parse_smiles

    data = load_dataset(entry, catalog_dir)
    usable = sum(parse_smiles(s).error is None for s in data.smiles)
    if usable < min_rows:
        raise CatalogError(
            f"{entry.name}: only {usable} of {data.total_rows} labelled rows have a valid SMILES "
            f"(need at least {min_rows})"
        )
    return usable


_CHECKED: dict[tuple, dict] = {}  # check_catalog's rows of unchanged files (the API lists the catalog often)
_CHECKED_MAX = 4096


def _file_state(entry: CatalogEntry, catalog_dir: Path) -> tuple | None:
    """What a check of ``entry`` depends on: the entry and its file's path, inode, size, modification and
    status-change times (a chmod changes the latter; ``None`` when the file cannot be stat'ed: then it is
    checked, and the check reports why)."""
    path = entry.path(catalog_dir)
    try:
        stat = path.stat()
    except OSError:
        return None
    entry_json = json.dumps(entry.to_json(), sort_keys=True)
    return entry_json, str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def check_catalog(entries: list[CatalogEntry], catalog_dir: Path) -> list[dict]:
    """One status row per entry: ``ok`` with task count, labelled rows and size, or ``error`` with the
    reason. Every file is read whole (labels as :func:`load_dataset` reads them; SMILES are not parsed);
    a file unchanged since its last check (:func:`_file_state`) is not read again."""
    rows = []
    for entry in entries:
        state = _file_state(entry, catalog_dir)
        known = _CHECKED.get(state) if state is not None else None
        if known is not None:
            rows.append(dict(known))
            continue
        try:
            status = check_entry(entry, catalog_dir)
            labelled = load_dataset(entry, catalog_dir).total_rows
            if labelled < MIN_USABLE_ROWS:
                raise CatalogError(f"{entry.name}: only {labelled} labelled rows (need {MIN_USABLE_ROWS})")
            row = {"status": "ok", "source": entry.source, **status, "labelled_rows": labelled}
        except CatalogError as exc:
            row = {"dataset": entry.name, "status": "error", "source": entry.source, "error": str(exc)}
        if state is not None and state == _file_state(entry, catalog_dir):  # not changed while read
            if len(_CHECKED) >= _CHECKED_MAX:
                _CHECKED.clear()
            _CHECKED[state] = dict(row)
        rows.append(row)
    return rows


def load_dataset(
    entry: CatalogEntry, catalog_dir: Path, max_rows: int | None = None, seed: int = 0
) -> LoadedDataset:
    """Read a catalog set; with ``max_rows``, a deterministic uniform subsample (``seed``) of that size.

    Label cells that are empty, not numbers or beyond ±``MAX_ABS_LABEL`` become NaN; rows without any
    label are dropped. :class:`CatalogError` when the file no longer matches the entry (columns, readability),
    when a classification label is not 0/1, or when no labelled row is left.
    """
    path, columns = _checked_columns(entry, catalog_dir)
    labels = resolve_label_columns(entry, columns)
    usecols = [entry.smiles_column, *labels] + ([entry.row_filter.column] if entry.row_filter else [])
    try:
        df = pd.read_csv(path, usecols=list(dict.fromkeys(usecols)), low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise CatalogError(f"{entry.name}: {path.name} is not a readable CSV: {exc}") from exc
    if entry.row_filter is not None:
        df = df[df[entry.row_filter.column].astype(str) == entry.row_filter.equals]
    y64 = df[labels].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    y64[np.abs(y64) > MAX_ABS_LABEL] = np.nan  # inf and absurd magnitudes: missing
    y = y64.astype(np.float32)
    if entry.task_type == "classification":
        present = y[~np.isnan(y)]
        if not np.isin(present, (0.0, 1.0)).all():
            odd = present[~np.isin(present, (0.0, 1.0))][0]
            raise CatalogError(f"{entry.name}: classification labels must be 0/1; found {odd:g}")
    empty = [c for j, c in enumerate(labels) if np.isnan(y[:, j]).all()]
    if empty and len(empty) < len(labels):  # (no number in any column is reported just below)
        raise CatalogError(
            f"{entry.name}: label column(s) {empty[:10]} hold no number (within ±{MAX_ABS_LABEL:g})"
        )
    keep = ~np.isnan(y).all(axis=1) & df[entry.smiles_column].notna().to_numpy()
    if not keep.any():
        raise CatalogError(f"{entry.name}: no row with a SMILES and a numeric label in {path.name}")
    smiles = df[entry.smiles_column].astype(str).to_numpy()[keep]
    y = y[keep]
    total = len(smiles)
    if max_rows is not None and total > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(total, size=max_rows, replace=False))
        smiles, y = smiles[idx], y[idx]
    return LoadedDataset(entry.name, smiles.tolist(), y, labels, entry.task_type, total)
