"""``molfusion embed``: stream a CSV of SMILES through the embedder into a Parquet file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from tqdm import tqdm

from app.commands._progress import progress_option
from app.factory import build_embedder
from models.progress import bar_disable
from models.tabular import TableError, count_rows, iter_chunks, resolve_smiles_column

if TYPE_CHECKING:
    from models.embedder import Embedder
    from models.pipeline import EmbeddingPipeline


def _schema(dims: dict[str, int], views: list[str]) -> pa.Schema:
    fields = [
        pa.field("index", pa.int64()),
        pa.field("input", pa.string()),
        pa.field("canonical_smiles", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
    ]
    fields += [pa.field(f"{v}_embedding", pa.list_(pa.float32(), dims[v])) for v in views]
    return pa.schema(fields)


def smiles_stream(path: Path, column: str, chunk_size: int) -> Iterator[str]:
    """The column's values, read ``chunk_size`` rows at a time (the file is never loaded whole)."""
    for chunk in iter_chunks(path, chunk_size, usecols=[column]):
        yield from chunk[column].tolist()


def embedding_pipeline(embedder: Embedder, chunk_size: int) -> EmbeddingPipeline:
    """The overlapped pipeline (:class:`models.pipeline.EmbeddingPipeline`) for ``embedder``'s encoders
    and settings, preparing chunks of at most 4,096 SMILES; ``molfusion embed`` and ``predict`` use it."""
    from models.pipeline import EmbeddingPipeline

    return EmbeddingPipeline(
        embedder.smiles,
        embedder.graph,
        embedder.device,
        batch_size=embedder.batch_size,
        policy=embedder.policy,
        workers=embedder.featurize_workers,
        chunk_size=min(chunk_size, 4096),
    )


def embed_file(
    input_csv: Path,
    output: Path,
    smiles_column: str | None,
    views: list[str],
    chunk_size: int,
    embedder,
    progress: bool | None = None,
) -> dict[str, int]:
    """Stream ``input_csv`` through the overlapped pipeline (workers parse/featurize/tokenize chunk
    k+1 while the device encodes chunk k) into ``output``; the file is never loaded whole.
    ``progress``: the bar on stderr (``None``: when stderr is a terminal)."""
    column = resolve_smiles_column(input_csv, smiles_column)
    schema = _schema(embedder.dims, views)
    counts = {"rows": 0, "ok": 0, "invalid": 0}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(output.suffix + ".partial")
    pipeline = embedding_pipeline(embedder, chunk_size)
    with (
        pq.ParquetWriter(tmp, schema) as writer,
        tqdm(total=count_rows(input_csv), unit="mol", disable=bar_disable(progress), desc="embedding") as bar,
    ):
        for part in pipeline.run(smiles_stream(input_csv, column, chunk_size), views=views):
            n = len(part.inputs)
            valid = np.array([e is None for e in part.errors], dtype=bool)
            arrays = [
                pa.array(np.arange(part.start, part.start + n), pa.int64()),
                pa.array(part.inputs, pa.string()),
                pa.array(part.canonical, pa.string()),
                pa.array(np.where(valid, "ok", "invalid").tolist(), pa.string()),
                pa.array(part.errors, pa.string()),
            ]
            for v in views:
                flat = pa.array(part.vectors[v].reshape(-1), pa.float32())
                # invalid rows are null vectors
                arrays.append(
                    pa.FixedSizeListArray.from_arrays(flat, embedder.dims[v], mask=pa.array(~valid))
                )
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            counts["rows"] += n
            counts["ok"] += int(valid.sum())
            counts["invalid"] += int((~valid).sum())
            bar.update(n)
    tmp.replace(output)
    return counts


def register(cli: typer.Typer) -> None:
    @cli.command("embed")
    def embed_cmd(
        input_csv: Path = typer.Argument(..., help="CSV (optionally .gz) with a SMILES column."),
        output: Path = typer.Option(..., "-o", "--output", help="Output Parquet file."),
        smiles_column: str | None = typer.Option(None, help="SMILES column (auto-detected when omitted)."),
        views: str = typer.Option("smiles,graph,fused", help="Comma-separated views: smiles, graph, fused."),
        batch_size: int | None = typer.Option(
            None, min=1, help="Molecules per encoder pass (default: settings)."
        ),
        chunk_size: int = typer.Option(20_000, min=1, help="Rows read and embedded per chunk."),
        progress: bool | None = progress_option(),
    ) -> None:
        """Embed every row of INPUT_CSV; one output row per input row, invalid ones with a reason."""
        from app.file_checks import refuse_overwriting_input
        from models.embedder import validate_views

        refuse_overwriting_input(input_csv, output)

        try:
            view_list = list(validate_views([v.strip() for v in views.split(",") if v.strip()]))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--views") from exc
        embedder = build_embedder()
        if batch_size is not None:
            embedder.batch_size = batch_size
        try:
            counts = embed_file(
                input_csv, output, smiles_column, view_list, chunk_size, embedder, progress
            )
        except TableError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(
            f"wrote {output}: {counts['rows']} rows ({counts['ok']} ok, {counts['invalid']} invalid) "
            f"on {embedder.device}"
        )
