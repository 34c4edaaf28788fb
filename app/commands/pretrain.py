"""``molfusion pretrain corpus|smiles|graph``: build the filtered corpus and pretrain either encoder.

Training resumes exactly when ``--out`` already holds a checkpoint (``--out/state``); the shipped
encoder is written to ``--out/encoder`` at every checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from app.commands._progress import progress_option
from app.settings import DEVICE_PATTERN, get_settings


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _check_corpus(corpus: Path) -> None:
    if not corpus.exists():
        raise _fail(f"--corpus: file not found: {corpus}")
    if corpus.is_dir():
        raise _fail(f"--corpus: {corpus} is a directory, not a CSV file")


def _check_run(out: Path, device: str, max_minutes: float | None) -> None:
    """The run folder, device and stop options, before any corpus is read."""
    if out.exists() and not out.is_dir():
        raise _fail(f"--out: {out} is a file, not a run folder")
    if not DEVICE_PATTERN.fullmatch(device):
        raise _fail(f"--device: must be auto, cpu, cuda or cuda:N, got {device!r}")
    if max_minutes is not None and max_minutes <= 0:
        raise _fail(f"--max-minutes: must be > 0, got {max_minutes:g}")


def _train_config(steps: int, budget_minutes: float, batch_size: int, lr: float, warmup: int,
                  weight_decay: float, seed: int, checkpoint_every: int, log_every: int):
    from models.pretrain.trainer import TrainConfig

    cfg = TrainConfig(steps=steps, time_budget_s=budget_minutes * 60, batch_size=batch_size, lr=lr,
                      warmup_steps=warmup, weight_decay=weight_decay, seed=seed,
                      checkpoint_every=checkpoint_every, log_every=log_every,
                      calibrate_steps=min(200, max(warmup - 1, 1)))
    if steps == 0 and warmup < 10:
        raise _fail(f"--warmup {warmup}: with --budget-minutes the speed is measured over the warm-up, "
                    "which needs at least 10 steps")
    try:
        cfg.validate()
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    return cfg


def register(cli: typer.Typer) -> None:
    group = typer.Typer(help="Pretrain the SMILES transformer or the graph encoder.", no_args_is_help=True)

    @group.command("references")
    def references_cmd(
        out: Path = typer.Option(..., help="CSV(.gz) to write: one SMILES column, every benchmark molecule."),
        data_dir: Path | None = typer.Option(None, help="Folder with MANIFEST.tsv (default: settings)."),
    ) -> None:
        """Collect the SMILES of every benchmark data set (all of MANIFEST.tsv except pretrain/)."""
        from models.pretrain.corpus import reference_smiles, write_corpus

        data = data_dir or get_settings().data_dir
        if not (data / "MANIFEST.tsv").exists():
            raise _fail(f"--data-dir: no MANIFEST.tsv in {data}")
        smiles, n_files = reference_smiles(data)
        write_corpus(smiles, out)
        typer.echo(f"wrote {len(smiles)} SMILES from {n_files} files to {out}")

    @group.command("corpus")
    def corpus_cmd(
        corpus: Path = typer.Option(..., help="Raw corpus CSV (optionally .gz) with a SMILES column."),
        out: Path = typer.Option(..., help="Filtered corpus to write (.csv.gz); counts go to *_report.json."),
        references: Path | None = typer.Option(None, help="SMILES to remove (`pretrain references` output)."),
        data_dir: Path | None = typer.Option(None, help="MANIFEST.tsv folder (without --references)."),
        workers: int = typer.Option(0, help="Processes for canonicalisation; 0 = all cores."),
        limit: int | None = typer.Option(None, help="Only the first LIMIT corpus rows."),
    ) -> None:
        """Canonicalise the corpus and remove every molecule found in any benchmark data set."""
        from models.pretrain.corpus import build_filtered_corpus, read_corpus, reference_smiles

        _check_corpus(corpus)
        if references is not None:
            if not references.exists():
                raise _fail(f"--references: file not found: {references}")
            refs, n_files = read_corpus(references), 0
        else:
            data = data_dir or get_settings().data_dir
            if not (data / "MANIFEST.tsv").exists():
                raise _fail(f"--data-dir: no MANIFEST.tsv in {data}")
            refs, n_files = reference_smiles(data)
        try:
            report = build_filtered_corpus(corpus, refs, out, workers=workers, limit=limit,
                                           reference_files=n_files)
        except ValueError as exc:
            raise _fail(f"--corpus: {exc}") from exc
        out.with_name(out.name.split(".")[0] + "_report.json").write_text(
            json.dumps(report.as_dict(), indent=2) + "\n")
        typer.echo(json.dumps(report.as_dict()))

    @group.command("smiles")
    def smiles_cmd(
        corpus: Path = typer.Option(..., help="Filtered corpus CSV(.gz) with a SMILES column."),
        out: Path = typer.Option(..., help="Run folder (checkpoint, log, tokenizer, encoder)."),
        steps: int = typer.Option(0, help="Optimizer steps; 0 = derive from --budget-minutes."),
        budget_minutes: float = typer.Option(0.0, help="Training time to fill when --steps is 0."),
        max_minutes: float | None = typer.Option(None, help="Stop this call after a checkpoint (resumable)."),
        stop_after: int | None = typer.Option(None, min=1, help="Stop this call after this many steps."),
        batch_size: int = typer.Option(512, min=1),
        lr: float = typer.Option(8e-4, min=0.0, help="Peak learning rate (> 0)."),
        warmup: int = typer.Option(500, min=1),
        weight_decay: float = typer.Option(0.01, min=0.0),
        seed: int = typer.Option(0),
        checkpoint_every: int = typer.Option(2000, min=1),
        log_every: int = typer.Option(50, min=1),
        hidden_size: int = typer.Option(256, min=8),
        layers: int = typer.Option(6, min=1),
        heads: int = typer.Option(8, min=1),
        ffn: int = typer.Option(1024, min=8),
        device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
        limit: int | None = typer.Option(None, min=1, help="Only the first LIMIT corpus rows."),
        smiles_column: str = typer.Option("SMILES", help="The corpus column holding the SMILES."),
        progress: bool | None = progress_option(),
    ) -> None:
        """Masked-language-model pretraining of the SMILES transformer."""
        from models.pretrain.pipelines import pretrain_smiles

        _check_corpus(corpus)
        _check_run(out, device, max_minutes)
        if hidden_size % heads:
            raise _fail(f"--hidden-size {hidden_size} is not divisible by --heads {heads}")
        cfg = _train_config(steps, budget_minutes, batch_size, lr, warmup, weight_decay, seed,
                            checkpoint_every, log_every)
        overrides = {"hidden_size": hidden_size, "num_hidden_layers": layers, "num_attention_heads": heads,
                     "intermediate_size": ffn}
        try:
            pos = pretrain_smiles(corpus, out, cfg, overrides, device=device, limit=limit,
                                  smiles_column=smiles_column, progress=progress,
                                  stop_after=stop_after,
                                  max_seconds=max_minutes * 60 if max_minutes else None)
        except (ValueError, RuntimeError) as exc:  # corpus, resume and device problems, each named
            raise _fail(str(exc)) from exc
        typer.echo(f"step {pos.step}/{pos.total_steps}; encoder in {out / 'encoder'}")

    @group.command("graph")
    def graph_cmd(
        corpus: Path = typer.Option(..., help="Filtered corpus CSV(.gz) with a SMILES column."),
        out: Path = typer.Option(..., help="Run folder (checkpoint, log, encoder)."),
        steps: int = typer.Option(0, help="Optimizer steps; 0 = derive from --budget-minutes."),
        budget_minutes: float = typer.Option(0.0, help="Training time to fill when --steps is 0."),
        max_minutes: float | None = typer.Option(None, help="Stop this call after a checkpoint (resumable)."),
        stop_after: int | None = typer.Option(None, min=1, help="Stop this call after this many steps."),
        batch_size: int = typer.Option(512, min=1),
        lr: float = typer.Option(1e-3, min=0.0),
        warmup: int = typer.Option(500, min=1),
        weight_decay: float = typer.Option(0.0, min=0.0),
        seed: int = typer.Option(0),
        checkpoint_every: int = typer.Option(2000, min=1),
        log_every: int = typer.Option(50, min=1),
        hidden_size: int = typer.Option(300, min=4),
        layers: int = typer.Option(5, min=1),
        workers: int = typer.Option(0, help="Featurization processes; 0 = all cores."),
        device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
        limit: int | None = typer.Option(None, min=1, help="Only the first LIMIT corpus rows."),
        smiles_column: str = typer.Option("SMILES", help="The corpus column holding the SMILES."),
        progress: bool | None = progress_option(),
        motifs: bool = typer.Option(True, help="Add the functional-group motif objective on the readout."),
    ) -> None:
        """Self-supervised pretraining of the graph encoder (masked attributes + motif presence)."""
        from models.pretrain.pipelines import pretrain_graph

        _check_corpus(corpus)
        _check_run(out, device, max_minutes)
        cfg = _train_config(steps, budget_minutes, batch_size, lr, warmup, weight_decay, seed,
                            checkpoint_every, log_every)
        try:
            pos = pretrain_graph(corpus, out, cfg, {"hidden_size": hidden_size, "num_layers": layers},
                                 device=device, limit=limit, workers=workers, motifs=motifs,
                                 smiles_column=smiles_column, progress=progress,
                                 max_seconds=max_minutes * 60 if max_minutes else None, stop_after=stop_after)
        except (ValueError, RuntimeError) as exc:
            raise _fail(str(exc)) from exc
        typer.echo(f"step {pos.step}/{pos.total_steps}; encoder in {out / 'encoder'}")

    @group.command("plot")
    def plot_cmd(
        log_file: Path = typer.Option(..., "--log", help="A run's log.jsonl."),
        out: Path = typer.Option(..., help="PNG to write."),
        title: str = typer.Option("pretraining loss", help="Figure title."),
    ) -> None:
        """Plot the loss curves of a pretraining run."""
        from models.pretrain.plots import plot_log

        if not log_file.exists():
            raise _fail(f"--log: file not found: {log_file}")
        try:
            plot_log(log_file, out, title)
        except ValueError as exc:
            raise _fail(f"--log: {exc}") from exc
        typer.echo(f"wrote {out}")

    cli.add_typer(group, name="pretrain")
