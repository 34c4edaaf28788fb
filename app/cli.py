"""The ``molfusion`` command line. Each sub-command lives in ``app/commands/<name>.py`` and exposes
``register(cli)``; this module only assembles them (every module in that package is registered, except
helpers whose name starts with ``_``)."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import app.commands

cli = typer.Typer(
    name="molfusion",
    help="Molecular property prediction from fused SMILES-transformer and graph-encoder embeddings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@cli.callback()
def _root() -> None:
    """molfusion: embed molecules, train and serve property heads, recommend auxiliary data sets."""
    from pydantic import ValidationError

    from app.logging_setup import configure_logging
    from app.settings import get_settings, settings_error_text

    try:
        s = get_settings()
    except ValidationError as exc:  # a bad MOLFUSION_* variable: name it, no traceback
        typer.echo(f"error: invalid settings\n{settings_error_text(exc)}", err=True)
        raise typer.Exit(2) from None
    configure_logging(s.log_level, s.log_json)


for _info in sorted(pkgutil.iter_modules(app.commands.__path__), key=lambda m: m.name):
    if _info.name.startswith("_"):  # a shared helper (app/commands/_progress.py), no sub-command
        continue
    importlib.import_module(f"app.commands.{_info.name}").register(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
