"""The ``--progress/--no-progress`` option shared by the commands that draw tqdm bars on stderr.

Unset (``None``), tqdm decides: a bar is drawn only when stderr is a terminal, so files, pipes and
``docker logs`` get no ``\\r`` bar fragments; ``--progress`` or ``--no-progress`` forces it either way.
(A module whose name starts with ``_`` is no sub-command: ``app.cli`` does not register it.)"""

from __future__ import annotations

from typing import Any

import typer

PROGRESS_HELP = "Progress bar on stderr (default: when it is a terminal)."


def progress_option() -> Any:
    """The option's declaration (a fresh one per command): ``progress: bool | None = progress_option()``."""
    return typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP)
