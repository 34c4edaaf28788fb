"""Reading molecule tables: SMILES-column detection and chunked CSV streaming (CLI, training, grouping)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from models.chemistry import canonicalize

# Larger label values are refused in a training table or target and count as missing in a catalog set:
# heads compute label statistics in float32, whose squares overflow from about 1.8e19; no molecular
# property comes near it.
MAX_ABS_LABEL = 1e12
SMILES_COLUMN_NAMES = ("smiles", "canonical_smiles", "smi", "mol", "drug", "molecule", "structure")


class TableError(ValueError):
    """A problem with a user's table (missing column, unreadable file); the message names it."""


def repeated_targets(targets: Sequence[str]) -> list[str]:
    """The names given more than once in a list of label columns (``--targets``, the API's ``targets``),
    sorted; the training CLI and the recommendation target refuse them, each with its own error."""
    return sorted(name for name, n in Counter(targets).items() if n > 1)


def repeated_names(header: list[str]) -> list[str]:
    """The header's names written more than once (empty cells, e.g. Excel's trailing commas, are not
    names); pandas would rename the repeats (``y``, ``y.1``) and hide them."""
    return repeated_targets([name for name in header if name])


def without_blank_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (read with ``dtype=str, keep_default_na=False, skip_blank_lines=False``) without the rows
    whose cells are all empty or whitespace (blank lines, ``,,``). The index is kept, so ``index + 2`` is
    still each row's line in the file (the header is line 1), for messages that name a row."""
    blank = (frame.apply(lambda column: column.str.strip()) == "").all(axis=1).to_numpy()
    return frame[~blank]


def detect_smiles_column(columns: list[str], sample: pd.DataFrame | None = None) -> str:
    """The SMILES column: a well-known name first, else the text column whose values parse best."""
    lowered = {c.lower().strip(): c for c in columns}
    for name in SMILES_COLUMN_NAMES:
        if name in lowered:
            return lowered[name]
    if sample is not None and len(sample):
        best, best_rate = None, 0.0
        for col in columns:
            values = sample[col].dropna().astype(str).head(20).tolist()
            if not values:
                continue
            rate = sum(canonicalize(v) is not None for v in values) / len(values)
            if rate > best_rate:
                best, best_rate = col, rate
        if best is not None and best_rate >= 0.5:
            return best
    raise TableError(f"no SMILES column found among {columns}; pass --smiles-column")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise TableError(f"input file not found: {path}")
    if path.is_dir():
        raise TableError(f"{path} is a directory, not a CSV file")


_UNREADABLE = (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError)


def read_header(path: Path) -> tuple[list[str], pd.DataFrame]:
    _check_file(path)
    try:
        sample = pd.read_csv(path, nrows=50)
    except _UNREADABLE as exc:
        raise TableError(f"{path} is not a readable CSV: {exc}") from exc
    return list(sample.columns), sample


def read_text_table(path: Path) -> tuple[list[str], pd.DataFrame]:
    """The whole CSV (optionally compressed), parsed once with every cell as text (empty cells ``""``,
    blank lines kept as rows of them): the header's names as written, stripped (pandas would rename a
    repeated one, ``y`` and ``y.1``, and hide it), and the data rows under pandas' column names (an empty
    name is ``Unnamed: <position>``), indexed so that ``index + 2`` is each row's line in the file."""
    _check_file(path)
    try:
        cells = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except _UNREADABLE as exc:
        raise TableError(f"{path} is not a readable CSV: {exc}") from exc
    written = [str(name) for name in cells.iloc[0].tolist()]
    columns = [name or f"Unnamed: {i}" for i, name in enumerate(written)]
    frame = cells.iloc[1:].set_axis(columns, axis=1).reset_index(drop=True)
    return [name.strip() for name in written], frame


def text_sample(frame: pd.DataFrame, rows: int = 50) -> pd.DataFrame:
    """The first ``rows`` rows of a text frame (:func:`read_text_table`), empty cells missing: the sample
    :func:`detect_smiles_column` looks at."""
    head = frame.head(rows)
    return head.where(head != "")


def choose_smiles_column(
    columns: list[str], sample: pd.DataFrame | None, smiles_column: str | None, file_name: str
) -> str:
    """``smiles_column`` when the table has it, else the detected one (:func:`detect_smiles_column`)."""
    if smiles_column is None:
        return detect_smiles_column(columns, sample)
    if smiles_column not in columns:
        raise TableError(f"column {smiles_column!r} not in {file_name} (columns: {columns})")
    return smiles_column


def resolve_smiles_column(path: Path, smiles_column: str | None) -> str:
    columns, sample = read_header(path)
    return choose_smiles_column(columns, sample, smiles_column, path.name)


def iter_chunks(path: Path, chunk_size: int, usecols: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Stream a CSV (optionally gzipped) in chunks; never loads the whole file.

    Blank lines are rows (of empty cells), so output rows stay aligned with the input's lines: a blank
    line in a one-column file is an empty SMILES, as an empty cell is in a wider file."""
    chunks = pd.read_csv(
        path, chunksize=chunk_size, usecols=usecols, dtype=str, keep_default_na=False, skip_blank_lines=False
    )
    for chunk in chunks:
        yield chunk.fillna("")


def count_rows(path: Path) -> int | None:
    """Data rows of an uncompressed CSV (for progress bars); None when not cheap to know."""
    if path.suffix == ".gz":
        return None
    with path.open("rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return max(lines - 1, 0)
