"""``molfusion train``, ``molfusion predict`` and ``molfusion heads``: train a head on a labelled CSV,
apply a head to a CSV of SMILES (streamed, row-aligned), list the registry's heads."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import typer
from tqdm import tqdm

from app.commands._progress import progress_option
from app.commands.embed import embedding_pipeline, smiles_stream
from app.file_checks import check_creatable, refuse_overwriting_input
from app.settings import get_settings
from models.progress import bar_disable
from models.tabular import TableError, count_rows, resolve_smiles_column


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _split_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def parse_params(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs; values are parsed as JSON when they can be (numbers, booleans), else text."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def resolve_head(spec: str):
    """A head directory (holding ``card.json``) or a head name in the registry (``MOLFUSION_HEADS_DIR``)."""
    from fusion.head import load_head
    from fusion.registry import HeadRegistry

    path = Path(spec)
    if (path / "card.json").is_file():
        return load_head(path)
    return HeadRegistry(get_settings().heads_dir).load(spec)


def check_encoders(head, embedder) -> None:
    """A head only makes sense on the encoders it was trained on (same version strings)."""
    wanted = {v: head.encoder_versions[v] for v in head.views if v in head.encoder_versions}
    have = {v: embedder.versions.get(v) for v in wanted}
    if wanted != have:
        raise ValueError(
            f"head {head.name!r} was trained on encoders {wanted}, but the configured encoders are {have}; "
            "set MOLFUSION_SMILES_ENCODER_DIR / MOLFUSION_GRAPH_ENCODER_DIR to matching checkpoints"
        )


def predict_file(
    input_csv: Path,
    output: Path,
    head,
    embedder,
    smiles_column: str | None,
    chunk_size: int,
    progress: bool | None = None,
) -> dict[str, int]:
    """Stream ``input_csv`` in chunks: embed, predict, append to ``output``; one output row per input row.

    Columns: the SMILES column as given, ``canonical_smiles``, one column per task (probability for
    classification, label units for regression; empty for an invalid molecule) and ``error`` (the reason).
    ``progress``: the bar on stderr (``None``: when stderr is a terminal).
    """
    column = resolve_smiles_column(input_csv, smiles_column)
    counts = {"rows": 0, "ok": 0, "invalid": 0}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".partial")
    views = tuple(v for v in head.views if v in ("smiles", "graph"))
    raw: deque[object] = deque()  # the column's values as read (NaN stays NaN in the output)

    def stream() -> Iterator[object]:
        for value in smiles_stream(input_csv, column, chunk_size):
            raw.append(value)
            yield value

    with tqdm(
        total=count_rows(input_csv), unit="mol", desc=f"predicting {head.name}", disable=bar_disable(progress)
    ) as bar:
        # preparation on all cores overlapped with the encoders, as in `molfusion embed`
        for i, part in enumerate(embedding_pipeline(embedder, chunk_size).run(stream(), views=views)):
            smiles = [raw.popleft() for _ in part.inputs]
            pred = head.predict(part.vectors)
            frame = pd.DataFrame({column: smiles, "canonical_smiles": part.canonical})
            for t, task in enumerate(head.tasks):
                frame[task] = pred[:, t]
            frame["error"] = part.errors
            frame.to_csv(tmp, mode="w" if i == 0 else "a", header=i == 0, index=False, float_format="%.6g")
            valid = sum(e is None for e in part.errors)
            counts["rows"] += len(smiles)
            counts["ok"] += valid
            counts["invalid"] += len(smiles) - valid
            bar.update(len(smiles))
    if counts["rows"] == 0:
        pd.DataFrame(columns=[column, "canonical_smiles", *head.tasks, "error"]).to_csv(tmp, index=False)
    tmp.replace(output)
    return counts


def register(cli: typer.Typer) -> None:
    @cli.command("train")
    def train_cmd(
        data_csv: Path = typer.Argument(
            ..., help="Labelled CSV with a SMILES column and the target columns."
        ),
        targets: str = typer.Option(..., help="Comma-separated label column(s)."),
        out: Path = typer.Option(..., "--out", help="Output head directory (replaced if it is a head)."),
        task: str | None = typer.Option(
            None,
            help="classification | regression; default: inferred per column (only 0/1 -> classification).",
        ),
        head: str = typer.Option("mlp", help="Head: mlp | xgb | experts | fmt | single_task."),
        fusion: str = typer.Option("concat", help="Fusion: concat | concat_reduce | gated."),
        split: str = typer.Option("scaffold", help="Split: scaffold (Bemis-Murcko 80/10/10) | random."),
        seeds: int = typer.Option(3, min=1, help="Seeds (each: its own split and initialisation)."),
        smiles_column: str | None = typer.Option(None, help="SMILES column (auto-detected when omitted)."),
        name: str | None = typer.Option(
            None,
            help="Display name in the card (default: the output folder name). The registry, predict --head "
            "and the API know a head by its folder name.",
        ),
        units: str | None = typer.Option(
            None, help="Comma-separated units, one per target; leave an entry empty for none (a,,b)."
        ),
        param: list[str] = typer.Option([], "--param", help="Hyper-parameter KEY=VALUE (repeatable)."),
        progress: bool | None = progress_option(),
    ) -> None:
        """Train a head on DATA_CSV; the seed with the best validation metric is saved to --out."""
        from fusion.fusions import FUSIONS
        from fusion.model import check_replaceable
        from fusion.predictors import HEADS
        from fusion.splits import SPLITS
        from fusion.training import LabelTableError, train_from_table

        for value, allowed, hint in (
            (head, HEADS, "--head"),
            (fusion, FUSIONS, "--fusion"),
            (split, SPLITS, "--split"),
        ):
            if value not in allowed:
                raise typer.BadParameter(f"{value!r} is not one of {list(allowed)}", param_hint=hint)
        if task is not None and task not in ("classification", "regression"):
            raise typer.BadParameter(f"{task!r} is not classification or regression", param_hint="--task")
        hparams = parse_params(param)
        try:
            check_replaceable(out)
        except FileExistsError as exc:
            raise _fail(f"--out: {exc}") from exc
        check_creatable(out, "--out")  # now, not after the training
        if out.exists() and data_csv.resolve().is_relative_to(out.resolve()):
            raise _fail(f"--out {out} holds the training data {data_csv}; saving the head would delete it")
        target_list = _split_list(targets)
        # one entry per target; an empty entry is a task without unit (e.g. "logS,,logS")
        unit_list = [u.strip() or None for u in units.split(",")] if units else None
        from app.factory import build_embedder

        try:
            embedder = build_embedder()
        except FileNotFoundError as exc:
            raise _fail(str(exc)) from exc
        try:
            card = train_from_table(
                data_csv,
                target_list,
                out,
                embedder,
                task=task,
                head=head,
                fusion=fusion,
                split=split,
                seeds=seeds,
                smiles_column=smiles_column,
                hparams=hparams,
                name=name,
                units=unit_list,
                progress=progress,
            )
        except (LabelTableError, TableError) as exc:
            raise _fail(str(exc)) from exc
        except ValueError as exc:  # invalid hyper-parameters or head/fusion combinations
            raise _fail(str(exc)) from exc
        primary = card["primary_metric"]
        test = card["metrics"]["test"]
        kinds = ", ".join(sorted(set(card["task_types"])))
        typer.echo(
            f"wrote {out}: {head}/{fusion}, tasks {card['tasks']} ({kinds}), "
            f"selected seed {card['selected_seed']}; test {primary} "
            f"{test['mean'].get(primary, float('nan')):.4f} ± {test['std'].get(primary, float('nan')):.4f} "
            f"over {len(card['seeds'])} seed(s)"
        )

    @cli.command("predict")
    def predict_cmd(
        input_csv: Path = typer.Argument(..., help="CSV (optionally .gz) with a SMILES column."),
        head: str = typer.Option(..., "--head", help="Head directory, or a head name in the registry."),
        output: Path = typer.Option(..., "-o", "--output", help="Output CSV, one row per input row."),
        smiles_column: str | None = typer.Option(None, help="SMILES column (auto-detected when omitted)."),
        chunk_size: int = typer.Option(5000, min=1, help="Rows read, embedded and predicted per chunk."),
        progress: bool | None = progress_option(),
    ) -> None:
        """Predict every row of INPUT_CSV with a head; invalid SMILES get an empty prediction and a reason."""
        from app.factory import build_embedder
        from fusion.registry import UnknownHeadError

        refuse_overwriting_input(input_csv, output)

        try:
            loaded = resolve_head(head)
        except UnknownHeadError as exc:
            raise _fail(f"{exc}; or pass a head directory") from exc
        except Exception as exc:  # a damaged head folder: missing files, bad JSON, unreadable weights
            raise _fail(f"cannot load head {head!r}: {type(exc).__name__}: {exc}") from exc
        try:
            embedder = build_embedder()
            check_encoders(loaded, embedder)
            counts = predict_file(
                input_csv, output, loaded, embedder, smiles_column, chunk_size, progress
            )
        except (TableError, ValueError, FileNotFoundError) as exc:
            raise _fail(str(exc)) from exc
        typer.echo(
            f"wrote {output}: {counts['rows']} rows ({counts['ok']} predicted, {counts['invalid']} invalid)"
        )

    @cli.command("heads")
    def heads_cmd(
        as_json: bool = typer.Option(False, "--json", help="Print the cards as JSON."),
    ) -> None:
        """List the heads in the registry (MOLFUSION_HEADS_DIR, default: the packaged heads)."""
        from fusion.registry import HeadRegistry

        registry = HeadRegistry(get_settings().heads_dir)
        cards: dict[str, dict] = {}
        broken: dict[str, str] = {}
        from app.api.service import describe_head

        for head_name in registry.names():
            stage = "unreadable card"
            try:  # loaded and described as the service does, so a head it would skip is named here
                card = registry.card(head_name)
                if not isinstance(card, dict):
                    raise ValueError(f"card.json holds a {type(card).__name__}, not an object")
                stage = "damaged head"
                describe_head(head_name, registry.load(head_name), None)
                cards[head_name] = card
            except Exception as exc:  # one damaged head does not hide the others
                first = (str(exc).splitlines() or [""])[0][:300]
                broken[head_name] = f"{stage}: {type(exc).__name__}: {first}"
        if as_json:
            typer.echo(json.dumps({**cards, **{n: {"error": e} for n, e in broken.items()}}, indent=2))
            if not registry.root.is_dir():
                typer.echo(f"no heads folder {registry.root} (MOLFUSION_HEADS_DIR)", err=True)
            raise typer.Exit(1 if broken else 0)
        for head_name, error in broken.items():
            typer.echo(f"{head_name}: {error}")
        if not cards and not broken:
            missing = "" if registry.root.is_dir() else " (the folder does not exist: MOLFUSION_HEADS_DIR)"
            typer.echo(f"no heads in {registry.root}{missing}")
            return
        for head_name, card in cards.items():
            metrics = card.get("metrics")
            test = metrics.get("test", {}).get("mean", {}) if isinstance(metrics, dict) else {}
            test = test if isinstance(test, dict) else {}
            score = ", ".join(f"{k} {v:.3f}" for k, v in test.items() if isinstance(v, float))
            tasks = card.get("tasks") if isinstance(card.get("tasks"), list) else []
            typer.echo(
                f"{head_name}: {card.get('head')}/{card.get('fusion')}, {len(tasks)} task(s), "
                f"test {score or 'n/a'}, encoders {card.get('encoder_versions')}"
            )
        if broken:
            raise typer.Exit(1)

