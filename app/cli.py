"""The ``molfusion`` command line. Each sub-command lives in ``app/commands/<name>.py`` and exposes
``register(cli)``; this module only assembles them."""

from __future__ import annotations

import typer

from app.commands import embed

cli = typer.Typer(
    name="molfusion",
    help="Molecular property prediction from fused SMILES-transformer and graph-encoder embeddings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# One line per command module; keep this list the only place commands are wired in.
for module in (embed,):
    module.register(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
