"""``molfusion recommend`` (auxiliary data sets for a target CSV) and ``molfusion datasets`` (the catalog)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from tqdm import tqdm

from app.commands._progress import progress_option
from app.file_checks import check_creatable, refuse_overwriting_input
from app.settings import get_settings
from models.progress import bar_disable


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _catalog_entries():
    from app.jobs import extra_catalog_path
    from grouping.catalog import CatalogError, load_catalog

    try:
        return load_catalog(extra_catalog_path(get_settings()))
    except CatalogError as exc:
        raise _fail(str(exc)) from exc


_CLI_NAMES = {
    "file": "TARGET_CSV",
    "smiles_column": "--smiles-column",
    "targets": "--targets",
    "task_type": "--task-type",
}


def _check_paths(target_csv: Path, output_text: str) -> tuple[Path, Path]:
    """Check the input and output paths before any work; returns the JSON's and the chart's paths."""
    if not target_csv.exists():
        raise _fail(f"input file not found: {target_csv}")
    if target_csv.is_dir():
        raise _fail(f"TARGET_CSV {target_csv} is a directory, not a CSV file")
    output = Path(output_text)
    if output.is_dir() or not output.name or output_text.endswith(("/", os.sep)):  # Path() drops a "/"
        raise _fail(f"--output {output_text} names a directory; give a file path like {output / 'r.json'}")
    chart = output.with_suffix(".png")
    if output.suffix.lower() == ".png":
        raise _fail(f"--output {output}: give the JSON's path; the chart is written next to it as .png")
    refuse_overwriting_input(target_csv, output)
    refuse_overwriting_input(target_csv, chart, "--output's chart")
    check_creatable(output.parent, "--output")  # created when the result is written
    return output, chart


datasets_app = typer.Typer(
    help="List, check and register auxiliary data sets of the recommendation catalog.",
    no_args_is_help=False,
    invoke_without_command=True,
)


@datasets_app.callback()
def datasets_list(
    ctx: typer.Context,
    catalog: Path | None = typer.Option(
        None, help="Folder holding the data files (default MOLFUSION_DATA_DIR)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the check as JSON."),
) -> None:
    """List the catalog and check every file and its columns (exit 1 when any set is missing)."""
    if ctx.invoked_subcommand is not None:
        return
    from grouping.catalog import check_catalog

    entries = _catalog_entries()
    catalog_dir = catalog or get_settings().data_dir
    rows = check_catalog(entries, catalog_dir)
    if as_json:
        typer.echo(json.dumps({"catalog_dir": str(catalog_dir), "datasets": rows}, indent=2))
    else:
        typer.echo(f"catalog folder: {catalog_dir}")
        for entry, row in zip(entries, rows, strict=True):
            if row["status"] == "ok":
                typer.echo(
                    f"  ok     {entry.name:<14} {row['tasks']:>4} {entry.task_type:<14} "
                    f"{entry.source:<7} {entry.file}"
                )
            else:
                typer.echo(f"  ERROR  {entry.name:<14} {row['error']}")
    missing = sum(r["status"] != "ok" for r in rows)
    if missing:
        typer.echo(f"{missing} of {len(rows)} data sets are not usable", err=True)
        raise typer.Exit(1)


@datasets_app.command("register")
def datasets_register(
    name: str = typer.Argument(..., help="Catalog name (lower-case letters, digits, '_', '-', '.')."),
    file: Path = typer.Argument(..., help="CSV file of the data set (stored by absolute path)."),
    smiles_column: str = typer.Option(..., help="SMILES column."),
    labels: str = typer.Option(..., help="Comma-separated label columns."),
    task_type: str = typer.Option(..., help="classification or regression."),
    filter_rows: str | None = typer.Option(None, "--filter", help="Keep rows where COLUMN=VALUE."),
    notes: str = typer.Option("", help="Free-text description."),
) -> None:
    """Add a user data set to the catalog (stored in MOLFUSION_CATALOG_EXTRA or the heads folder)."""
    from app.jobs import extra_catalog_path
    from grouping.catalog import CatalogError, parse_entry, register_dataset

    raw: dict = {
        "name": name,
        "file": str(file.resolve()),
        "smiles_column": smiles_column,
        "label_columns": [c.strip() for c in labels.split(",") if c.strip()],
        "task_type": task_type,
        "notes": notes,
    }
    if filter_rows is not None:
        column, sep, value = filter_rows.partition("=")
        if not sep or not column:
            raise _fail(f"--filter must be COLUMN=VALUE, got {filter_rows!r}")
        raw["row_filter"] = {"column": column, "equals": value}
    settings = get_settings()
    extra = extra_catalog_path(settings)
    try:
        entry = register_dataset(extra, parse_entry(raw, source="user"), settings.data_dir)
    except CatalogError as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:  # the user catalog's folder or lock file cannot be made or opened
        raise _fail(f"cannot write the user catalog {extra} (MOLFUSION_CATALOG_EXTRA): {exc}") from exc
    typer.echo(f"registered {entry.name} ({len(entry.label_columns or [])} label column(s)) in {extra}")


def register(cli: typer.Typer) -> None:
    cli.add_typer(datasets_app, name="datasets")

    @cli.command("recommend")
    def recommend_cmd(
        target_csv: Path = typer.Argument(
            ..., help="Target data set: CSV with SMILES and label column(s)."
        ),
        output_text: str = typer.Option(
            ..., "-o", "--output", help="Result JSON (a bar chart PNG is written next to it)."
        ),
        targets: str | None = typer.Option(
            None, help="Comma-separated label columns (default: numeric columns)."
        ),
        smiles_column: str | None = typer.Option(None, help="SMILES column (auto-detected when omitted)."),
        catalog: Path | None = typer.Option(
            None, help="Folder holding the data files (default MOLFUSION_DATA_DIR)."
        ),
        method: str = typer.Option("molgroup", help="molgroup, structure, all or none."),
        task_type: str = typer.Option("auto", help="auto, classification or regression."),
        evidence_seeds: int | None = typer.Option(
            None, min=0, help="Seeds for the evidence (default: settings; 0 = off)."
        ),
        exclude: str | None = typer.Option(None, help="Comma-separated catalog sets to leave out."),
        progress: bool | None = progress_option(),
    ) -> None:
        """Recommend auxiliary data sets to train TARGET_CSV's property with, with scores and evidence."""
        from app.factory import parse_policy
        from app.jobs import grouping_cache_dir, recommendation_options, shared_embedder
        from grouping.catalog import CatalogError, without
        from grouping.methods import METHODS
        from grouping.plot import plot_scores
        from grouping.recommend import recommend
        from grouping.target import TargetError, parse_target, read_csv_bytes

        settings = get_settings()
        if method not in METHODS:
            raise typer.BadParameter(f"{method!r} not in {list(METHODS)}", param_hint="--method")
        output, chart_path = _check_paths(target_csv, output_text)
        skip = [s.strip() for s in (exclude or "").split(",") if s.strip()]
        entries = _catalog_entries()
        try:
            without(entries, skip)  # checked before any work; recommend() applies it
        except CatalogError as exc:
            raise _fail(f"--exclude: {exc}") from exc
        try:  # checked before the encoders load
            df = read_csv_bytes(
                target_csv.read_bytes(), settings.upload_max_bytes, settings.upload_max_rows
            )
            target = parse_target(
                df,
                target_csv.name.split(".")[0],
                smiles_column,
                [t.strip() for t in targets.split(",") if t.strip()] or None if targets else None,
                task_type,
                settings.upload_min_rows,
                parse_policy(settings),
            )
        except TargetError as exc:
            raise _fail(f"{_CLI_NAMES.get(exc.field, exc.field)}: {exc}") from exc
        embedder = shared_embedder()
        options = recommendation_options(settings, method, skip)
        if evidence_seeds is not None:
            options.evidence_seeds = evidence_seeds
        # log records are written on lines of their own while the bar is live (app.logging_setup)
        with tqdm(total=100, unit="%", desc="recommending", disable=bar_disable(progress)) as bar:

            def report(fraction: float, message: str) -> None:
                bar.set_postfix_str(message[:40])
                bar.update(max(0, int(round(fraction * 100)) - bar.n))

            try:
                result = recommend(
                    target,
                    entries,
                    catalog or settings.data_dir,
                    embedder,
                    grouping_cache_dir(settings),
                    options,
                    report,
                )
            except CatalogError as exc:
                raise _fail(f"--catalog: {exc}") from exc
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2))
        chart = plot_scores(result, chart_path)
        ev = result["evidence"]
        typer.echo(f"recommended group: {result['recommended_group'] or '(none)'}")
        if result["withheld_group"] is not None:
            typer.echo(f"withheld: {result['withheld_group']['reason']}")
        if ev is not None and ev["target_alone"]["mean"] is not None:
            typer.echo(
                f"validation {ev['metric']}: target alone {ev['target_alone']['mean']:.4f} "
                f"± {ev['target_alone']['std']:.4f}, target + group {ev['target_plus_group']['mean']:.4f} "
                f"± {ev['target_plus_group']['std']:.4f} ({ev['seeds']} seeds)"
            )
        typer.echo(
            f"wrote {output} and {chart} ({result['invalid_rows']} invalid rows skipped, "
            f"{result['wall_time_s']:.1f} s)"
        )
