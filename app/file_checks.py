"""Checks of a command's file arguments, made before any work."""

from __future__ import annotations

from pathlib import Path

import typer


def refuse_overwriting_input(input_path: Path, output: Path, option: str = "--output") -> None:
    """Exit 2 when ``output`` is ``input_path`` itself (the input would be lost) or a directory."""
    if output.exists() and input_path.exists() and output.resolve() == input_path.resolve():
        typer.echo(f"error: {option} {output} is the input file; it would be overwritten", err=True)
        raise typer.Exit(2)
    if output.is_dir():
        typer.echo(f"error: {option} {output} is a directory; give a file path", err=True)
        raise typer.Exit(2)
