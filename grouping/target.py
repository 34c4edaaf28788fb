"""The user's target data set: reading and validating an uploaded CSV (CLI and HTTP share this).

Validation, each failure a :class:`TargetError` naming the field and carrying an HTTP status:

- not a readable CSV (400); more bytes or rows than allowed (413);
- no SMILES column, unknown, repeated or no label column, labels that are not finite numbers, a
  classification column that is not binary or holds one class only, fewer than ``min_rows`` valid rows,
  all SMILES invalid (422).

Rows with an unparsable SMILES or without any label are skipped and counted.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from grouping.catalog import UNNAMED_COLUMN
from models.chemistry import ParsePolicy, parse_smiles
from models.tabular import (
    MAX_ABS_LABEL,
    TableError,
    detect_smiles_column,
    repeated_names,
    repeated_targets,
    without_blank_rows,
)

TASK_TYPE_CHOICES = ("auto", "classification", "regression")


class TargetError(ValueError):
    """Invalid target upload; ``field`` names the offending input and ``status`` is the HTTP code."""

    def __init__(self, message: str, field: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass
class TargetSet:
    """Valid rows of the target: canonical SMILES, labels [N, T] (NaN = missing), one task type per column."""

    name: str
    smiles: list[str]
    labels: np.ndarray
    label_columns: list[str]
    task_types: list[str]
    rows: int  # data rows in the file
    invalid_rows: int  # rows skipped: unparsable SMILES or no label
    invalid_examples: list[dict] = field(default_factory=list)  # first few skipped rows with the reason

    def summary(self) -> dict:
        return {
            "name": self.name,
            "rows": self.rows,
            "valid_rows": len(self.smiles),
            "invalid_rows": self.invalid_rows,
            "label_columns": self.label_columns,
            "task_types": self.task_types,
            "invalid_examples": self.invalid_examples,
        }


def uncompressed_csv(data: bytes, max_bytes: int) -> bytes:
    """An uploaded CSV as plain bytes: a gzip-compressed one is decompressed (at most ``max_bytes``, the
    limit applies to the CSV), anything else is returned as it is."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(max_bytes + 1)
    except (OSError, EOFError) as exc:
        raise TargetError(f"the file is not a readable gzip archive: {exc}", "file", 400) from exc
    if len(out) > max_bytes:
        raise TargetError(f"the decompressed CSV is larger than the limit of {max_bytes} bytes", "file", 413)
    return out


def _header_names(data: bytes) -> list[str]:
    first = data.decode("utf-8-sig", errors="replace").splitlines()[0] if data.strip() else ""
    return [name.strip() for name in next(csv.reader([first]), [])]


def read_csv_bytes(data: bytes, max_bytes: int, max_rows: int) -> pd.DataFrame:
    """Parse a target CSV (plain or gzip-compressed), enforcing the byte and row limits."""
    if len(data) > max_bytes:
        raise TargetError(f"the file is {len(data)} bytes; the limit is {max_bytes}", "file", 413)
    data = uncompressed_csv(data, max_bytes)
    if not data.strip():
        raise TargetError("the file is empty", "file", 400)
    if b"\x00" in data[:4096]:
        raise TargetError("the file is not a CSV (binary content)", "file", 400)
    try:
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise TargetError(f"the file is not a readable CSV: {exc}", "file", 400) from exc
    df = without_blank_rows(df)  # messages name a row by its line in the file: index + 2
    header = _header_names(data)
    repeated = repeated_names(header)
    if repeated:
        raise TargetError(f"column name(s) {repeated} occur more than once in the header", "file", 422)
    if df.shape[1] < 2:
        raise TargetError(
            f"CSV needs a SMILES column and at least one label column; found {list(df.columns)}",
            "file",
            422,
        )
    if df.empty:
        raise TargetError(f"the CSV has a header ({list(df.columns)}) but no data rows", "file", 422)
    if len(df) > max_rows:
        raise TargetError(f"the CSV has {len(df)} rows; the limit is {max_rows}", "file", 413)
    return df


def _label_columns(df: pd.DataFrame, smiles_column: str, targets: list[str] | None) -> list[str]:
    if targets:
        repeated = repeated_targets(targets)
        if repeated:
            raise TargetError(f"label column(s) {repeated} named more than once", "targets")
        missing = [t for t in targets if t not in df.columns]
        if missing:
            raise TargetError(
                f"label column(s) {missing} not in the CSV (columns: {list(df.columns)})", "targets"
            )
        if smiles_column in targets:
            raise TargetError(f"column {smiles_column!r} is the SMILES column, not a label", "targets")
        return targets
    numeric = []
    for col in df.columns:
        if col == smiles_column or UNNAMED_COLUMN.match(str(col)):  # a written-out pandas index is no label
            continue
        values = pd.to_numeric(df[col].replace("", np.nan), errors="coerce")
        if values.notna().any() and values.notna().sum() == (df[col] != "").sum():
            numeric.append(col)
    if not numeric:
        raise TargetError(
            f"no numeric label column found among {list(df.columns)}; name the label columns (targets)",
            "targets",
        )
    return numeric


def _task_type(values: np.ndarray, column: str, requested: str, line: np.ndarray) -> str:
    """``requested``, or for ``auto`` classification when the column holds only 0/1; ``line`` is each
    row's line in the file, for naming the first row that is not 0/1."""
    labelled = ~np.isnan(values)
    odd = labelled & ~np.isin(values, (0.0, 1.0))
    binary = bool(labelled.any()) and not odd.any()
    if requested == "classification" and not binary:
        first = int(np.flatnonzero(odd)[0]) if odd.any() else None
        where = f": row {line[first]} holds {values[first]:g}" if first is not None else ""
        raise TargetError(
            f"label column {column!r} must hold only 0/1 for classification{where}", "task_type"
        )
    if requested == "auto":
        return "classification" if binary else "regression"
    return requested


def parse_target(
    df: pd.DataFrame,
    name: str,
    smiles_column: str | None = None,
    targets: list[str] | None = None,
    task_type: str = "auto",
    min_rows: int = 50,
    policy: ParsePolicy = ParsePolicy(),
) -> TargetSet:
    """Validate a target table and return its valid rows (SMILES canonicalised once here)."""
    if task_type not in TASK_TYPE_CHOICES:
        raise TargetError(f"task_type {task_type!r} not in {list(TASK_TYPE_CHOICES)}", "task_type")
    columns = [str(c) for c in df.columns]
    if smiles_column is not None:
        if smiles_column not in columns:
            raise TargetError(
                f"SMILES column {smiles_column!r} not in the CSV (columns: {columns})", "smiles_column"
            )
    else:
        try:
            smiles_column = detect_smiles_column(columns, df.head(50))
        except TableError as exc:
            raise TargetError(
                str(exc).replace("pass --smiles-column", "name it (smiles_column)"), "smiles_column"
            ) from exc
    labels = _label_columns(df, smiles_column, targets)
    line = df.index.to_numpy() + 2  # each row's line in the file (read_csv_bytes keeps the index)
    y = np.empty((len(df), len(labels)), dtype=np.float32)
    for j, col in enumerate(labels):
        raw = df[col].astype(str).str.strip()
        values = pd.to_numeric(raw.replace("", np.nan), errors="coerce")
        bad = values.isna() & (raw != "") & (raw.str.lower() != "nan")
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise TargetError(
                f"label column {col!r} is not numeric: row {line[first]} holds {raw.iloc[first]!r}", "targets"
            )
        column = values.to_numpy(dtype=np.float64)
        out_of_range = np.abs(column) > MAX_ABS_LABEL  # inf too; NaN compares False
        if out_of_range.any():
            first = int(np.flatnonzero(out_of_range)[0])
            raise TargetError(
                f"label column {col!r} must hold finite numbers within ±{MAX_ABS_LABEL:g}: "
                f"row {line[first]} holds {raw.iloc[first]!r}",
                "targets",
            )
        y[:, j] = column
    empty = [col for j, col in enumerate(labels) if np.isnan(y[:, j]).all()]
    if empty:
        raise TargetError(f"label column(s) {empty} hold no values", "targets")
    types = [_task_type(y[:, j], col, task_type, line) for j, col in enumerate(labels)]
    smiles: list[str] = []
    keep: list[int] = []
    examples: list[dict] = []
    for i, raw in enumerate(df[smiles_column].tolist()):
        parsed = parse_smiles(raw, policy)
        reason = parsed.error or (None if not np.isnan(y[i]).all() else "no label")
        if reason is None:
            smiles.append(parsed.canonical)  # type: ignore[arg-type]
            keep.append(i)
        elif len(examples) < 5:
            examples.append({"row": int(line[i]), "smiles": str(raw)[:100], "reason": reason})
    if not keep:
        raise TargetError(
            f"none of the {len(df)} rows has a valid SMILES and a label (column {smiles_column!r})",
            "smiles_column",
        )
    if len(keep) < min_rows:
        raise TargetError(f"only {len(keep)} valid rows (need at least {min_rows})", "file")
    for j, (col, kind) in enumerate(zip(labels, types, strict=True)):
        present = np.unique(y[keep, j][~np.isnan(y[keep, j])])
        if not len(present):
            raise TargetError(f"label column {col!r} has no label in the valid rows", "targets")
        if kind == "classification" and len(present) < 2:
            raise TargetError(
                f"classification label column {col!r} holds one class only ({present[0]:g}) in the valid "
                "rows; a classifier needs both 0 and 1",
                "targets",
            )
    return TargetSet(
        name=name,
        smiles=smiles,
        labels=y[keep],
        label_columns=labels,
        task_types=types,
        rows=len(df),
        invalid_rows=len(df) - len(keep),
        invalid_examples=examples,
    )
